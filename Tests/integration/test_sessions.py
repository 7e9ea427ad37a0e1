"""Parallel sessions without mixing, and reuse of an idle device link by session ID [3, 9, 17]."""

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from urllib.parse import urlsplit

import relayproto as rp
from helpers import SID_RE, http_request_bytes, raw_request

T = (5, 30)


def slow_handler(req: rp.LinkRequest):
    time.sleep(0.5)
    return 200, [], f"{req.session_id} {req.target}".encode()


def test_parallel_sessions_fake_device(relay, fake_devices):
    dev = relay.fake_device("par1")
    fake_devices.append(dev)
    dev.notify_a()
    dev.start_responder(slow_handler)
    tok = relay.token("par1")
    h = {"Authorization": f"Bearer {tok}"}
    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], relay.metrics()("relay_sessions_active"))
            time.sleep(0.05)

    base = relay.metrics()("relay_sessions_active")
    w = threading.Thread(target=watch, daemon=True)
    w.start()
    with ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(requests.get, relay.dev_url("par1", f"/p{i}"), headers=h, timeout=T) for i in range(4)]
        rs = [f.result(30) for f in futs]
    stop.set()
    w.join(2)
    sids = []
    for i, r in enumerate(rs):
        assert r.status_code == 200, r.text
        sid = r.headers.get("X-Relay-Session", "")
        assert SID_RE.match(sid)
        # the body names the link (session) that served it: it must be this response's session
        assert r.text == f"{sid} /p{i}", (i, sid, r.text)
        sids.append(sid)
    assert len(set(sids)) == 4
    assert dev.links_opened == 4
    assert peak[0] - base >= 2, f"sessions were not concurrent (peak {peak[0]}, base {base})"


def test_parallel_sessions_real_agent(relay, recording_server, agent_factory):
    srv = recording_server()
    agent_factory(relay, "par2", srv.port)
    h = relay.auth("par2")
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(requests.get, relay.dev_url("par2", f"/slow?ms=1000&tag=t{i}"), headers=h, timeout=T)
                for i in range(4)]
        rs = [f.result(30) for f in futs]
    elapsed = time.monotonic() - t0
    for i, r in enumerate(rs):
        assert r.status_code == 200, r.text
        assert r.text == f"tag=t{i} path=/slow?ms=1000&tag=t{i}"
    assert len({r.headers["X-Relay-Session"] for r in rs}) == 4
    assert elapsed < 3.5, f"4 x 1 s requests took {elapsed:.1f}s: not carried in parallel"


@pytest.fixture
def reuse_relay(relay_factory):
    return relay_factory("--wake-timeout", "5s", "--idle-link", "30s")


class Fetched:
    def __init__(self, msg):
        self.status_code = msg.status
        self.content = msg.body
        self.text = msg.body.decode("utf-8", "replace")
        self.headers = requests.structures.CaseInsensitiveDict(msg.headers)

    def json(self):
        return json.loads(self.content)


def fetch(url, headers=None):
    """GET on a fresh connection that is closed as soon as the response is read. (requests
    keeps the socket of a finished response open while the Response object lives, and a link
    bound to an open terminal connection is rightly not idle.)"""
    u = urlsplit(url)
    msg, s, _ = raw_request(u.hostname, u.port, http_request_bytes(
        "GET", u.path + (f"?{u.query}" if u.query else ""), u.netloc, headers or {}))
    s.close()
    assert msg is not None, "connection closed without a response"
    return Fetched(msg)


def first_request(relay, dev, path="/one"):
    r = fetch(relay.dev_url(dev.device_id, path), headers=relay.auth(dev.device_id))
    assert r.status_code == 200, r.text
    sid = r.headers["X-Relay-Session"]
    return sid


def test_session_reuse_on_new_connection(reuse_relay, fake_devices):
    relay = reuse_relay
    dev = relay.fake_device("reuse1")
    fake_devices.append(dev)
    dev.notify_a()
    dev.start_responder(keep_alive=True)
    sid = first_request(relay, dev)
    assert dev.links_opened == 1
    time.sleep(0.5)
    before = relay.metrics()
    tok = relay.token("reuse1")
    req = http_request_bytes("GET", "/d/reuse1/two", f"127.0.0.1:{relay.http_port}",
                             {"Authorization": f"Bearer {tok}", "X-Relay-Session": sid})
    msg, s, _ = raw_request(relay.host, relay.http_port, req)
    s.close()
    assert msg.status == 200, msg
    assert msg.body == b"fake-device GET /two"
    assert msg.header("X-Relay-Session") == sid
    relay.wait_delta(before, "relay_sessions_reused_total")
    m = relay.metrics()
    assert m("relay_wakes_total", outcome="started") == before("relay_wakes_total", outcome="started")
    assert m("relay_connection_requests_sent_total") == before("relay_connection_requests_sent_total")
    assert dev.links_opened == 1
    one, two = dev.requests[-2], dev.requests[-1]
    assert (one.target, two.target) == ("/one", "/two")
    assert one.link_no == two.link_no, "the second request must travel on the same device link"
    assert two.header("X-Relay-Session") is None and two.header("Authorization") is None


def test_session_reuse_with_requests_library(reuse_relay, fake_devices):
    relay = reuse_relay
    dev = relay.fake_device("reuse2")
    fake_devices.append(dev)
    dev.notify_a()
    dev.start_responder(keep_alive=True)
    sid = first_request(relay, dev)
    time.sleep(0.3)
    before = relay.metrics()
    outcome = []
    for i in range(4):
        h = relay.auth("reuse2")
        h["X-Relay-Session"] = sid
        r = fetch(relay.dev_url("reuse2", f"/again{i}"), headers=h)
        assert r.status_code == 200 and r.text == f"fake-device GET /again{i}"
        outcome.append(r.headers["X-Relay-Session"] == sid)
        time.sleep(0.2)
    m = relay.metrics()
    assert outcome == [True] * 4, (
        f"reuse of idle session per attempt: {outcome}; reused +{m('relay_sessions_reused_total') - before('relay_sessions_reused_total')}, "
        f"wakes +{m('relay_wakes_total', outcome='started') - before('relay_wakes_total', outcome='started')}")
    assert m("relay_wakes_total", outcome="started") == before("relay_wakes_total", outcome="started")


