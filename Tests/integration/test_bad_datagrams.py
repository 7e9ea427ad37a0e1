"""Hostile and broken datagrams: each is dropped and counted, nothing is amplified, and the
registry never moves to an unverified source [1, 4, 8, 21-23]."""

import os
import random
import time

import pytest
import requests

import relayproto as rp
from helpers import answer_wake, run_bg

T = (5, 30)


@pytest.fixture
def anchored(relay, fake_devices):
    """Device 'bd1' with two sockets, anchored at socket 0 by one NOTIFY_A."""
    dev = relay.fake_device("bd1", nsockets=2)
    fake_devices.append(dev)
    before = relay.metrics()
    dev.notify_a(sock=0)
    relay.wait_delta(before, "relay_notify_total", kind="a")
    return dev


def wake_lands_on(relay, dev, sock, path="/probe"):
    """Makes a terminal request and checks the connection request reaches socket `sock` only."""
    fut = run_bg(requests.get, relay.dev_url(dev.device_id, path), headers=relay.auth(dev.device_id), timeout=T)
    cr = dev.wait_connect_request(sock, timeout=5)
    ans = answer_wake(dev, cr)
    r = fut.result(30)
    assert r.status_code == 200, r.text
    ans.result(10)
    for other in range(len(dev.socks)):
        if other != sock:
            got = dev.drain(other, 0.2)
            assert not any(d[0][2] == rp.CONNECT_REQUEST for d in got if len(d[0]) > 3), \
                f"connection request went to socket {other}"


def no_reply(dev, sock=0, duration=0.5):
    got = dev.drain(sock, duration)
    assert got == [], f"relay replied to a bad datagram: {got}"


def n(dev_id="bd1"):
    return len(dev_id)


