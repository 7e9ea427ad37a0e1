"""Abuse limits: per source address (open connections, new connections per second), per
device (sessions, wakes per minute), idle bound terminals, slowloris, and running out of file
descriptors. Each is configurable, counted in relay_limit_rejections_total, and answered
with a clear 429 (or a close, for idling)."""

import os
import resource
import signal
import socket
import threading
import time

import pytest
import requests

from conftest import Proc, relay_bin, hostport
from helpers import wait_until

T = (5, 30)


def connect(relay) -> socket.socket:
    s = socket.create_connection((relay.host, relay.http_port), timeout=5)
    s.settimeout(5)
    return s


def read_answer(s: socket.socket) -> bytes:
    data = b""
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            break
        except ConnectionResetError:
            if data:
                break  # the answer came, then the reset
            raise
        if not chunk:
            break
        data += chunk
    return data


def limit(relay, name: str) -> float:
    return relay.metrics()("relay_limit_rejections_total", limit=name)


def test_open_connections_per_source(relay_factory):
    relay = relay_factory("--max-conns-per-source", "5", "--conn-rate-per-source", "0")
    held = [connect(relay) for _ in range(5)]
    try:
        # wait until the relay has accepted all five (the listener backlog would hide a refusal)
        assert wait_until(lambda: relay.metrics()("relay_terminal_connections") >= 5, 5)
        extra = connect(relay)
        answer = read_answer(extra)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 429 Too Many Requests"), answer
        assert b"too many open connections from your address" in answer and b"Retry-After: 1" in answer
        assert limit(relay, "source_connections") == 1
        # one of the five goes: a new one is accepted again
        held.pop().close()
        assert wait_until(lambda: relay.metrics()("relay_terminal_connections") <= 4, 5)
        again = connect(relay)
        again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(again).startswith(b"HTTP/1.1 200")
        again.close()
    finally:
        for s in held:
            s.close()


def test_slowloris_holds_no_more_than_its_share(relay_factory):
    # Connections that trickle a head: one address gets its limit, no more, and each ends at
    # the header timeout; another address is served meanwhile.
    relay = relay_factory("--max-conns-per-source", "4", "--conn-rate-per-source", "0", "--header-timeout", "2s")
    slow = [connect(relay) for _ in range(4)]
    try:
        for s in slow:
            s.sendall(b"GET /d/x/ HTTP/1.1\r\nHost: ")
        assert wait_until(lambda: relay.metrics()("relay_terminal_connections") >= 4, 5)
        fifth = connect(relay)
        assert read_answer(fifth).startswith(b"HTTP/1.1 429")
        fifth.close()
        # a terminal from another loopback address is not affected
        other = socket.socket()
        other.settimeout(5)
        other.bind(("127.0.0.2", 0))
        other.connect((relay.host, relay.http_port))
        other.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(other).startswith(b"HTTP/1.1 200")
        other.close()
        # the trickling ones are cut at the header timeout
        for s in slow:
            assert read_answer(s).startswith(b"HTTP/1.1 408"), "slow head not ended"
    finally:
        for s in slow:
            s.close()


def test_new_connections_per_second_per_source(relay_factory):
    relay = relay_factory("--conn-rate-per-source", "10")
    codes = []
    t0 = time.monotonic()
    for _ in range(40):
        s = connect(relay)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            codes.append(read_answer(s)[:12])
        except ConnectionResetError:
            # refused at accept while the request was still arriving: the reset can
            # overtake the 429
            codes.append(b"HTTP/1.1 429")
        s.close()
    elapsed = time.monotonic() - t0
    refused = sum(1 for c in codes if c == b"HTTP/1.1 429")
    assert refused > 0, codes
    # at most 10 a second got through (fixed one-second windows)
    assert len(codes) - refused <= 10 * (int(elapsed) + 2), (elapsed, codes)
    assert limit(relay, "source_rate") == refused
    time.sleep(1.1)
    assert requests.get(relay.url("/healthz"), timeout=5).status_code == 200


@pytest.mark.timeout(60)
def test_sessions_per_device(relay_factory, recording_server, agent_factory):
    relay = relay_factory("--max-sessions-per-device", "2", "--idle-link", "0")
    srv = recording_server()
    agent_factory(relay, "lim1", srv.port)
    agent_factory(relay, "lim2", srv.port)
    h = relay.auth("lim1")
    results = {}

    def slow(i):
        results[i] = requests.get(relay.dev_url("lim1", f"/slow?ms=2000&tag={i}"), headers=h, timeout=T).status_code

    threads = [threading.Thread(target=slow, args=(i,), daemon=True) for i in range(2)]
    for th in threads:
        th.start()
    assert wait_until(lambda: relay.metrics()("relay_sessions_active") >= 2, 5)
    r = requests.get(relay.dev_url("lim1", "/third"), headers=h, timeout=T)
    assert r.status_code == 429 and "too many sessions" in r.text, r.text
    assert r.headers.get("Retry-After") == "1"
    # another device is not affected
    assert requests.get(relay.dev_url("lim2", "/x"), headers=relay.auth("lim2"), timeout=T).status_code == 200
    for th in threads:
        th.join(10)
    assert results == {0: 200, 1: 200}
    assert limit(relay, "device_sessions") == 1
    # the two sessions ended: the device takes new ones
    assert requests.get(relay.dev_url("lim1", "/after"), headers=h, timeout=T).status_code == 200


