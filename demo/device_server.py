#!/usr/bin/env python3
"""A sample device web server for the relay demo (standard library only).

One script plays any device: `--kind camera` or `--kind thermostat`. It serves
  /             the page (HTML)
  /style.css    its stylesheet
  /app.js       its script: polls api/status every second and updates the page
  /api/status   live JSON: uptime, a simulated reading, a request counter

Every URL in the page is relative, so it works both at the device's own origin
(http://ID.localhost:8080/) and under the relay's path routing (http://HOST:8080/d/ID/).
The script also writes on <body> what a headless browser test can check: data-css="ok"
once the stylesheet has applied, and data-updates="N" after N live updates.

Once listening it prints `device_server.ready port=N` (useful with --port 0).
"""

from __future__ import annotations

import argparse
import html
import json
import math
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# What each kind of device measures: label, unit, and a simulated value over time.
KINDS = {
    "camera": {
        "title": "Camera",
        "reading": "Motion",
        "unit": "%",
        "max": 100.0,
        # bursts of motion on a slow wave, with some noise
        "simulate": lambda t: max(0.0, min(100.0, 40 + 35 * math.sin(t / 4) + random.uniform(-8, 8))),
        "icon": '<svg viewBox="0 0 24 24" aria-hidden="true"><rect x="2" y="6" width="14" height="12" rx="2"/>'
                '<path d="M16 10l6-3v10l-6-3z"/></svg>',
    },
    "thermostat": {
        "title": "Thermostat",
        "reading": "Temperature",
        "unit": "\u00b0C",
        "max": 30.0,
        "simulate": lambda t: 21 + 1.5 * math.sin(t / 10) + random.uniform(-0.2, 0.2),
        "icon": '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M10 3a2 2 0 0 1 4 0v10.5a4.5 4.5 0 1 1-4 0z"/>'
                '</svg>',
    },
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{name} &middot; {title}</title>
<link rel="stylesheet" href="style.css">
<script src="app.js" defer></script>
</head>
<body data-css="pending" data-updates="0" data-kind="{kind}">
<div id="css-probe"></div>
<main class="card">
  <header>
    <span class="icon">{icon}</span>
    <div>
      <h1 id="device-name">{name}</h1>
      <p class="kind">{title}, reached through the relay</p>
    </div>
    <span id="state" class="state">connecting&hellip;</span>
  </header>
  <section class="reading">
    <span class="label">{reading}</span>
    <span class="value"><span id="reading">&ndash;</span> <small>{unit}</small></span>
    <div class="meter"><div id="meter" style="width:0%"></div></div>
  </section>
  <dl>
    <div><dt>Uptime</dt><dd id="uptime">&ndash;</dd></div>
    <div><dt>Requests served</dt><dd id="requests">&ndash;</dd></div>
    <div><dt>Live updates</dt><dd id="updates">0</dd></div>
  </dl>
  <footer>Page origin <code id="origin"></code></footer>
</main>
</body>
</html>
"""

STYLE = """\
:root { color-scheme: light; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
body { margin: 0; min-height: 100vh; display: grid; place-items: center;
       background: linear-gradient(135deg, #1e3a8a, #0f766e); color: #0f172a; }
/* Only this stylesheet gives the probe a 7px width: app.js reads it to prove the CSS applied. */
#css-probe { position: absolute; width: 7px; height: 1px; visibility: hidden; }
.card { width: min(560px, 92vw); background: #fff; border-radius: 18px; padding: 28px 32px;
        box-shadow: 0 20px 50px rgba(0, 0, 0, .35); }
header { display: flex; align-items: center; gap: 16px; }
.icon svg { width: 48px; height: 48px; fill: #0f766e; }
h1 { margin: 0; font-size: 1.6rem; }
.kind { margin: 2px 0 0; color: #64748b; }
.state { margin-left: auto; padding: 4px 12px; border-radius: 999px; font-size: .85rem;
         background: #e2e8f0; color: #475569; }
.state.live { background: #dcfce7; color: #166534; }
.state.lost { background: #fee2e2; color: #991b1b; }
.reading { margin: 26px 0 18px; }
.label { display: block; color: #64748b; text-transform: uppercase; letter-spacing: .08em; font-size: .8rem; }
.value { font-size: 3rem; font-weight: 700; font-variant-numeric: tabular-nums; }
.value small { font-size: 1.2rem; color: #64748b; font-weight: 500; }
.meter { height: 10px; border-radius: 5px; background: #e2e8f0; overflow: hidden; }
.meter div { height: 100%; background: linear-gradient(90deg, #14b8a6, #2563eb); transition: width .6s; }
dl { display: grid; grid-template-columns: repeat(3, 1fr); gap: 12px; margin: 0; }
dl div { background: #f1f5f9; border-radius: 10px; padding: 10px 12px; }
dt { font-size: .75rem; color: #64748b; }
dd { margin: 2px 0 0; font-weight: 600; font-variant-numeric: tabular-nums; }
footer { margin-top: 18px; font-size: .8rem; color: #94a3b8; }
"""

APP_JS = """\
"use strict";
// Proof for tests and curious humans: the stylesheet applied if the probe got its width.
const probe = document.getElementById("css-probe");
document.body.dataset.css = getComputedStyle(probe).width === "7px" ? "ok" : "missing";
document.getElementById("origin").textContent = location.origin + location.pathname;

const $ = (id) => document.getElementById(id);
let updates = 0;

function fmtUptime(s) {
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = Math.floor(s % 60);
  return (h ? h + "h " : "") + (h || m ? m + "m " : "") + sec + "s";
}

async function poll() {
  try {
    // Relative URL: resolves under /d/ID/ as well as at the device's own origin.
    const r = await fetch("api/status", { cache: "no-store", signal: AbortSignal.timeout(5000) });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const s = await r.json();
    updates += 1;
    $("reading").textContent = s.reading.toFixed(1);
    $("meter").style.width = Math.max(0, Math.min(100, 100 * s.reading / s.max)) + "%";
    $("uptime").textContent = fmtUptime(s.uptime);
    $("requests").textContent = s.requests;
    $("updates").textContent = updates;
    $("state").textContent = "live";
    $("state").className = "state live";
    document.body.dataset.updates = String(updates);
  } catch (e) {
    $("state").textContent = "unreachable";
    $("state").className = "state lost";
  }
  // Schedule after the answer, so a slow link never piles up requests.
  setTimeout(poll, 1000);
}
poll();
"""


class Device:
    """Shared state of one simulated device (handlers run in threads)."""

    def __init__(self, name: str, kind: str):
        self.name, self.kind, self.spec = name, kind, KINDS[kind]
        self.started = time.monotonic()
        self.requests = 0
        self.lock = threading.Lock()

    def count(self) -> int:
        with self.lock:
            self.requests += 1
            return self.requests

    def status(self) -> dict:
        t = time.monotonic() - self.started
        return {"name": self.name, "kind": self.kind, "uptime": round(t, 1),
                "reading": round(self.spec["simulate"](t), 2), "unit": self.spec["unit"],
                "max": self.spec["max"], "requests": self.requests, "time": time.time()}

    def page(self) -> str:
        s = self.spec
        return PAGE.format(name=html.escape(self.name), kind=self.kind, title=s["title"], icon=s["icon"],
                           reading=s["reading"], unit=s["unit"])


def make_handler(device: Device):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the relay can reuse its device link
        server_version = "demo-device/1"

        def do_GET(self):
            self.respond(send_body=True)

        def do_HEAD(self):
            self.respond(send_body=False)

        def respond(self, send_body: bool):
            device.count()
            path = self.path.split("?", 1)[0]
            if path == "/":
                self.send(200, "text/html; charset=utf-8", device.page().encode(), send_body)
            elif path == "/style.css":
                self.send(200, "text/css; charset=utf-8", STYLE.encode(), send_body)
            elif path == "/app.js":
                self.send(200, "text/javascript; charset=utf-8", APP_JS.encode(), send_body)
            elif path == "/api/status":
                body = json.dumps(device.status()).encode()
                self.send(200, "application/json", body, send_body)
            else:
                self.send(404, "text/plain; charset=utf-8", b"not found\n", send_body)

        def send(self, code: int, ctype: str, body: bytes, send_body: bool):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")  # always live, even after a demo restart
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, fmt, *args):  # quiet: one line per poll would drown the demo's logs
            pass

    return Handler


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="device")
    ap.add_argument("--kind", choices=sorted(KINDS), default="camera")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    args = ap.parse_args(argv)

    server = ThreadingHTTPServer((args.host, args.port), make_handler(Device(args.name, args.kind)))
    server.daemon_threads = True
    # SIGTERM ends serve_forever like Ctrl-C does, so the socket is closed cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"device_server.ready name={args.name} kind={args.kind} port={server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
