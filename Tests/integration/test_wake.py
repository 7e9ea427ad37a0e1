"""Wake-ups via a FakeDevice: anchors, address changes, relay sockets, retransmission, timeout [1, 3, 4, 7]."""

import time

import pytest
import requests

import relayproto as rp
from helpers import answer_wake, run_bg

T = (5, 30)


def get_bg(relay, dev_id, path="/", tok=None):
    tok = tok or relay.token(dev_id)
    return run_bg(requests.get, relay.dev_url(dev_id, path), headers={"Authorization": f"Bearer {tok}"}, timeout=T)


def test_wake_and_callback_basic(relay, fake_devices):
    dev = relay.fake_device("wake1")
    fake_devices.append(dev)
    assert dev.info.callback_port == relay.tcp_port
    assert dev.info.period == 300 and dev.info.keepalive == 25 and dev.info.flags == 0
    dev.notify_a()
    before = relay.metrics()
    fut = get_bg(relay, "wake1", "/some/where?x=1")
    cr = dev.wait_connect_request(0, timeout=5)
    assert cr.src == relay.udp_addr
    assert cr.callback_port in relay.callback_ports and cr.reserved == 0, (cr.callback_port, relay.callback_ports)
    assert len(cr.raw) == 56 + len("wake1")
    ans = answer_wake(dev, cr)
    r = fut.result(30)
    assert r.status_code == 200, r.text
    assert r.text == "fake-device GET /some/where?x=1"
    assert r.headers.get("X-Relay-Session") == cr.sid_hex
    assert ans.result(10) == (rp.STATUS_BOUND, 1)
    req = dev.requests[-1]
    assert req.header("Authorization") is None and req.header("X-Relay-Session") is None
    m = relay.metrics()
    assert m("relay_wakes_total", outcome="started") - before("relay_wakes_total", outcome="started") == 1
    assert m("relay_wakes_total", outcome="bound") - before("relay_wakes_total", outcome="bound") == 1
    assert m("relay_connection_requests_sent_total") - before("relay_connection_requests_sent_total") >= 1
    assert m("relay_relayed_bytes_total", direction="to_device") > before("relay_relayed_bytes_total", direction="to_device")
    assert m("relay_relayed_bytes_total", direction="to_terminal") > before("relay_relayed_bytes_total", direction="to_terminal")


@pytest.mark.parametrize("second_kind", ["A", "B"])
def test_connect_request_follows_address_change(relay, fake_devices, second_kind):
    dev = relay.fake_device("move1", nsockets=2)
    fake_devices.append(dev)
    dev.notify_a(sock=0)
    before = relay.metrics()
    time.sleep(0.2)
    dev.notify(second_kind, sock=1)  # NAT re-mapping: new public port
    relay.wait_delta(before, "relay_address_changes_total")
    fut = get_bg(relay, "move1", "/moved")
    cr = dev.wait_connect_request(1, timeout=5)
    assert cr.src == relay.udp_addr
    ans = answer_wake(dev, cr)
    r = fut.result(30)
    assert r.status_code == 200 and r.text == "fake-device GET /moved"
    assert ans.result(10)[0] == rp.STATUS_BOUND
    assert dev.drain(0, 0.3) == [], "the old address must not get the connection request"


def test_address_change_back_and_forth(relay, fake_devices):
    dev = relay.fake_device("move2", nsockets=2)
    fake_devices.append(dev)
    tok = relay.token("move2")
    for i, sock in enumerate([0, 1, 0]):
        dev.notify_a(sock=sock)
        time.sleep(0.2)
        fut = get_bg(relay, "move2", f"/r{i}", tok)
        cr = dev.wait_connect_request(sock, timeout=5)
        answer_wake(dev, cr)
        r = fut.result(30)
        assert r.status_code == 200 and r.text == f"fake-device GET /r{i}"
        assert dev.drain(1 - sock, 0.2) == []


