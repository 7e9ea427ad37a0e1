#!/usr/bin/env python3
"""Admin API latency with many devices registered, and what listing costs the datagram path.

    python3 bench/admin_api_bench.py --relay-bin .build/release/relay --devices 100000

Provisions --devices devices straight into a new store (SQLite, one transaction: the keys are
derived from secrets this script keeps), starts `relay serve` on loopback, makes every
--online-every'th device online with one NOTIFY_A each, then times:

  - GET /api/v1/devices pages: the first, one in the middle (cursor), filtered by online
    state (which scans the store in chunks of 1000 and looks each chunk up in the core);
  - GET /api/v1/devices/{id} and GET /api/v1/summary (which reads every registry entry);
  - the loop thread's datagram path: PERIOD_REQUEST -> PERIOD_INFO round trips (the same
    recvmmsg, lookup, HMAC and send as a notify), idle and while other threads list devices
    back to back through the admin API.

Everything is on loopback; the relay is stopped at the end. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Tests" / "integration"))
import relayproto as rp  # noqa: E402
import requests  # noqa: E402


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def timed(session, url, headers, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = session.get(url, headers=headers, timeout=30)
        out.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, (url, r.status_code, r.text[:200])
    return out, r.json()


def lister(url: str, key: str) -> int:
    """Lists pages back to back until SIGINT; prints pages per second."""
    s = requests.Session()
    n, t0 = 0, time.monotonic()
    try:
        while True:
            s.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
            n += 1
    except KeyboardInterrupt:
        pass
    print(n / (time.monotonic() - t0))
    return 0


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--lister":
        return lister(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser()
    ap.add_argument("--relay-bin", default=".build/release/relay")
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--online-every", type=int, default=10)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--rtts", type=int, default=2000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="relay-admin-bench-"))
    data = work / "data"
    relay = [str(args.relay_bin)]
    r = subprocess.run(relay + ["admin-key", "create", "--data", str(data)], capture_output=True, text=True, check=True)
    key = r.stdout.strip()
    hdr = {"Authorization": f"Bearer {key}"}

    t0 = time.monotonic()
    secrets = [hashlib.sha256(b"bench %d" % i).digest() for i in range(args.devices)]
    db = sqlite3.connect(data / "relay.sqlite")
    seq = db.execute("SELECT value FROM meta WHERE name = 'seq'").fetchone()[0] + 1
    now = time.time()
    db.executemany("INSERT INTO devices (id, key, created_at, seq) VALUES (?, ?, ?, ?)",
                   ((f"dev-{i:07d}", rp.derive_key(s), now, seq) for i, s in enumerate(secrets)))
    db.execute("UPDATE meta SET value = ? WHERE name = 'seq'", (seq,))
    db.commit()
    db.close()
    print(f"provisioned {args.devices} devices in {time.monotonic() - t0:.1f} s")

    admin_port, http_port, tcp_port = free_port(), free_port(), free_port()
    udp_port = free_port(socket.SOCK_DGRAM)
    err = open(work / "relay.stderr", "wb")
    p = subprocess.Popen(relay + ["serve", "--data", str(data), "--admin", f"127.0.0.1:{admin_port}",
                                  "--http", f"127.0.0.1:{http_port}", "--udp", f"127.0.0.1:{udp_port}",
                                  "--tcp", f"127.0.0.1:{tcp_port}", "--capacity", str(max(args.devices * 2, 1000)),
                                  "--log-level", "warning"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{admin_port}"
        t0 = time.monotonic()
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{http_port}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert p.poll() is None and time.monotonic() - t0 < 120, (work / "relay.stderr").read_text()
            time.sleep(0.1)
        print(f"relay ready in {time.monotonic() - t0:.1f} s")

        # Online devices: one NOTIFY_A each from one socket (the epoch from one registration).
        probe = rp.FakeDevice("dev-0000001", secrets[1], ("127.0.0.1", udp_port))
        probe.register()
        epoch = probe.epoch
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        counter = int(time.time() * 1_000_000)
        online = list(range(0, args.devices, args.online_every))
        for n, i in enumerate(online):
            counter += 1
            sock.sendto(rp.notify(f"dev-{i:07d}", rp.derive_key(secrets[i]), epoch, counter, "A"), ("127.0.0.1", udp_port))
            if n % 500 == 499:
                time.sleep(0.005)  # stay within the receive buffer
        s = requests.Session()
        for _ in range(100):
            summary = s.get(base + "/api/v1/summary", headers=hdr, timeout=10).json()
            if summary["online"] >= len(online):
                break
            time.sleep(0.1)
        print(f"devices {summary['devices']}, online {summary['online']}")

        cases = [
            ("first page (limit=100)", "/api/v1/devices?limit=100"),
            (f"middle page (after=dev-{args.devices // 2:07d}, limit=100)",
             f"/api/v1/devices?limit=100&after=dev-{args.devices // 2:07d}"),
            ("first page of 1000 (limit=1000)", "/api/v1/devices?limit=1000"),
            ("online=true, limit=100", "/api/v1/devices?online=true&limit=100"),
            ("online=false, limit=100", "/api/v1/devices?online=false&limit=100"),
            ("online=true, limit=1000", "/api/v1/devices?online=true&limit=1000"),
            ("one device", "/api/v1/devices/dev-0000010"),
            ("summary (reads every entry)", "/api/v1/summary"),
        ]
        for name, path in cases:
            timed(s, base + path, hdr, 5)  # warm up
            ms, body = timed(s, base + path, hdr, args.requests)
            extra = f", scanned {body['scanned']}, returned {len(body['devices'])}" if "scanned" in body else ""
            print(f"GET {name}: p50 {pct(ms, 50):.2f} ms, p99 {pct(ms, 99):.2f} ms, max {max(ms):.2f} ms{extra}")

        def rtts(n):
            out = []
            for _ in range(n):
                t = time.perf_counter()
                probe.register(timeout=2)
                out.append((time.perf_counter() - t) * 1e6)
            return out

        idle = rtts(args.rtts)
        # Listers in other processes (not threads: Python's GIL would slow this one's timing).
        listers = [subprocess.Popen([sys.executable, __file__, "--lister", base + path, key],
                                    stdout=subprocess.PIPE, text=True)
                   for path in ("/api/v1/devices?online=true&limit=1000", "/api/v1/devices?limit=1000")]
        time.sleep(1.0)
        loaded = rtts(args.rtts)
        pages = 0.0
        for lp in listers:
            lp.send_signal(signal.SIGINT)
            out, _ = lp.communicate(timeout=30)
            pages += float(out.strip() or 0)
        s2 = s.get(base + "/api/v1/summary", headers=hdr, timeout=10).json()
        print(f"loop thread held by device page lookups: {s2['page_requests']} requests, "
              f"mean {s2['page_loop_us_total'] / max(1, s2['page_requests']):.0f} us, max {s2['page_loop_us_max']} us; "
              f"summary pass over {s2['devices']} entries {s2['summary_loop_us']} us in {s2['summary_chunks']} chunks")
        print(f"datagram round trip idle: p50 {pct(idle, 50):.0f} us, p99 {pct(idle, 99):.0f} us")
        print(f"datagram round trip while 2 processes list devices ({pages:.0f} pages of 1000/s): "
              f"p50 {pct(loaded, 50):.0f} us, p99 {pct(loaded, 99):.0f} us")
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
        err.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
