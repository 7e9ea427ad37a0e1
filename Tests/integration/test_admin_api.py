"""The admin API (--admin): every endpoint against a real relay, its OpenAPI document checked
against the routes both ways, the admin key (missing, wrong, revoked), bad input (unknown
device, malformed JSON, oversized body: a clear 4xx and nothing changed), and changes that
take effect on the running relay before the call returns."""

from __future__ import annotations

import re
import threading
import time

import pytest
import requests

import relayproto as rp
from admin_helpers import Admin, endpoint
from conftest import free_port

pytestmark = pytest.mark.needs_relay

# Every operation this file exercises; it must equal the OpenAPI document's.
EXERCISED = {
    ("get", "/api/v1/openapi.json"), ("get", "/api/v1/summary"),
    ("get", "/api/v1/devices"), ("post", "/api/v1/devices"),
    ("get", "/api/v1/devices/{id}"), ("delete", "/api/v1/devices/{id}"),
    ("post", "/api/v1/devices/{id}/secret"),
    ("get", "/api/v1/devices/{id}/tokens"), ("post", "/api/v1/devices/{id}/tokens"),
    ("get", "/api/v1/tokens"), ("delete", "/api/v1/tokens/{tid}"),
    ("get", "/api/v1/sessions"), ("delete", "/api/v1/sessions/{sid}"),
    ("post", "/api/v1/sync"),
}
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def admin(relay):
    return Admin(relay)


def no_route(r: requests.Response) -> bool:
    return r.status_code == 404 and r.json().get("error", "").startswith("no such route")


def device_count(admin) -> int:
    return admin.ok("GET", "/api/v1/summary")["devices"]


def test_openapi_document_matches_the_routes(admin):
    r = requests.get(admin.url + "/api/v1/openapi.json", timeout=5)  # no key needed
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    documented = {(m, p) for p, item in doc["paths"].items() for m in item if m in METHODS}
    assert documented == EXERCISED, f"documented but not tested: {documented - EXERCISED}; " \
                                    f"tested but not documented: {EXERCISED - documented}"
    fill = {"{id}": "no-such-dev", "{tid}": "00000000000000aa", "{sid}": "0" * 32}
    for path, item in doc["paths"].items():
        concrete = path
        for k, v in fill.items():
            concrete = concrete.replace(k, v)
        for m in METHODS:
            resp = admin.req(m.upper(), concrete, json={} if m in ("post", "put", "patch") else None)
            if m in item:
                assert not no_route(resp), f"{m.upper()} {path} is documented but not routed"
                assert resp.status_code != 401
                for code in item[m]["responses"]:
                    assert re.fullmatch(r"[1-5]\d\d", code)
                assert str(resp.status_code) in item[m]["responses"], \
                    f"{m.upper()} {concrete}: {resp.status_code} not among the documented responses"
            else:
                assert no_route(resp), f"{m.upper()} {path} answers {resp.status_code} but is not documented"
    # Paths outside the document are not routed either.
    for extra in ("/api/v1", "/api/v2/devices", "/api/v1/devices/x/y/z", "/api/v1/admin"):
        assert no_route(admin.get(extra)), extra