def test_connect_request_comes_from_the_relay_socket_notified(relay_factory, fake_devices):
    relay = relay_factory("--wake-timeout", "5s", udp_count=2)
    dev = relay.fake_device("multi1")
    fake_devices.append(dev)
    tok = relay.token("multi1")
    for idx in [1, 0, 1]:
        before = relay.metrics()
        dev.notify_a(dest=(relay.host, relay.udp_ports[idx]))
        relay.wait_delta(before, "relay_notify_total", kind="a")
        fut = get_bg(relay, "multi1", f"/via{idx}", tok)
        cr = dev.wait_connect_request(0, timeout=5)
        assert cr.src == (relay.host, relay.udp_ports[idx]), (cr.src, relay.udp_ports)
        answer_wake(dev, cr)
        r = fut.result(30)
        assert r.status_code == 200 and r.text == f"fake-device GET /via{idx}"


def test_period_info_from_second_udp_listener(relay_factory, fake_devices):
    relay = relay_factory(udp_count=2)
    dev = rp.FakeDevice("multi2", relay.add_device("multi2"), (relay.host, relay.udp_ports[1]))
    fake_devices.append(dev)
    info = dev.register()
    assert info.callback_port == relay.tcp_port
    assert dev.received[-1][2][:2] == (relay.host, relay.udp_ports[1]), "answer must come from the socket asked"


def test_connect_request_retransmitted_until_callback(relay, fake_devices):
    dev = relay.fake_device("retx1")
    fake_devices.append(dev)
    dev.notify_a()
    before = relay.metrics()
    fut = get_bg(relay, "retx1", "/late")
    first = dev.wait_connect_request(0, timeout=5)  # ignored on purpose
    second = dev.wait_connect_request(0, timeout=3)
    assert second.session_id == first.session_id
    assert second.nonce == first.nonce
    assert second.received_at - first.received_at >= 0.05, "retransmission should back off (100 ms first)"
    ans = answer_wake(dev, second)
    r = fut.result(30)
    assert r.status_code == 200 and r.text == "fake-device GET /late"
    assert r.headers["X-Relay-Session"] == first.sid_hex
    assert ans.result(10)[0] == rp.STATUS_BOUND
    m = relay.metrics()
    assert m("relay_connection_requests_sent_total") - before("relay_connection_requests_sent_total") >= 2
    assert m("relay_wakes_total", outcome="started") - before("relay_wakes_total", outcome="started") == 1
    # once bound, retransmissions stop
    time.sleep(0.2)
    dev.drain(0, 0.1)
    assert dev.drain(0, 1.5) == [], "connection requests must stop after the callback"


def test_no_callback_gives_504(relay_factory, fake_devices):
    relay = relay_factory("--wake-timeout", "1s")
    dev = relay.fake_device("mute1")
    fake_devices.append(dev)
    dev.notify_a()
    tok = relay.token("mute1")
    before = relay.metrics()
    t0 = time.monotonic()
    fut = run_bg(requests.get, relay.dev_url("mute1", "/"), headers={"Authorization": f"Bearer {tok}"}, timeout=T)
    crs = []
    while time.monotonic() - t0 < 3:
        try:
            crs.append(dev.wait_connect_request(0, timeout=0.3))
        except TimeoutError:
            if fut.done():
                break
    r = fut.result(10)
    elapsed = time.monotonic() - t0
    assert r.status_code == 504, r.text
    assert 0.8 <= elapsed <= 4.0, f"504 after {elapsed:.2f}s with --wake-timeout 1s"
    assert len(crs) >= 2, "connection request should have been retransmitted within 1 s"
    assert len({c.session_id for c in crs}) == 1
    relay.wait_delta(before, "relay_wakes_total", outcome="timeout")
    # the expired session cannot be bound any more
    link, status = dev.callback(crs[0])
    link.close()
    assert status == rp.STATUS_UNKNOWN_SESSION, status
    assert relay.healthy()
