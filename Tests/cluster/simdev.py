"""Simulated devices for the cluster test: many agents in one process, one UDP socket (so one
NAT mapping) each, written from docs/PROTOCOL.md with relayproto.py's encoders.

Each device registers (PERIOD_REQUEST with the CONNECT_REQUEST_TO capability), notifies as
PERIOD_INFO says (NOTIFY_A every period / 2, NOTIFY_B every keepalive, a confirming NOTIFY_B
3 s after a NOTIFY_ACK_MOVED), follows RESYNC (new epoch, NOTIFY_A at once, period again),
starts over after 3 notifies without an answer, and answers CONNECT_REQUEST and
CONNECT_REQUEST_TO by calling back (to the address the latter names) and serving
"sim <id> <path>" on the link. One thread runs every socket and timer; each callback gets a
thread of its own.

    ip netns exec NS python3 simdev.py SPEC.json STATS.json

SPEC: {"devices": [{"id": ..., "secret": ..., "relay": [host, port]}, ...]}. Prints
"registered N" once every device has a PERIOD_INFO, then runs until SIGTERM, when it writes
its counters (per device: registrations, resyncs, connect requests, callbacks bound) to STATS.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
import relayproto as rp  # noqa: E402

MAX_LIFETIME = 900.0  # the process ends itself after this, whatever happens to the test


class Dev:
    def __init__(self, spec: dict, index: int):
        self.id = spec["id"]
        self.key = rp.derive_key(spec["secret"])
        self.relay = (spec["relay"][0], int(spec["relay"][1]))
        self.index = index
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.setblocking(False)
        self.counter = 0
        self.epoch = None
        self.nonce = None
        self.keepalive = 25
        self.period = 300
        self.unacked = 0
        self.gen = 0  # bumps on every (re)registration: stale timers are ignored
        self.seen: set = set()
        self.stats = {"registrations": 0, "resyncs": 0, "connect_requests": 0, "connect_to": 0,
                      "bound": 0, "callback_errors": 0, "relay_lost": 0}

    def next_counter(self) -> int:
        self.counter = max(int(time.time() * 1_000_000), self.counter + 1)
        return self.counter

    def send(self, data: bytes):
        try:
            self.sock.sendto(data, self.relay)
        except OSError:
            pass  # no route while a link is down: the timers try again


class Engine:
    def __init__(self, specs: list):
        self.devs = [Dev(s, i) for i, s in enumerate(specs)]
        self.sel = selectors.DefaultSelector()
        for d in self.devs:
            self.sel.register(d.sock, selectors.EVENT_READ, d)
        self.timers: list = []  # (when, seq, dev index, kind, gen)
        self.seq = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.announced = False

    def at(self, delay: float, d: Dev, kind: str):
        self.seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self.seq, d.index, kind, d.gen))

    # ---- registration and notifies
    def register(self, d: Dev, wait: float = 1.0):
        d.gen += 1
        d.nonce = os.urandom(8)
        req, _ = rp.period_request(d.id, d.key, d.nonce, d.next_counter(), caps=rp.CAP_CONNECT_TO)
        d.send(req)
        self.at(wait, d, f"preq:{min(wait * 2, 4.0)}")

    def notify(self, d: Dev, kind: str):
        if d.epoch is None:
            return
        d.send(rp.notify(d.id, d.key, d.epoch, d.next_counter(), kind))
        d.unacked += 1
        if d.unacked >= 3:  # three in a row unanswered: the relay is lost, start over
            d.stats["relay_lost"] += 1
            d.epoch = None
            d.unacked = 0
            self.register(d)

    def fire(self, d: Dev, kind: str):
        if kind.startswith("preq:"):
            if d.epoch is None:
                self.register(d, float(kind[5:]))
        elif kind == "A":
            self.notify(d, "A")
            self.at(d.period / 2, d, "A")
        elif kind == "B":
            self.notify(d, "B")
            self.at(d.keepalive, d, "B")
        elif kind == "confirm":
            self.notify(d, "B")

    def on_datagram(self, d: Dev, data: bytes):
        try:
            g = rp.decode(data, d.key)
        except rp.ProtocolError:
            return
        if g.dtype == rp.PERIOD_INFO and d.nonce is not None:
            try:
                info = rp.parse_period_info(data, d.key, d.nonce)
            except rp.ProtocolError:
                return
            first = d.epoch is None
            d.nonce = None
            d.epoch = info.epoch
            d.keepalive = max(1, info.keepalive)
            d.period = max(2, info.period)
            d.unacked = 0
            d.stats["registrations"] += 1
            if first:
                d.gen += 1  # one set of notify timers per registration
                self.notify(d, "A")
                # devices that registered together keep their own phase, as a real fleet's do
                # (else every one of them notifies at the same instant, and a failover finds
                # them all on the same side of their next notify)
                self.at(random.uniform(0.1, d.keepalive), d, "B")
                self.at(random.uniform(1.0, d.period / 2), d, "A")
        elif g.dtype in (rp.NOTIFY_ACK, rp.NOTIFY_ACK_MOVED):
            d.unacked = 0
            if g.dtype == rp.NOTIFY_ACK_MOVED and d.keepalive > 3:
                self.at(3.0, d, "confirm")
        elif g.dtype == rp.RESYNC:
            rs = rp.parse_resync(data, d.key)
            if rs.epoch != d.epoch:
                d.stats["resyncs"] += 1
                d.epoch = rs.epoch
                d.unacked = 0
                self.notify(d, "A")
                d.nonce = os.urandom(8)
                req, _ = rp.period_request(d.id, d.key, d.nonce, d.next_counter(), caps=rp.CAP_CONNECT_TO)
                d.send(req)
        elif g.dtype in (rp.CONNECT_REQUEST, rp.CONNECT_REQUEST_TO):
            cr = rp.parse_connect_request(data, d.key)
            if cr.session_id in d.seen:
                return
            if len(d.seen) > 4096:
                d.seen.clear()
            d.seen.add(cr.session_id)
            d.stats["connect_to" if cr.callback_host else "connect_requests"] += 1
            threading.Thread(target=self.callback, args=(d, cr), daemon=True).start()

    def callback(self, d: Dev, cr):
        host = cr.callback_host or d.relay[0]
        try:
            s = socket.create_connection((host, cr.callback_port), timeout=5)
        except OSError:
            with self.lock:
                d.stats["callback_errors"] += 1
            return
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(rp.hello(d.id, cr.session_id, rp.callback_proof(d.key, cr.session_id, cr.nonce)))
            if rp.read_status(s, 5) != rp.STATUS_BOUND:
                with self.lock:
                    d.stats["callback_errors"] += 1
                return
            with self.lock:
                d.stats["bound"] += 1
            s.settimeout(30)
            reader = rp.StreamReader(s)
            for _ in range(1000):
                msg = rp.read_http_message(reader)
                if msg is None:
                    break
                body = f"sim {d.id} {msg.target}\n".encode()
                close = (msg.header("connection") or "").lower() == "close"
                s.sendall(rp.build_response(200, body, [("X-Sim-Device", d.id)], keep_alive=not close))
                if close:
                    break
        except (OSError, rp.ProtocolError):
            pass
        finally:
            s.close()

    def run(self, stats_path: str):
        for d in self.devs:
            self.register(d)
        end = time.monotonic() + MAX_LIFETIME
        while not self.stop.is_set() and time.monotonic() < end:
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, i, kind, gen = heapq.heappop(self.timers)
                d = self.devs[i]
                if gen == d.gen:
                    self.fire(d, kind)
            wait = min(0.5, max(0.0, self.timers[0][0] - now)) if self.timers else 0.5
            for key, _ in self.sel.select(wait):
                d = key.data
                for _ in range(64):
                    try:
                        data, _addr = d.sock.recvfrom(2048)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    self.on_datagram(d, data)
            if not self.announced and all(x.epoch is not None for x in self.devs):
                self.announced = True
                print(f"registered {len(self.devs)}", flush=True)
        with self.lock:
            out = {d.id: dict(d.stats) for d in self.devs}
        Path(stats_path).write_text(json.dumps(out))


def main():
    spec = json.loads(Path(sys.argv[1]).read_text())
    eng = Engine(spec["devices"])
    signal.signal(signal.SIGTERM, lambda *_: eng.stop.set())
    signal.signal(signal.SIGINT, lambda *_: eng.stop.set())
    eng.run(sys.argv[2])


if __name__ == "__main__":
    main()