def test_admin_key_required_and_checked(relay, admin):
    before = admin.ok("GET", "/api/v1/summary")["unauthorized_requests"]
    for key in (False, "", "rk_" + "0" * 64, admin.key + "x", admin.key[:-1]):
        r = admin.get("/api/v1/devices", key=key)
        assert r.status_code == 401, (key, r.text)
        assert r.headers.get("www-authenticate") == "Bearer"
        assert "admin key" in r.json()["error"]
    # A scheme other than Bearer is refused too.
    r = requests.get(admin.url + "/api/v1/devices", headers={"Authorization": f"Basic {admin.key}"}, timeout=5)
    assert r.status_code == 401
    assert admin.ok("GET", "/api/v1/summary")["unauthorized_requests"] == before + 6
    assert relay.metrics()("relay_admin_unauthorized_total") == before + 6
    assert "admin.unauthorized" in relay.stderr()
    assert admin.key not in relay.stderr()
    # The console page and the OpenAPI document need no key; the key is never in them.
    page = requests.get(admin.url + "/", timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    # The local key in admin.json works, and a revoked key stops working at once.
    local = Admin(relay, key=endpoint(relay)["key"])
    assert local.get("/api/v1/summary").status_code == 200
    keys = [l.split("\t") for l in relay.cli("admin-key", "list").stdout.splitlines()]
    mine = next(k for k in keys if k[1] == "tests")
    assert {k[3] for k in keys} == {"key", "local"}
    assert relay.cli("admin-key", "revoke", mine[0]).returncode == 0
    time.sleep(0.3)  # the hashes are re-read at most every 250 ms
    assert admin.get("/api/v1/summary").status_code == 401
    assert relay.cli("admin-key", "revoke", mine[0]).returncode != 0
    # The store holds the key's hash only.
    assert admin.key.encode() not in (relay.data / "relay.sqlite").read_bytes()


def test_provision_is_usable_when_the_call_returns(relay, admin, fake_devices):
    r = admin.post("/api/v1/devices", json={"id": "api-1"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] == "api-1" and re.fullmatch(r"[0-9a-f]{64}", body["secret"]) and body["created"]
    # At once: the relay answers for it (offline, not unknown) and its first datagram is taken.
    tok = admin.ok("POST", "/api/v1/devices/api-1/tokens", status=201)["token"]
    t = requests.get(relay.dev_url("api-1"), headers={"Authorization": f"Bearer {tok}"}, timeout=5)
    assert t.status_code == 503, t.text
    dev = rp.FakeDevice("api-1", body["secret"], relay.udp_addr)
    fake_devices.append(dev)
    dev.register(timeout=2)
    dev.notify_a()
    d = admin.wait_device("api-1", lambda d: d["online"], timeout=3)
    assert d["address"] == f"127.0.0.1:{dev.addr(0)[1]}"
    assert d["last_notify_a_age_s"] is not None and d["last_notify_a_age_s"] <= 2
    # The secret is shown once: nowhere else afterwards.
    assert body["secret"] not in admin.get("/api/v1/devices/api-1").text
    assert body["secret"] not in admin.get("/api/v1/devices").text


def test_bad_input_is_refused_and_changes_nothing(admin):
    admin.ok("POST", "/api/v1/devices", status=201, json={"id": "bad-1"})
    n = device_count(admin)
    cases = [
        (b"{not json", 400), (b"[1, 2]", 400), (b'"cam"', 400), (b"", 400), (b"{}", 400),
        (b'{"id": 7}', 400), (b'{"id": "Bad_ID"}', 400), (b'{"id": "-x"}', 400), (b'{"id": "bad-1"}', 409),
        (b'{"id": "' + b"a" * 70 + b'"}', 400),
        (b'{"id": "big", "pad": "' + b"x" * 40_000 + b'"}', 413),
    ]
    for data, status in cases:
        r = admin.post("/api/v1/devices", data=data, headers={"Content-Type": "application/json"})
        assert r.status_code == status, (data[:40], r.status_code, r.text)
        assert r.json()["error"], r.text
    assert device_count(admin) == n
    assert admin.get("/api/v1/devices/big").status_code == 404
    # Unknown device everywhere it is named.
    for method, path in [("GET", "/api/v1/devices/ghost"), ("DELETE", "/api/v1/devices/ghost"),
                         ("POST", "/api/v1/devices/ghost/secret"), ("GET", "/api/v1/devices/ghost/tokens"),
                         ("POST", "/api/v1/devices/ghost/tokens"), ("GET", "/api/v1/tokens?device=ghost")]:
        r = admin.req(method, path)
        assert r.status_code == 404 and "ghost" in r.json()["error"], (method, path, r.text)
    # Bad query values and bodies elsewhere.
    for q in ("limit=0", "limit=1001", "limit=x", "online=maybe"):
        assert admin.get(f"/api/v1/devices?{q}").status_code == 400, q
    for data in (b'{"ttl": "soon"}', b'{"ttl": 5}', b'{"ttl": "0s"}', b"{oops"):
        r = admin.post("/api/v1/devices/bad-1/tokens", data=data)
        assert r.status_code == 400, (data, r.text)
    assert admin.ok("GET", "/api/v1/devices/bad-1/tokens")["tokens"] == []
    assert admin.delete("/api/v1/tokens/not-a-tid").status_code == 400
    assert admin.delete("/api/v1/tokens/00000000000000aa").status_code == 404
    assert admin.delete("/api/v1/sessions/xyz").status_code == 400
    assert admin.delete("/api/v1/sessions/" + "0" * 32).status_code == 404
    assert device_count(admin) == n


def test_list_pages_filters_and_live_fields(relay, admin, fake_devices):
    secrets = {}
    for i in range(7):
        secrets[f"pg-{i}"] = admin.ok("POST", "/api/v1/devices", status=201, json={"id": f"pg-{i}"})["secret"]
    online = ["pg-1", "pg-4", "pg-6"]
    devs = {}
    for dev_id in online:
        d = rp.FakeDevice(dev_id, secrets[dev_id], relay.udp_addr, nsockets=2)
        fake_devices.append(d)
        d.register()
        d.notify_a()
        devs[dev_id] = d
    admin.wait_device("pg-6", lambda d: d["online"])
    # Pages of 3 by cursor, in ID order, every device once.
    seen, after, pages = [], None, 0
    while True:
        q = "/api/v1/devices?limit=3" + (f"&after={after}" if after else "")
        page = admin.ok("GET", q)
        pages += 1
        seen += [d["id"] for d in page["devices"]]
        assert len(page["devices"]) <= 3
        after = page["next"]
        if after is None:
            break
        assert pages < 10
    assert seen == [f"pg-{i}" for i in range(7)] and pages == 3
    for d in admin.ok("GET", "/api/v1/devices?limit=3")["devices"]:
        assert set(d) == {"id", "online", "last_notify_a_age_s", "address", "address_changes", "sessions",
                          "last_wake", "created", "offline_reason"}
    # Filters by online state, with paging inside the filter.
    on = admin.ok("GET", "/api/v1/devices?online=true")
    assert [d["id"] for d in on["devices"]] == online and on["next"] is None
    off = admin.ok("GET", "/api/v1/devices?online=false&limit=2")
    assert [d["id"] for d in off["devices"]] == ["pg-0", "pg-2"] and off["next"] == "pg-2"
    rest = admin.ok("GET", "/api/v1/devices?online=false&after=pg-2")
    assert [d["id"] for d in rest["devices"]] == ["pg-3", "pg-5"]
    off0 = next(d for d in off["devices"] if d["id"] == "pg-0")
    assert off0["address"] is None and off0["last_notify_a_age_s"] is None and off0["online"] is False
    assert "has not notified" in off0["offline_reason"]
    assert all(d["offline_reason"] is None for d in on["devices"])
    assert [d["id"] for d in admin.ok("GET", "/api/v1/devices?search=g-4")["devices"]] == ["pg-4"]
    # A NAT rebinding (notify from another port) is counted and kept in the address history.
    d4 = devs["pg-4"]
    d4.notify_a(sock=1)
    d = admin.wait_device("pg-4", lambda d: d["address_changes"] == 1)
    assert d["address"] == f"127.0.0.1:{d4.addr(1)[1]}"
    assert d["tracked"] is True and [a["address"] for a in d["address_history"]] == [d["address"]]
    s = admin.ok("GET", "/api/v1/summary")
    assert s["devices"] == 7 and s["online"] == 3 and s["never_notified"] == 4 and s["tracked"] >= 1


def test_remove_and_rotate_take_effect_at_once(relay, admin, fake_devices):
    sec = admin.ok("POST", "/api/v1/devices", status=201, json={"id": "rm-1"})["secret"]
    tok = admin.ok("POST", "/api/v1/devices/rm-1/tokens", status=201)["token"]
    hdr = {"Authorization": f"Bearer {tok}"}
    assert requests.get(relay.dev_url("rm-1"), headers=hdr, timeout=5).status_code == 503  # known, offline
    assert admin.ok("DELETE", "/api/v1/devices/rm-1") == {"removed": "rm-1"}
    r = requests.get(relay.dev_url("rm-1"), headers=hdr, timeout=5)
    # Gone from the core before the call returned (no wait for the store poll): its token no
    # longer verifies, answered like any device without a valid token (no device oracle).
    assert r.status_code == 401, r.text
    assert admin.delete("/api/v1/devices/rm-1").status_code == 404
    # Rotation: the old secret is refused, the new one registers, old tokens stop working.
    old = admin.ok("POST", "/api/v1/devices", status=201, json={"id": "rot-1"})["secret"]
    tok = admin.ok("POST", "/api/v1/devices/rot-1/tokens", status=201)["token"]
    new = admin.ok("POST", "/api/v1/devices/rot-1/secret")["secret"]
    assert new != old
    r = requests.get(relay.dev_url("rot-1"), headers={"Authorization": f"Bearer {tok}"}, timeout=5)
    assert r.status_code == 401, r.text
    stale = rp.FakeDevice("rot-1", old, relay.udp_addr)
    fake_devices.append(stale)
    with pytest.raises(Exception):
        stale.register(timeout=1)
    fresh = rp.FakeDevice("rot-1", new, relay.udp_addr)
    fake_devices.append(fresh)
    fresh.register(timeout=2)


def test_tokens_minted_listed_revoked(relay, admin):
    admin.ok("POST", "/api/v1/devices", status=201, json={"id": "tk-a"})
    m = admin.ok("POST", "/api/v1/devices/tk-a/tokens", status=201, json={"ttl": "1h"})
    assert rp.parse_token(m["token"]).device_id == "tk-a" and m["tid"] in m["token"]
    listed = admin.ok("GET", "/api/v1/devices/tk-a/tokens")["tokens"]
    assert [t["tid"] for t in listed] == [m["tid"]] and listed[0]["state"] == "valid"
    assert m["tid"] in [t["tid"] for t in admin.ok("GET", "/api/v1/tokens")["tokens"]]
    hdr = {"Authorization": f"Bearer {m['token']}"}
    assert requests.get(relay.dev_url("tk-a"), headers=hdr, timeout=5).status_code == 503  # valid, device offline
    assert admin.ok("DELETE", f"/api/v1/tokens/{m['tid']}") == {"revoked": [m["tid"]]}
    r = requests.get(relay.dev_url("tk-a"), headers=hdr, timeout=5)
    assert r.status_code == 401 and "revoked" in r.text  # at once, not after the next sync
    assert admin.ok("GET", "/api/v1/tokens?device=tk-a&all=true")["tokens"][0]["state"] == "revoked"
    # The CLI sees what the API did.
    assert m["tid"] in relay.cli("token", "list", "tk-a").stdout


@pytest.fixture
def waking_relay(relay_factory):
    return relay_factory("--wake-timeout", "3s")


def test_sessions_listed_and_ended_and_last_wake(waking_relay, fake_devices):
    relay = waking_relay
    admin = Admin(relay)
    sec = admin.ok("POST", "/api/v1/devices", status=201, json={"id": "ss-1"})["secret"]
    tok = admin.ok("POST", "/api/v1/devices/ss-1/tokens", status=201)["token"]
    dev = rp.FakeDevice("ss-1", sec, relay.udp_addr)
    fake_devices.append(dev)
    dev.register()
    dev.notify_a()
    admin.wait_device("ss-1", lambda d: d["online"])
    result = {}

    def terminal():
        try:
            result["r"] = requests.get(relay.dev_url("ss-1"), headers={"Authorization": f"Bearer {tok}"}, timeout=10)
        except requests.RequestException as e:
            result["e"] = e

    t = threading.Thread(target=terminal)
    t.start()
    dev.wait_connect_request()  # the wake is in flight; the device never calls back
    sessions = admin.ok("GET", "/api/v1/sessions")
    assert sessions["total"] == 1
    s = sessions["sessions"][0]
    assert s["device"] == "ss-1" and s["state"] == "waking" and re.fullmatch(r"[0-9a-f]{32}", s["id"])
    assert s["terminal"] and s["terminal"].startswith("127.0.0.1")
    assert admin.ok("GET", "/api/v1/sessions?device=ss-1")["total"] == 1
    assert admin.ok("GET", "/api/v1/sessions?device=other")["total"] == 0
    assert admin.device("ss-1")["sessions"] == 1
    assert [x["id"] for x in admin.device("ss-1")["session_list"]] == [s["id"]]
    assert admin.ok("DELETE", f"/api/v1/sessions/{s['id']}") == {"ended": s["id"]}
    t.join(10)
    assert not t.is_alive()
    assert "e" in result or result["r"].status_code >= 500  # its terminal was closed
    assert admin.ok("GET", "/api/v1/sessions")["total"] == 0
    assert admin.delete(f"/api/v1/sessions/{s['id']}").status_code == 404
    # A wake that times out is the device's last wake.
    r = requests.get(relay.dev_url("ss-1"), headers={"Authorization": f"Bearer {tok}"}, timeout=10)
    assert r.status_code == 504
    d = admin.device("ss-1")
    assert d["last_wake"]["outcome"] == "timeout" and d["last_wake"]["latency_ms"] >= 2900
    assert d["wakes"][0] == d["last_wake"]


def test_sync_applies_store_changes_now(relay, admin, fake_devices):
    """`relay device add` in another process, then POST /api/v1/sync (what the CLI does):
    the device is in the core when sync returns."""
    from conftest import run_cli
    r = run_cli(["device", "add", "sy-1", "--data", relay.data])
    assert r.returncode == 0
    secret = r.stdout.strip()
    # The CLI already asked the relay to sync; the device registers at once.
    dev = rp.FakeDevice("sy-1", secret, relay.udp_addr)
    fake_devices.append(dev)
    dev.register(timeout=0.5)
    assert admin.ok("POST", "/api/v1/sync")["seq"] >= 1


def test_admin_off_and_bad_address(relay_factory, workdir):
    r = relay_factory("--admin", "off")
    assert not (r.data / "admin.json").exists()
    assert "admin=" not in next(l for l in r.stderr().splitlines() if "relay.ready" in l)
    from conftest import run_cli
    bad = run_cli(["check-config", "--admin", "nowhere"])
    assert bad.returncode != 0 and "--admin" in bad.stderr
    port = free_port()
    fixed = relay_factory("--admin", f"127.0.0.1:{port}")
    assert endpoint(fixed)["url"] == f"http://127.0.0.1:{port}"
    assert f"admin=127.0.0.1:{port}" in fixed.stderr()
    fixed.stop()
    assert not (fixed.data / "admin.json").exists(), "admin.json stays after the relay stopped"


def test_admin_listener_uses_tls_with_the_relays_certificate(relay_factory, workdir):
    from test_tls import CA
    ca = CA(workdir, "admin-ca")
    cert, key = ca.issue("relay", "relay.test", dns=["relay.test", "localhost"], ips=["127.0.0.1"])
    relay = relay_factory("--https", f"127.0.0.1:{free_port()}", "--tls-cert", cert, "--tls-key", key)
    info = endpoint(relay)
    assert info["tls"] is True and info["url"].startswith("https://127.0.0.1:")
    r = relay.cli("admin-key", "create")
    key_text = r.stdout.strip()
    ok = requests.get(info["url"] + "/api/v1/summary", headers={"Authorization": f"Bearer {key_text}"},
                      verify=str(ca.path), timeout=10)
    assert ok.status_code == 200 and ok.json()["devices"] == 0
    with pytest.raises(requests.RequestException):
        requests.get(info["url"].replace("https://", "http://") + "/api/v1/summary", timeout=5)
    # The CLI does not speak TLS to it: it uses the store, as without a relay.
    relay.add_device("tls-1", wait=False)
    out = relay.cli("device", "list").stdout.splitlines()
    assert [l.split("\t")[0] for l in out] == ["tls-1"]


def test_admin_port_in_use_stops_the_relay_with_a_message(workdir):
    import socket
    import subprocess
    from conftest import relay_bin
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = subprocess.run([str(relay_bin()), "serve", "--data", str(workdir / "d"), "--http", "127.0.0.1:0",
                            "--udp", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--admin", f"127.0.0.1:{port}"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode != 0
    assert f"--admin 127.0.0.1:{port}" in p.stderr and "in use" in p.stderr, p.stderr[-2000:]
    assert "relay.ready" not in p.stderr
    assert not (workdir / "d" / "admin.json").exists()


def test_a_wake_that_binds_is_the_last_wake_with_its_latency(relay, admin, static_server, agent_factory):
    root, port, _ = static_server()
    (root / "index.html").write_text("<h1>woken</h1>")
    agent_factory(relay, "wk-1", port)
    r = requests.get(relay.dev_url("wk-1"), headers=relay.auth("wk-1"), timeout=10)
    assert r.status_code == 200 and "woken" in r.text
    d = admin.wait_device("wk-1", lambda d: d["last_wake"] is not None, timeout=5)
    w = d["last_wake"]
    assert w["outcome"] == "bound" and 0 < w["latency_ms"] < 5000, w
    assert d["online"] and d["wakes"][0] == w and d["tracked"] is True
    listed = next(x for x in admin.ok("GET", "/api/v1/devices")["devices"] if x["id"] == "wk-1")
    assert listed["last_wake"] == w
