"""The relay's own answers: 400/401/403/404/503, and the fast liveness verdict [4, 5, 18, 21-23]."""

import time

import pytest
import requests

import relayproto as rp
from helpers import answer_wake, run_bg

T = (5, 30)


@pytest.fixture
def live(relay, fake_devices):
    """A fake device that registered and sent one NOTIFY_A (alive: default period 300 s)."""
    dev = relay.fake_device("live1")
    fake_devices.append(dev)
    before = relay.metrics()
    dev.notify_a()
    relay.wait_delta(before, "relay_notify_total", kind="a")
    return dev


def assert_no_wake(dev, duration=0.5):
    got = dev.drain(0, duration)
    assert got == [], f"device received datagrams although the request was refused: {got}"


def test_unknown_device_answers_like_a_known_one(relay, live):
    """Without a valid token an unknown device gets exactly what a known one gets (401, same
    body), so device IDs cannot be probed."""
    before = relay.metrics()
    for dev_id in ("ghost", "live1"):
        fake = f"{dev_id}.9999999999.0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAA"
        r = requests.get(relay.dev_url(dev_id, "/x"), headers={"Authorization": f"Bearer {fake}"}, timeout=T)
        assert (r.status_code, r.text) == (401, "invalid token\n"), (dev_id, r.text)
        assert "X-Relay-Session" not in r.headers
        h = {"Host": f"{dev_id}.localhost:{relay.http_port}", "Authorization": f"Bearer {fake}"}
        assert requests.get(relay.url("/x"), headers=h, timeout=T).status_code == 401
    relay.wait_delta(before, "relay_requests_refused_total", delta=4, reason="unauthorized")
    assert relay.metrics()("relay_requests_refused_total", reason="unknown") == before(
        "relay_requests_refused_total", reason="unknown")


def test_no_device_named_400(relay):
    before = relay.metrics()
    r = requests.get(relay.url("/not-a-device-path"), timeout=T)
    assert r.status_code == 400, r.text
    relay.wait_delta(before, "relay_requests_refused_total", reason="bad_request")


def test_no_token_401(relay, live):
    before = relay.metrics()
    r = requests.get(relay.dev_url("live1", "/"), timeout=T)
    assert r.status_code == 401, r.text
    relay.wait_delta(before, "relay_requests_refused_total", reason="unauthorized")
    assert_no_wake(live)


@pytest.mark.parametrize("kind", ["garbage", "empty", "bad_mac", "longer_expiry", "other_tid", "mac_extra_char"])
def test_bad_token_401(relay, live, kind):
    good = relay.token("live1")
    dev, exp, tid, mac = good.split(".")
    flip = "A" if mac[0] != "A" else "B"
    tok = {
        "garbage": "garbage",
        "empty": "",
        "bad_mac": f"{dev}.{exp}.{tid}.{flip}{mac[1:]}",
        "longer_expiry": f"{dev}.{int(exp) + 1000}.{tid}.{mac}",
        "other_tid": f"{dev}.{exp}.{'f' * 16 if tid != 'f' * 16 else '0' * 16}.{mac}",
        "mac_extra_char": f"{dev}.{exp}.{tid}.{mac}x",
    }[kind]
    r = requests.get(relay.dev_url("live1", "/"), headers={"Authorization": f"Bearer {tok}"}, timeout=T)
    assert r.status_code == 401, (kind, r.status_code, r.text)
    r = requests.get(relay.dev_url("live1", "/"), headers={"Cookie": f"relay_token={tok}"}, timeout=T)
    assert r.status_code == 401, (kind, "cookie", r.status_code)
    assert_no_wake(live)


def test_expired_token_401(relay, live):
    tok = relay.token("live1", ttl="1s")
    time.sleep(2.5)
    r = requests.get(relay.dev_url("live1", "/"), headers={"Authorization": f"Bearer {tok}"}, timeout=T)
    assert r.status_code == 401, r.text
    assert_no_wake(live)


def test_token_for_other_device_403(relay, live):
    relay.add_device("other1")
    tok = relay.token("other1")
    before = relay.metrics()
    r = requests.get(relay.dev_url("live1", "/"), headers={"Authorization": f"Bearer {tok}"}, timeout=T)
    assert r.status_code == 403, r.text
    relay.wait_delta(before, "relay_requests_refused_total", reason="forbidden")
    assert_no_wake(live)