MALFORMED = {
    "truncated": lambda d: d[:-1],
    "oversized": lambda d: d + b"\x00",
    "way_oversized": lambda d: d + os.urandom(1200),
    "wrong_magic": lambda d: b"X" + d[1:],
    "wrong_version": lambda d: d[:1] + b"\x03" + d[2:],
    "version_zero": lambda d: d[:1] + b"\x00" + d[2:],
    "unknown_type": lambda d: d[:2] + b"\x09" + d[3:],
    "type_zero": lambda d: d[:2] + b"\x00" + d[3:],
    "id_len_zero": lambda d: d[:3] + b"\x00" + d[4:],
    "id_len_64": lambda d: d[:3] + b"\x40" + d[4:],
    "id_len_255": lambda d: d[:3] + b"\xff" + d[4:],
    "id_len_mismatch": lambda d: d[:3] + bytes([d[3] + 2]) + d[4:],
    "header_only": lambda d: d[:4],
    "one_byte": lambda d: b"R",
    "notify_with_period_request_length": lambda d: d + bytes(12),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_dropped_and_counted(relay, anchored, kind):
    dev = anchored
    good = rp.notify(dev.device_id, dev.key, dev.epoch, dev.next_counter(), "A")
    before = relay.metrics()
    dev.send_raw(MALFORMED[kind](good), sock=1)
    relay.wait_delta(before, "relay_datagrams_dropped_total", reason="malformed")
    no_reply(dev, 1)
    m = relay.metrics()
    assert m("relay_notify_total", kind="a") == before("relay_notify_total", kind="a")
    assert m("relay_address_changes_total") == before("relay_address_changes_total")
    wake_lands_on(relay, dev, 0)


def test_relay_to_device_types_sent_to_relay_get_no_reply(relay, anchored):
    dev = anchored
    k, i = dev.key, dev.device_id
    for d in [rp.period_info(i, k, os.urandom(8), dev.epoch, 1, 1, 1),
              rp.resync(i, k, 1, dev.epoch),
              rp.connect_request(i, k, os.urandom(16), os.urandom(16), 1)]:
        dev.send_raw(d, sock=1)
    no_reply(dev, 1, 0.7)
    assert relay.healthy()
    wake_lands_on(relay, dev, 0)


def test_unknown_device_counted(relay, anchored):
    dev = anchored
    before = relay.metrics()
    key = rp.derive_key(os.urandom(32))
    dev.send_raw(rp.notify("nobody", key, dev.epoch, 1, "A"), sock=1)
    relay.wait_delta(before, "relay_datagrams_dropped_total", reason="unknown_device")
    req, nonce = rp.period_request("nobody", key)
    dev.send_raw(req, sock=1)
    # the one unauthenticated answer: a REJECT echoing the nonce, the same for a bad tag
    got = dev.drain(1, 0.7)
    assert len(got) == 1 and rp.parse_reject(got[0][0]) == nonce and len(got[0][0]) == len(req), got


def test_bad_tag_counted_and_not_accepted(relay, fake_devices):
    dev = relay.fake_device("forge1")  # never notified: offline
    fake_devices.append(dev)
    wrong = rp.derive_key(os.urandom(32))
    before = relay.metrics()
    dev.notify_a(key=wrong)
    relay.wait_delta(before, "relay_datagrams_dropped_total", reason="bad_auth")
    no_reply(dev)
    # a corrupted tag (one bit) is as bad
    good = bytearray(rp.notify(dev.device_id, dev.key, dev.epoch, dev.next_counter(), "A"))
    good[-1] ^= 0x01
    dev.send_raw(bytes(good))
    relay.wait_delta(before, "relay_datagrams_dropped_total", 2, reason="bad_auth")
    assert relay.metrics()("relay_notify_total", kind="a") == before("relay_notify_total", kind="a")
    r = requests.get(relay.dev_url("forge1", "/"), headers=relay.auth("forge1"), timeout=T)
    assert r.status_code == 503, "a forged NOTIFY_A must not make the device alive"
    no_reply(dev)


def test_forged_notify_b_from_other_address_does_not_move_anchor(relay, anchored):
    dev = anchored
    before = relay.metrics()
    dev.notify_b(sock=1, key=rp.derive_key(os.urandom(32)))
    relay.wait_delta(before, "relay_datagrams_dropped_total", reason="bad_auth")
    assert relay.metrics()("relay_address_changes_total") == before("relay_address_changes_total")
    wake_lands_on(relay, dev, 0)


def test_replayed_notify_counted_and_anchor_kept(relay, anchored):
    dev = anchored
    time.sleep(0.1)
    captured = dev.notify_a(sock=0)
    time.sleep(0.2)
    before = relay.metrics()
    dev.send_raw(captured, sock=0)  # same bytes again
    relay.wait_delta(before, "relay_datagrams_dropped_total", 1, reason="replay")
    dev.send_raw(captured, sock=1)  # captured and replayed from elsewhere
    relay.wait_delta(before, "relay_datagrams_dropped_total", 2, reason="replay")
    # an older counter, correctly signed
    dev.notify_a(sock=1, counter=dev.counter - 10)
    relay.wait_delta(before, "relay_datagrams_dropped_total", 3, reason="replay")
    m = relay.metrics()
    assert m("relay_notify_total", kind="a") == before("relay_notify_total", kind="a")
    assert m("relay_address_changes_total") == before("relay_address_changes_total")
    no_reply(dev, 1)
    wake_lands_on(relay, dev, 0)


def test_replayed_notify_b_from_other_address_rejected(relay, anchored):
    dev = anchored
    captured = dev.notify_b(sock=0)  # counter c1
    time.sleep(0.1)
    dev.notify_a(sock=0)  # counter c2 > c1, accepted
    time.sleep(0.2)
    before = relay.metrics()
    dev.send_raw(captured, sock=1)  # c1 <= last accepted: a replay, wherever it comes from
    relay.wait_delta(before, "relay_datagrams_dropped_total", reason="replay")
    assert relay.metrics()("relay_address_changes_total") == before("relay_address_changes_total")
    wake_lands_on(relay, dev, 0)


def test_stale_epoch_gets_resync_and_no_state(relay, anchored):
    dev = anchored
    before = relay.metrics()
    counter = dev.next_counter()
    stale = dev.notify_a(sock=1, epoch=(dev.epoch + 1) & 0xFFFFFFFF, counter=counter)
    got = dev.drain(1, 1.0)
    assert len(got) == 1, f"expected exactly one RESYNC, got {got}"
    data, src = got[0]
    assert src == relay.udp_addr
    assert len(data) <= len(stale), "RESYNC must not be larger than the notify"
    rs = rp.parse_resync(data, dev.key)
    assert rs.counter == counter and rs.epoch == dev.epoch
    relay.wait_delta(before, "relay_datagrams_dropped_total", reason="stale_epoch")
    m = relay.metrics()
    assert m("relay_address_changes_total") == before("relay_address_changes_total")
    assert m("relay_notify_total", kind="a") == before("relay_notify_total", kind="a")
    # a stale epoch with a bad tag gets nothing at all
    dev.notify_a(sock=1, epoch=(dev.epoch + 1) & 0xFFFFFFFF, key=rp.derive_key(os.urandom(32)))
    no_reply(dev, 1)
    wake_lands_on(relay, dev, 0)


def test_period_request_answered_no_larger_and_changes_nothing(relay, fake_devices):
    dev = rp.FakeDevice("pr1", relay.add_device("pr1"), relay.udp_addr)
    fake_devices.append(dev)
    before = relay.metrics()
    req, nonce = rp.period_request("pr1", dev.key)
    dev.send_raw(req)
    got = dev.drain(0, 1.0)
    assert len(got) == 1, got
    data, src = got[0]
    assert src == relay.udp_addr and len(data) <= len(req)
    info = rp.parse_period_info(data, dev.key, nonce)
    assert (info.period, info.keepalive, info.callback_port, info.flags) == (300, 25, relay.tcp_port, 0)
    relay.wait_delta(before, "relay_period_requests_total")
    # the request changed no state: still offline, no anchor
    r = requests.get(relay.dev_url("pr1", "/"), headers=relay.auth("pr1"), timeout=T)
    assert r.status_code == 503
    # the epoch is stable while the relay runs
    assert dev.register().epoch == info.epoch


def test_period_request_bad_tag_gets_only_a_reject(relay, fake_devices):
    dev = rp.FakeDevice("pr2", relay.add_device("pr2"), relay.udp_addr)
    fake_devices.append(dev)
    before = relay.metrics()
    req, nonce = rp.period_request("pr2", rp.derive_key(os.urandom(32)))
    dev.send_raw(req)
    got = dev.drain(0, 1.5)
    assert [rp.parse_reject(d) for d, _ in got] == [nonce], "as for an unknown device: nothing tells them apart"
    relay.wait_delta(before, "relay_datagrams_dropped_total", reason="bad_auth")
    assert relay.metrics()("relay_rejects_sent_total") == before("relay_rejects_sent_total") + 1
    good, _ = rp.period_request("pr2", dev.key)
    dev.send_raw(good[:-1])  # truncated: malformed
    dev.send_raw(good[:20])
    no_reply(dev, 0, 1.0)
    assert dev.register().callback_port == relay.tcp_port


def test_random_garbage_no_replies_and_relay_keeps_serving(relay, anchored):
    dev = anchored
    rnd = random.Random(1234)
    before = relay.metrics()
    sent = 0
    for i in range(300):
        size = rnd.choice([1, 2, 3, 4, 20, 35, 37, 47, 49, 60, 61, 100, 500, 1400])
        body = bytes(rnd.getrandbits(8) for _ in range(size))
        if i % 3 == 0 and size >= 4:
            body = bytes([0x52, rp.VERSION, rnd.randint(1, 9), rnd.randint(0, 70)]) + body[4:]
        if i % 7 == 0 and size >= 4:
            body = bytes([0x52, rp.VERSION, rp.NOTIFY_A, 3]) + b"bd1" + body[7:]
        if i % 11 == 0 and size >= 4:
            body = bytes([0x52, rp.VERSION_OLD, rp.NOTIFY_B, 3]) + b"bd1" + body[7:]
        dev.send_raw(body, sock=1)
        sent += 1
    no_reply(dev, 1, 1.0)
    m = relay.metrics()
    dropped = sum(m("relay_datagrams_dropped_total", reason=r) - before("relay_datagrams_dropped_total", reason=r)
                  for r in ["malformed", "unknown_device", "bad_auth", "replay", "stale_epoch", "old_version"])
    assert dropped >= sent * 0.9, f"only {dropped} of {sent} garbage datagrams counted"
    assert m("relay_address_changes_total") == before("relay_address_changes_total")
    assert relay.healthy()
    wake_lands_on(relay, dev, 0)


def test_restart_changes_epoch_and_old_notifies_get_resync(relay, fake_devices):
    dev = relay.fake_device("ep1")
    fake_devices.append(dev)
    old_epoch = dev.epoch
    dev.notify_a()
    tok = relay.token("ep1")
    assert relay.stop() == 0
    relay.start()
    # the relay restarted: device and token survive in the store, liveness does not
    r = requests.get(relay.dev_url("ep1", "/"), headers={"Authorization": f"Bearer {tok}"}, timeout=T)
    assert r.status_code == 503, r.text
    c = dev.next_counter()
    sent = dev.notify_a(counter=c)
    got = dev.drain(0, 1.5)
    assert len(got) == 1, got
    rs = rp.parse_resync(got[0][0], dev.key)
    assert rs.counter == c and rs.epoch != old_epoch
    assert len(got[0][0]) <= len(sent)
    dev.epoch = rs.epoch
    dev.notify_a()
    fut = run_bg(requests.get, relay.dev_url("ep1", "/back"), headers={"Authorization": f"Bearer {tok}"}, timeout=T)
    cr = dev.wait_connect_request(0, timeout=5)
    answer_wake(dev, cr)
    assert fut.result(30).text == "fake-device GET /back"
