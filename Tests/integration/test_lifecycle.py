"""SIGTERM drains (sessions in flight finish, up to --drain-timeout, then exit 0),
/healthz and /readyz."""

import re
import signal
import socket
import threading
import time

import pytest
import requests

from helpers import wait_until

T = (5, 30)


def in_background(fn):
    """Runs fn in a thread; returns a dict that gets "result" or "error"."""
    out: dict = {}

    def run():
        try:
            out["result"] = fn()
        except Exception as e:  # noqa: BLE001 - the test inspects it
            out["error"] = e

    th = threading.Thread(target=run, daemon=True)
    th.start()
    out["thread"] = th
    return out


def refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except OSError:
        return True


def test_healthz_and_readyz(relay):
    r = requests.get(relay.url("/healthz"), timeout=5)
    assert (r.status_code, r.text) == (200, "ok\n")
    r = requests.get(relay.url("/readyz"), timeout=5)
    assert (r.status_code, r.text) == (200, "ready\n")


@pytest.mark.timeout(60)
def test_sigterm_lets_a_response_in_flight_finish(relay_factory, recording_server, agent_factory):
    relay = relay_factory("--drain-timeout", "10s")
    srv = recording_server()
    agent_factory(relay, "drain1", srv.port)
    slow = in_background(lambda: requests.get(relay.dev_url("drain1", "/slow?ms=1500&tag=inflight"),
                                              headers=relay.auth("drain1"), timeout=T))
    relay.wait_metric("relay_sessions_active", lambda v: v >= 1, timeout=5)
    time.sleep(0.2)  # the request is at the device
    t0 = time.monotonic()
    relay.proc.send_signal(signal.SIGTERM)
    # new terminals are refused at once while the old one is still served
    assert wait_until(lambda: refused(relay.host, relay.http_port), 3), "terminal port still accepting"
    assert relay.metrics()("relay_draining") == 1
    slow["thread"].join(10)
    assert "error" not in slow, slow.get("error")
    r = slow["result"]
    assert r.status_code == 200 and r.text.startswith("tag=inflight"), r.text
    assert relay.proc.wait(10) == 0, relay.stderr()
    # it exited as soon as the session was done, not at the deadline
    assert time.monotonic() - t0 < 8
    err = relay.stderr()
    assert "relay.draining" in err and re.search(r"sessions_cut=0 terminals_cut=0.*relay\.stopped", err), err


@pytest.mark.timeout(60)
def test_drain_deadline_ends_what_is_left(relay_factory, recording_server, agent_factory):
    relay = relay_factory("--drain-timeout", "1s")
    srv = recording_server()
    agent_factory(relay, "drain2", srv.port)
    slow = in_background(lambda: requests.get(relay.dev_url("drain2", "/slow?ms=8000&tag=late"),
                                              headers=relay.auth("drain2"), timeout=T))
    relay.wait_metric("relay_sessions_active", lambda v: v >= 1, timeout=5)
    time.sleep(0.2)
    t0 = time.monotonic()
    relay.proc.send_signal(signal.SIGTERM)
    assert relay.proc.wait(10) == 0, relay.stderr()
    elapsed = time.monotonic() - t0
    assert 0.9 < elapsed < 5, elapsed
    slow["thread"].join(10)
    assert "error" in slow, "the terminal was cut at the deadline, it cannot have had the response"
    assert re.search(r"sessions_cut=1 terminals_cut=1.*relay\.stopped", relay.stderr()), relay.stderr()


@pytest.mark.timeout(60)
def test_keepalive_connection_between_requests_is_closed_at_once(relay_factory, recording_server, agent_factory):
    relay = relay_factory("--drain-timeout", "20s")
    srv = recording_server()
    agent_factory(relay, "drain3", srv.port)
    tok = relay.token("drain3")
    s = socket.create_connection((relay.host, relay.http_port), timeout=10)
    try:
        s.sendall(f"GET /d/drain3/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, body = data.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
        while len(body) < length:
            body += s.recv(65536)
        assert head.startswith(b"HTTP/1.1 200")
        # the connection is bound and idle: SIGTERM closes it without waiting for the deadline
        t0 = time.monotonic()
        relay.proc.send_signal(signal.SIGTERM)
        s.settimeout(10)
        assert s.recv(1) == b""
        s.close()  # as a client does on the relay's FIN (the relay lingers for it)
        assert relay.proc.wait(10) == 0, relay.stderr()
        assert time.monotonic() - t0 < 5
    finally:
        s.close()


def test_second_signal_during_drain_is_harmless(relay_factory):
    relay = relay_factory("--drain-timeout", "5s")
    relay.proc.send_signal(signal.SIGTERM)
    relay.proc.send_signal(signal.SIGINT)
    assert relay.proc.wait(10) == 0, relay.stderr()


@pytest.mark.timeout(60)
def test_one_log_line_per_session_and_never_a_secret(relay_factory, recording_server, agent_factory):
    # At debug level, to see that even the most verbose logs carry no secret or token.
    relay = relay_factory("--log-level", "debug")
    srv = recording_server()
    agent = agent_factory(relay, "logs1", srv.port)
    secret = relay.devices["logs1"]
    tok = relay.token("logs1")
    for path in ("/a", "/b?relay_token=" + tok):
        requests.get(relay.dev_url("logs1", path), headers={"Authorization": f"Bearer {tok}"}, timeout=T)
    assert wait_until(lambda: relay.stderr().count("session.end") >= 2, 5), relay.stderr()
    relay.stop()
    agent.stop()
    err = relay.stderr()
    lines = [line for line in err.splitlines() if "session.end" in line]
    assert len(lines) == 2, lines
    for line in lines:
        for field in ("device=logs1", "duration_ms=", "bytes_to_device=", "bytes_to_terminal=", "outcome=relayed",
                      "status=200"):
            assert field in line, (field, line)
    for text in (err, agent.stderr()):
        assert secret not in text and tok not in text
        assert tok.split(".")[-1] not in text  # not even the token's MAC
    # nothing per packet: the notifies of the run left no line each
    assert err.count("notify") == 0, err


@pytest.mark.timeout(60)
def test_device_removed_ends_its_live_sessions_and_tokens(relay, recording_server, agent_factory):
    # Revocation of a device takes effect at once on a running relay: the session in flight
    # ends (no waiting for the device's slow answer), its token no longer opens anything,
    # and its notifies are dropped as unknown.
    srv = recording_server()
    agent_factory(relay, "gone9", srv.port)
    h = relay.auth("gone9")
    slow = in_background(lambda: requests.get(relay.dev_url("gone9", "/slow?ms=8000"), headers=h, timeout=T))
    relay.wait_metric("relay_sessions_active", lambda v: v >= 1, timeout=5)
    time.sleep(0.3)
    t0 = time.monotonic()
    assert relay.remove_device("gone9").returncode == 0
    slow["thread"].join(10)
    assert time.monotonic() - t0 < 4, "the session outlived the device's removal"
    assert "error" in slow or slow["result"].status_code >= 500, slow
    r = requests.get(relay.dev_url("gone9", "/"), headers=h, timeout=T)
    assert (r.status_code, r.text) == (401, "invalid token\n")  # as for any device it does not open
    before = relay.metrics()
    relay.wait_delta(before, "relay_datagrams_dropped_total", reason="unknown_device", timeout=40)