def test_never_notified_503_fast(relay, fake_devices):
    dev = relay.fake_device("quiet1")  # registered (period request only): that changes no state
    fake_devices.append(dev)
    before = relay.metrics()
    r = requests.get(relay.dev_url("quiet1", "/"), headers=relay.auth("quiet1"), timeout=T)
    assert r.status_code == 503, r.text
    assert "offline" in r.text.lower()
    assert r.elapsed.total_seconds() < 1.5, "503 must be answered at once, not after a wake attempt"
    relay.wait_delta(before, "relay_requests_refused_total", reason="offline")
    m = relay.metrics()
    assert m("relay_wakes_total", outcome="started") == before("relay_wakes_total", outcome="started")
    assert m("relay_connection_requests_sent_total") == before("relay_connection_requests_sent_total")
    assert_no_wake(dev)


def test_offline_after_period_no_connect_request(relay_factory, fake_devices):
    relay = relay_factory("--period", "2", "--keepalive", "1", "--wake-timeout", "5s")
    dev = relay.fake_device("sleepy1")
    fake_devices.append(dev)
    assert dev.info.period == 2
    dev.notify_a()
    tok = relay.token("sleepy1")
    time.sleep(3.0)
    before = relay.metrics()
    r = requests.get(relay.dev_url("sleepy1", "/"), headers={"Authorization": f"Bearer {tok}"}, timeout=T)
    assert r.status_code == 503, r.text
    assert "offline" in r.text.lower()
    assert r.elapsed.total_seconds() < 1.5
    assert_no_wake(dev, 1.0)
    assert relay.metrics()("relay_connection_requests_sent_total") == before("relay_connection_requests_sent_total")


def test_notify_b_alone_does_not_keep_device_alive(relay_factory, fake_devices):
    relay = relay_factory("--period", "2", "--keepalive", "1", "--wake-timeout", "5s")
    dev = relay.fake_device("bonly1")
    fake_devices.append(dev)
    tok = relay.token("bonly1")
    before = relay.metrics()
    dev.notify_a()
    stop = dev.start_notifier("B", 0.5)
    try:
        time.sleep(3.0)
        m = relay.metrics()
        assert m("relay_notify_total", kind="b") - before("relay_notify_total", kind="b") >= 3
        r = requests.get(relay.dev_url("bonly1", "/"), headers={"Authorization": f"Bearer {tok}"}, timeout=T)
        assert r.status_code == 503, r.text
    finally:
        stop()
    assert_no_wake(dev, 0.5)


def test_notify_a_keeps_device_alive(relay_factory, fake_devices):
    relay = relay_factory("--period", "2", "--keepalive", "1", "--wake-timeout", "5s")
    dev = relay.fake_device("aonly1")
    fake_devices.append(dev)
    tok = relay.token("aonly1")
    stop = dev.start_notifier("A", 0.5)
    try:
        time.sleep(3.0)
        fut = run_bg(requests.get, relay.dev_url("aonly1", "/alive"),
                     headers={"Authorization": f"Bearer {tok}"}, timeout=T)
        cr = dev.wait_connect_request(0, timeout=5)
        ans = answer_wake(dev, cr)
        r = fut.result(30)
        assert r.status_code == 200, r.text
        assert r.text == "fake-device GET /alive"
        assert r.headers.get("X-Relay-Session") == cr.sid_hex
        assert ans.result(10) == (rp.STATUS_BOUND, 1)
    finally:
        stop()


def test_devices_alive_gauge(relay_factory, fake_devices):
    relay = relay_factory("--period", "2", "--keepalive", "1")
    dev = relay.fake_device("gauge1")
    fake_devices.append(dev)
    m0 = relay.metrics()
    dev.notify_a()
    relay.wait_metric("relay_devices_alive", lambda v: v == m0("relay_devices_alive") + 1, timeout=3)
    # no more NOTIFY_A: after the period it is no longer alive
    relay.wait_metric("relay_devices_alive", lambda v: v == m0("relay_devices_alive"), timeout=6)