@pytest.mark.timeout(60)
def test_wakes_per_device_minute(relay_factory, recording_server, agent_factory):
    relay = relay_factory("--wakes-per-device-minute", "3", "--idle-link", "0")
    srv = recording_server()
    agent_factory(relay, "wk1", srv.port)
    agent_factory(relay, "wk2", srv.port)
    h = {**relay.auth("wk1"), "Connection": "close"}
    codes = [requests.get(relay.dev_url("wk1", f"/{i}"), headers=h, timeout=T).status_code for i in range(3)]
    assert codes == [200, 200, 200]
    before = relay.metrics()
    r = requests.get(relay.dev_url("wk1", "/4"), headers=h, timeout=T)
    assert r.status_code == 429 and "woken too often" in r.text, r.text
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    # refused from the counters alone: no connection request went out
    m = relay.metrics()
    assert m("relay_connection_requests_sent_total") == before("relay_connection_requests_sent_total")
    assert m("relay_limit_rejections_total", limit="device_wakes") == 1
    # the limit is per device
    assert requests.get(relay.dev_url("wk2", "/x"), headers=relay.auth("wk2"), timeout=T).status_code == 200


@pytest.mark.timeout(60)
def test_offline_device_hammered_sends_no_udp(relay, fake_devices):
    dev = relay.fake_device("off1", register=False)
    fake_devices.append(dev)
    before = relay.metrics()
    h = relay.auth("off1")
    for _ in range(50):
        assert requests.get(relay.dev_url("off1", "/"), headers=h, timeout=T).status_code == 503
    m = relay.metrics()
    assert m("relay_connection_requests_sent_total") == before("relay_connection_requests_sent_total")
    assert m("relay_requests_refused_total", reason="offline") - before("relay_requests_refused_total",
                                                                          reason="offline") == 50
    assert dev.recv(timeout=0.3) is None


@pytest.mark.timeout(60)
def test_idle_bound_terminal_is_closed(relay_factory, recording_server, agent_factory):
    relay = relay_factory("--idle-timeout", "1s")
    srv = recording_server()
    agent_factory(relay, "idle1", srv.port)
    tok = relay.token("idle1")
    s = connect(relay)
    try:
        s.sendall(f"GET /d/idle1/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\r\n".encode())
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        # a slow response keeps bytes moving only at its end: 1.5 s of silence is too long...
        t0 = time.monotonic()
        s.settimeout(10)
        rest = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        assert 0.8 < time.monotonic() - t0 < 4, "closed at the idle timeout, not before or much after"
        assert relay.metrics()("relay_limit_rejections_total", limit="idle_timeout") == 1
    finally:
        s.close()
    # ...while a request that is answered within the timeout is not cut
    r = requests.get(relay.dev_url("idle1", "/slow?ms=500"), headers=relay.auth("idle1"), timeout=T)
    assert r.status_code == 200


@pytest.mark.timeout(90)
def test_out_of_descriptors_pauses_accepting_and_recovers(workdir, cleanup):
    # A relay limited to 64 descriptors: terminals beyond that cannot be accepted. The relay
    # pauses its listener (no busy loop), counts it, and serves again once some close.
    soft = 64
    data = workdir / "data"
    ports = {k: 0 for k in ("http", "udp", "tcp", "metrics")}
    args = [relay_bin(), "serve", "--data", data, "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0",
            "--tcp", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--max-conns-per-source", "0",
            "--conn-rate-per-source", "0"]

    def limit_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, soft))

    p = Proc(args, workdir, "relay-fds", preexec_fn=limit_fds)
    cleanup.append(p.stop)
    line = wait_until(lambda: next((ln for ln in p.stderr().splitlines() if "relay.ready" in ln), None), 30)
    assert line, p.describe()
    for field in line.split():
        k, _, v = field.partition("=")
        if k in ports:
            ports[k] = int(v.rsplit(":", 1)[1])

    def metric(name):
        text = requests.get(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=5).text
        return float(next(ln.split()[-1] for ln in text.splitlines() if ln.startswith(name + " ")))

    held = []
    try:
        for _ in range(soft + 20):
            s = socket.socket()
            s.settimeout(2)
            s.connect(("127.0.0.1", ports["http"]))  # completes in the kernel backlog
            held.append(s)
        # the relay hit its limit (its /metrics is out of descriptors too): paused, not spinning
        time.sleep(1)
        cpu0 = float(open(f"/proc/{p.p.pid}/stat").read().rsplit(")", 1)[1].split()[11])
        time.sleep(2)
        cpu1 = float(open(f"/proc/{p.p.pid}/stat").read().rsplit(")", 1)[1].split()[11])
        ticks = cpu1 - cpu0
        assert ticks < 0.5 * 2 * 100, f"relay spun on accept: {ticks} ticks of user CPU in 2 s"
        # and it kept a reserve below the limit (16 of 64) for its runtime and its store
        open_fds = len(os.listdir(f"/proc/{p.p.pid}/fd"))
        assert open_fds <= soft - 12, f"{open_fds} descriptors open of {soft}: no reserve left"
    finally:
        for s in held:
            s.close()
    # descriptors free again: it accepts and answers
    def healthy():
        try:
            return requests.get(f"http://127.0.0.1:{ports['http']}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    assert wait_until(healthy, 10), p.describe()
    assert metric("relay_accept_paused_total") >= 1
    assert p.stop() == 0