def test_unknown_session_header_gets_new_session(reuse_relay, fake_devices):
    relay = reuse_relay
    dev = relay.fake_device("reuse3")
    fake_devices.append(dev)
    dev.notify_a()
    dev.start_responder(keep_alive=True)
    bogus = os.urandom(16).hex()
    before = relay.metrics()
    h = relay.auth("reuse3")
    h["X-Relay-Session"] = bogus
    r = requests.get(relay.dev_url("reuse3", "/x"), headers=h, timeout=T)
    assert r.status_code == 200 and r.text == "fake-device GET /x"
    assert r.headers["X-Relay-Session"] != bogus
    relay.wait_delta(before, "relay_wakes_total", outcome="started")
    assert relay.metrics()("relay_sessions_reused_total") == before("relay_sessions_reused_total")


def test_session_of_one_device_not_reused_for_another(reuse_relay, fake_devices):
    relay = reuse_relay
    a = relay.fake_device("reusea")
    b = relay.fake_device("reuseb")
    fake_devices.extend([a, b])
    a.notify_a()
    b.notify_a()
    a.start_responder(keep_alive=True)
    b.start_responder(keep_alive=True)
    sid_a = first_request(relay, a)
    time.sleep(0.3)
    n_a = len(a.requests)
    h = relay.auth("reuseb")
    h["X-Relay-Session"] = sid_a
    r = requests.get(relay.dev_url("reuseb", "/mine"), headers=h, timeout=T)
    assert r.status_code == 200 and r.text == "fake-device GET /mine"
    assert r.headers["X-Relay-Session"] != sid_a
    assert len(a.requests) == n_a, "device A's link carried device B's request"
    assert b.requests and b.requests[-1].target == "/mine"


def test_session_reuse_needs_a_valid_token(reuse_relay, fake_devices):
    relay = reuse_relay
    dev = relay.fake_device("reuse4")
    fake_devices.append(dev)
    dev.notify_a()
    dev.start_responder(keep_alive=True)
    sid = first_request(relay, dev)
    time.sleep(0.3)
    n = len(dev.requests)
    r = requests.get(relay.dev_url("reuse4", "/steal"), headers={"X-Relay-Session": sid}, timeout=T)
    assert r.status_code == 401
    assert len(dev.requests) == n


def test_sessions_active_returns_to_baseline(relay_factory, fake_devices):
    relay = relay_factory("--wake-timeout", "5s", "--idle-link", "1s")
    dev = relay.fake_device("gone1")
    fake_devices.append(dev)
    dev.notify_a()
    dev.start_responder(keep_alive=True)
    base = relay.metrics()("relay_sessions_active")
    first_request(relay, dev)
    # the idle link is kept about 1 s, then closed
    relay.wait_metric("relay_sessions_active", lambda v: v == base, timeout=6)


def test_max_sessions_refuses_with_503(relay_factory, fake_devices):
    relay = relay_factory("--wake-timeout", "5s", "--max-sessions", "1", "--idle-link", "1s")
    dev = relay.fake_device("cap1")
    fake_devices.append(dev)
    dev.notify_a()

    def slow(req):
        time.sleep(1.5)
        return 200, [], b"slow"

    dev.start_responder(slow)
    h = relay.auth("cap1")
    before = relay.metrics()
    with ThreadPoolExecutor(2) as ex:
        f1 = ex.submit(requests.get, relay.dev_url("cap1", "/1"), headers=h, timeout=T)
        time.sleep(0.5)
        f2 = ex.submit(requests.get, relay.dev_url("cap1", "/2"), headers=h, timeout=T)
        r1, r2 = f1.result(30), f2.result(30)
    assert r1.status_code == 200 and r1.text == "slow"
    assert r2.status_code == 503, r2.text
    relay.wait_delta(before, "relay_requests_refused_total", reason="capacity")


def test_session_reuse_through_real_agent(reuse_relay, recording_server, agent_factory):
    """Same as above through `relay agent` and an HTTP/1.1 keep-alive device server."""
    relay = reuse_relay
    srv = recording_server()
    agent_factory(relay, "reuse5", srv.port)
    tok = relay.token("reuse5")
    r = fetch(relay.dev_url("reuse5", "/one"), headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200
    sid = r.headers["X-Relay-Session"]
    time.sleep(0.5)
    before = relay.metrics()
    req = http_request_bytes("GET", "/d/reuse5/two", f"127.0.0.1:{relay.http_port}",
                             {"Authorization": f"Bearer {tok}", "X-Relay-Session": sid})
    msg, s, _ = raw_request(relay.host, relay.http_port, req)
    s.close()
    assert msg.status == 200 and json.loads(msg.body)["path"] == "/two"
    m = relay.metrics()
    assert msg.header("X-Relay-Session") == sid, (
        f"idle link not reused: reused +{m('relay_sessions_reused_total') - before('relay_sessions_reused_total')}, "
        f"wakes +{m('relay_wakes_total', outcome='started') - before('relay_wakes_total', outcome='started')}")
    assert m("relay_sessions_reused_total") - before("relay_sessions_reused_total") == 1
    assert len({r["conn"] for r in srv.requests}) == 1, "both requests should reach the device server on one link"
