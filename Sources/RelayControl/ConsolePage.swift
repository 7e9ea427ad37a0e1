/// The console served by the admin listener at `/` (and `/console`): one self-contained page
/// (HTML, CSS and JavaScript, no build step, nothing from a CDN) over the admin API. The admin
/// key is typed once and kept in sessionStorage (gone with the tab), sent as a Bearer header;
/// no cookie is set. A link `…/#key=KEY` logs in the same way (the fragment is never sent and
/// is dropped from the address bar). Every value from the API is written with textContent.
enum ConsolePage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>relay console</title>
<style>
  :root { --fg:#1d2330; --muted:#667085; --line:#e4e7ec; --bg:#f7f8fa; --ok:#12813b; --bad:#b42318; --accent:#2859c5; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--fg); background:var(--bg); }
  header { display:flex; align-items:center; gap:24px; padding:12px 20px; background:#fff; border-bottom:1px solid var(--line); }
  header h1 { font-size:16px; margin:0; }
  .stat { color:var(--muted); } .stat b { color:var(--fg); font-size:16px; }
  main { display:grid; grid-template-columns: minmax(0,3fr) minmax(300px,2fr); gap:16px; padding:16px 20px; }
  section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
  h2 { font-size:14px; margin:0 0 8px; }
  table { width:100%; border-collapse:collapse; }
  th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); white-space:nowrap; }
  th { color:var(--muted); font-weight:600; font-size:12px; text-transform:uppercase; letter-spacing:.03em; }
  tbody tr { cursor:pointer; } tbody tr:hover { background:#f2f5fb; } tr.selected { background:#e8eefc; }
  .pill { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; }
  .online { background:#dcfae6; color:var(--ok); } .offline { background:#fee4e2; color:var(--bad); }
  .toolbar { display:flex; gap:8px; margin-bottom:10px; flex-wrap:wrap; }
  input, select, button { font:inherit; padding:5px 8px; border:1px solid var(--line); border-radius:6px; background:#fff; }
  button { cursor:pointer; } button.primary { background:var(--accent); color:#fff; border-color:var(--accent); }
  button.danger { color:var(--bad); }
  .muted { color:var(--muted); } .mono { font-family: ui-monospace, Menlo, monospace; font-size:12px; }
  .secret { word-break:break-all; background:#fffaeb; border:1px solid #fedf89; padding:6px 8px; border-radius:6px; margin-top:6px; }
  dl { display:grid; grid-template-columns: 140px 1fr; margin:0; gap:4px 8px; } dt { color:var(--muted); }
  ul { margin:4px 0 10px; padding-left:18px; }
  #login { max-width:420px; margin:80px auto; }
  #error { color:var(--bad); min-height:1.4em; }
  [hidden] { display:none !important; }
</style>
</head>
<body>
<section id="login" hidden>
  <h2>relay console</h2>
  <p class="muted">Log in with an admin key (<span class="mono">relay admin-key create</span>). It is kept in this tab only.</p>
  <form id="login-form">
    <input id="key" type="password" placeholder="rk_…" autocomplete="off" style="width:100%">
    <p><button class="primary" id="login-btn" type="submit">Log in</button></p>
  </form>
  <div id="login-error" class="muted"></div>
</section>
<div id="app" hidden>
  <header>
    <h1>relay console</h1>
    <span class="stat">online <b id="sum-online">–</b> / <b id="sum-devices">–</b> devices</span>
    <span class="stat">sessions <b id="sum-sessions">–</b></span>
    <span class="stat muted" id="updated"></span>
    <span style="flex:1"></span>
    <button id="logout">Log out</button>
  </header>
  <main>
    <section>
      <div class="toolbar">
        <input id="search" placeholder="Search IDs">
        <select id="filter"><option value="">all</option><option value="true">online</option><option value="false">offline</option></select>
        <span style="flex:1"></span>
        <input id="new-id" placeholder="new device ID">
        <button id="add-btn" class="primary">Add device</button>
      </div>
      <div id="add-result"></div>
      <table id="devices">
        <thead><tr><th>ID</th><th>Status</th><th>Last seen</th><th>Address</th><th>Moves</th><th>Sessions</th><th>Last wake</th></tr></thead>
        <tbody></tbody>
      </table>
      <p class="toolbar"><button id="first-page">First page</button><button id="next-page">Next page</button><span id="page-info" class="muted"></span></p>
      <div id="error"></div>
    </section>
    <section id="detail">
      <p class="muted" id="detail-empty">Select a device.</p>
      <div id="detail-body" hidden>
        <h2 id="d-id"></h2>
        <dl>
          <dt>Status</dt><dd><span id="d-status" class="pill"></span> <span id="d-why" class="muted"></span></dd>
          <dt>Last seen</dt><dd id="d-seen"></dd>
          <dt>Address</dt><dd id="d-address" class="mono"></dd>
          <dt>Address changes</dt><dd id="d-moves"></dd>
          <dt>Created</dt><dd id="d-created"></dd>
        </dl>
        <h2 style="margin-top:12px">Address history</h2><ul id="d-history"></ul>
        <h2>Last wakes</h2><ul id="d-wakes"></ul>
        <h2>Sessions</h2><ul id="d-sessions"></ul>
        <h2>Tokens</h2><ul id="d-tokens"></ul>
        <div class="toolbar">
          <select id="ttl"><option>1h</option><option selected>24h</option><option>7d</option></select>
          <button id="mint-btn" class="primary">Mint token</button>
          <span style="flex:1"></span>
          <button id="remove-btn" class="danger">Remove device</button>
        </div>
        <div id="mint-result"></div>
      </div>
    </section>
  </main>
</div>
<script>
"use strict";
const KEY = "relayAdminKey";
let cursor = null, nextCursor = null, selected = null, timer = null;
const $ = (id) => document.getElementById(id);

async function api(method, path, body) {
  const headers = { "Authorization": "Bearer " + sessionStorage.getItem(KEY) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  if (r.status === 401) { logout("That key was refused."); throw new Error("unauthorized"); }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
  return data;
}

function age(s) {
  if (s === null || s === undefined) return "never";
  if (s < 120) return s + "s ago";
  if (s < 7200) return Math.floor(s / 60) + "m ago";
  if (s < 172800) return Math.floor(s / 3600) + "h ago";
  return Math.floor(s / 86400) + "d ago";
}
function wakeText(w) { return w ? (w.outcome + " " + w.latency_ms.toFixed(1) + " ms, " + new Date(w.at).toLocaleTimeString()) : "–"; }
function cell(tr, text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); return td; }
function pill(el, online) { el.textContent = online ? "online" : "offline"; el.className = "pill " + (online ? "online" : "offline"); }
function li(list, text, button) {
  const item = document.createElement("li"); item.textContent = text;
  if (button) { const b = document.createElement("button"); b.textContent = button.label; b.className = "danger"; b.style.marginLeft = "8px"; b.onclick = button.onclick; item.appendChild(b); }
  list.appendChild(item);
}

async function refresh() {
  try {
    const s = await api("GET", "/api/v1/summary");
    $("sum-online").textContent = s.online; $("sum-devices").textContent = s.devices; $("sum-sessions").textContent = s.sessions;
    let q = "/api/v1/devices?limit=50";
    if ($("filter").value) q += "&online=" + $("filter").value;
    if ($("search").value) q += "&search=" + encodeURIComponent($("search").value);
    if (cursor) q += "&after=" + encodeURIComponent(cursor);
    const page = await api("GET", q);
    nextCursor = page.next;
    const body = $("devices").tBodies[0];
    body.textContent = "";
    for (const d of page.devices) {
      const tr = document.createElement("tr");
      tr.dataset.id = d.id;
      if (d.id === selected) tr.className = "selected";
      cell(tr, d.id, "mono");
      const p = cell(tr, "").appendChild(document.createElement("span"));
      pill(p, d.online); if (d.offline_reason) p.title = d.offline_reason;
      cell(tr, age(d.last_notify_a_age_s)); cell(tr, d.address || "–", "mono");
      cell(tr, String(d.address_changes)); cell(tr, String(d.sessions)); cell(tr, wakeText(d.last_wake));
      tr.onclick = () => { selected = d.id; refresh(); };
      body.appendChild(tr);
    }
    $("page-info").textContent = page.devices.length + " shown" + (page.next ? ", more follow" : "");
    $("next-page").disabled = !page.next;
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    $("error").textContent = "";
    if (selected) await showDetail(selected);
  } catch (e) { if (e.message !== "unauthorized") $("error").textContent = e.message; }
}

async function showDetail(id) {
  let d;
  try { d = await api("GET", "/api/v1/devices/" + encodeURIComponent(id)); }
  catch (e) { selected = null; $("detail-body").hidden = true; $("detail-empty").hidden = false; return; }
  $("detail-empty").hidden = true; $("detail-body").hidden = false;
  $("d-id").textContent = d.id; pill($("d-status"), d.online); $("d-why").textContent = d.offline_reason || "";
  $("d-seen").textContent = age(d.last_notify_a_age_s); $("d-address").textContent = d.address || "–";
  $("d-moves").textContent = String(d.address_changes); $("d-created").textContent = new Date(d.created).toLocaleString();
  const h = $("d-history"); h.textContent = "";
  for (const a of d.address_history) li(h, new Date(a.at).toLocaleTimeString() + " → " + a.address);
  if (!d.address_history.length) li(h, "no change seen");
  const w = $("d-wakes"); w.textContent = "";
  for (const x of d.wakes) li(w, wakeText(x));
  if (!d.wakes.length) li(w, "none recorded");
  const s = $("d-sessions"); s.textContent = "";
  for (const x of d.session_list) li(s, x.state + " " + x.id.slice(0, 8) + "… " + Math.round(x.age_ms / 1000) + "s" + (x.terminal ? " from " + x.terminal : ""),
    { label: "End", onclick: async () => { await api("DELETE", "/api/v1/sessions/" + x.id); refresh(); } });
  if (!d.session_list.length) li(s, "none");
  const t = $("d-tokens"); t.textContent = "";
  for (const x of d.tokens) li(t, x.tid + " " + x.state + ", expires " + new Date(x.expires).toLocaleString(),
    x.state === "valid" ? { label: "Revoke", onclick: async () => { await api("DELETE", "/api/v1/tokens/" + x.tid); refresh(); } } : null);
  if (!d.tokens.length) li(t, "none");
}

function showSecret(target, label, value) {
  target.textContent = "";
  const div = document.createElement("div"); div.className = "secret mono";
  div.textContent = label + value; target.appendChild(div);
}

$("mint-btn").onclick = async () => {
  try { const r = await api("POST", "/api/v1/devices/" + encodeURIComponent(selected) + "/tokens", { ttl: $("ttl").value });
        showSecret($("mint-result"), "token (shown once): ", r.token); refresh(); }
  catch (e) { $("mint-result").textContent = e.message; }
};
$("remove-btn").onclick = async () => {
  if (!confirm("Remove device " + selected + "? Its agent and tokens stop working.")) return;
  try { await api("DELETE", "/api/v1/devices/" + encodeURIComponent(selected)); selected = null; $("mint-result").textContent = ""; refresh(); }
  catch (e) { $("error").textContent = e.message; }
};
$("add-btn").onclick = async () => {
  try { const r = await api("POST", "/api/v1/devices", { id: $("new-id").value.trim() });
        showSecret($("add-result"), r.id + " secret (shown once): ", r.secret); $("new-id").value = ""; selected = r.id; refresh(); }
  catch (e) { $("add-result").textContent = e.message; }
};
$("search").oninput = () => { cursor = null; refresh(); };
$("filter").onchange = () => { cursor = null; refresh(); };
$("next-page").onclick = () => { cursor = nextCursor; refresh(); };
$("first-page").onclick = () => { cursor = null; refresh(); };
$("logout").onclick = () => logout("");

function logout(message) {
  sessionStorage.removeItem(KEY);
  if (timer) clearInterval(timer); timer = null;
  $("app").hidden = true; $("login").hidden = false; $("login-error").textContent = message;
}
function start() {
  $("login").hidden = true; $("app").hidden = false;
  refresh(); timer = setInterval(refresh, 1000);
}
$("login-form").onsubmit = async (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY, $("key").value.trim());
  $("key").value = "";
  try { await api("GET", "/api/v1/summary"); start(); } catch (e) { if (e.message !== "unauthorized") $("login-error").textContent = e.message; }
};
// A login link (http://ADMIN/#key=KEY): the fragment never reaches a server; it is moved to
// sessionStorage and dropped from the address bar and history.
const fromLink = location.hash.match(/^#key=([A-Za-z0-9_]+)$/);
if (fromLink) { sessionStorage.setItem(KEY, fromLink[1]); history.replaceState(null, "", location.pathname); }
if (sessionStorage.getItem(KEY)) start(); else $("login").hidden = false;
</script>
</body>
</html>
"""#
}
