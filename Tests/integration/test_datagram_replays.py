"""Replays and wakes, as an observer on the path would try them (docs/PROTOCOL.md,
"What an observer can do").

Invariants: no genuine datagram, replayed from any address at any time, changes anything or
is answered twice; no datagram whose tag did not verify leaves state a later one relies on;
a wake in flight follows its device's anchor and is never silent for more than about a
second; unfinished callbacks are bounded per source address.
"""

import os
import socket
import time

import pytest
import requests

import relayproto as rp
from helpers import answer_wake, run_bg
from test_bad_datagrams import anchored, no_reply, wake_lands_on  # noqa: F401  (fixture)

T = (5, 30)


def test_notify_b_from_the_anchor_is_verified_and_its_replay_does_not_move_it(relay, anchored):
    dev = anchored
    time.sleep(0.05)
    before = relay.metrics()
    captured = dev.notify_b(sock=0)  # genuine, from the current anchor
    relay.wait_delta(before, "relay_notify_total", kind="b")
    dev.send_raw(captured, sock=1)  # seen on the wire, replayed from another address
    relay.wait_delta(before, "relay_datagrams_dropped_total", reason="replay")
    m = relay.metrics()
    assert m("relay_address_changes_total") == before("relay_address_changes_total")
    no_reply(dev, 1)
    wake_lands_on(relay, dev, 0)


def test_forged_notify_b_from_the_anchor_address_is_refused(relay, anchored):
    dev = anchored
    before = relay.metrics()
    dev.notify_b(sock=0, key=rp.derive_key(os.urandom(32)))
    relay.wait_delta(before, "relay_datagrams_dropped_total", reason="bad_auth")
    assert relay.metrics()("relay_notify_total", kind="b") == before("relay_notify_total", kind="b")
    # the forgery recorded nothing: the next genuine notify, with a lower counter than the
    # forged one might have claimed, is still accepted
    dev.notify_b(sock=0, counter=dev.counter + 1)
    relay.wait_delta(before, "relay_notify_total", kind="b")


def test_forged_high_counter_does_not_lock_out_the_device(relay, anchored):
    dev = anchored
    before = relay.metrics()
    wrong = rp.derive_key(os.urandom(32))
    dev.notify_a(sock=1, key=wrong, counter=2**64 - 1)
    relay.wait_delta(before, "relay_datagrams_dropped_total", reason="bad_auth")
    dev.notify_a(sock=1)  # genuine, ordinary counter: moves the anchor as a rebinding would
    relay.wait_delta(before, "relay_notify_total", kind="a")
    assert relay.metrics()("relay_address_changes_total") == before("relay_address_changes_total") + 1
    wake_lands_on(relay, dev, 1)


def test_captured_period_request_is_answered_once(relay, fake_devices):
    dev = rp.FakeDevice("pr-once", relay.add_device("pr-once"), relay.udp_addr, nsockets=3)
    fake_devices.append(dev)
    before = relay.metrics()
    req, nonce = rp.period_request("pr-once", dev.key, counter=dev.next_counter())
    dev.send_raw(req, sock=0)
    got = dev.drain(0, 1.0)
    assert len(got) == 1 and rp.parse_period_info(got[0][0], dev.key, nonce)
    # replayed with spoofed sources (here: other sockets), then again from the original
    for sock in (1, 2, 0, 1):
        dev.send_raw(req, sock=sock)
    relay.wait_delta(before, "relay_datagrams_dropped_total", 4, reason="replay")
    for sock in range(3):
        only_rejects(dev, sock)
    assert relay.metrics()("relay_period_requests_total") == before("relay_period_requests_total") + 1


def test_period_request_older_than_a_later_datagram_is_not_answered(relay, fake_devices):
    dev = relay.fake_device("pr-late", nsockets=2)
    fake_devices.append(dev)
    unsent, _ = rp.period_request("pr-late", dev.key, counter=dev.next_counter())
    dev.notify_a(sock=0)  # a later counter reaches the relay first
    time.sleep(0.2)
    before = relay.metrics()
    dev.send_raw(unsent, sock=1)
    relay.wait_delta(before, "relay_datagrams_dropped_total", reason="replay")
    only_rejects(dev, 1, 0.5)
    # and the device itself re-registers at once with a fresh counter
    assert dev.register(sock=1).callback_port == relay.tcp_port


def test_stale_epoch_notify_gets_one_resync_however_often_replayed(relay, anchored):
    dev = anchored
    stale = dev.notify_a(sock=1, epoch=(dev.epoch + 1) & 0xFFFFFFFF)
    got = dev.drain(1, 1.0)
    assert len(got) == 1 and rp.parse_resync(got[0][0], dev.key).epoch == dev.epoch
    before = relay.metrics()
    for sock in (1, 0, 1):
        dev.send_raw(stale, sock=sock)
    relay.wait_delta(before, "relay_datagrams_dropped_total", 3, reason="replay")
    no_reply(dev, 0, 0.3)
    no_reply(dev, 1, 0.3)
    wake_lands_on(relay, dev, 0)


def only_rejects(dev, sock, duration=0.3):
    """What a replayed or forged period request gets: nothing, or an unauthenticated REJECT
    (never PERIOD_INFO, never anything larger than a period request)."""
    for data, _ in dev.drain(sock, duration):
        rp.parse_reject(data)


def collect_connect_requests(dev, sock, seconds):
    """Arrival times of CONNECT_REQUESTs on `sock` over `seconds` (no answer given)."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            cr = dev.wait_connect_request(sock, timeout=end - time.monotonic())
        except TimeoutError:
            break
        out.append((cr.received_at, cr.sid_hex))
    return out


def test_unanswered_wake_resends_at_most_a_second_apart_until_its_deadline(relay, anchored):
    dev = anchored
    started = time.monotonic()
    fut = run_bg(requests.get, relay.dev_url(dev.device_id, "/silent"), headers=relay.auth(dev.device_id), timeout=T)
    crs = collect_connect_requests(dev, 0, 5.6)
    assert fut.result(30).status_code == 504
    assert len({sid for _, sid in crs}) == 1, "one session, one ID"
    times = [t for t, _ in crs]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # backoff 0.1, 0.2, 0.4, 0.8, then 1 s: eight sends in a 5 s wake, the last after 4 s
    assert len(times) >= 7, times
    assert max(gaps) < 1.4, gaps
    assert times[-1] - started > 4.0, [t - started for t in times]


def test_wake_in_flight_follows_a_new_anchor_at_once(relay, anchored):
    dev = anchored
    fut = run_bg(requests.get, relay.dev_url(dev.device_id, "/moved"), headers=relay.auth(dev.device_id), timeout=T)
    first = dev.wait_connect_request(0, timeout=5)
    # let the backoff grow (resends at 0.1, 0.3, 0.7, 1.5 s), then the NAT rebinds
    dev.drain(0, 1.6 - (time.monotonic() - first.received_at))
    moved_at = time.monotonic()
    dev.notify_b(sock=1)
    cr = dev.wait_connect_request(1, timeout=5)
    assert cr.sid_hex == first.sid_hex
    assert cr.received_at - moved_at < 0.5, "the resend waited for the backoff instead of going at once"
    answer_wake(dev, cr)
    r = fut.result(30)
    assert r.status_code == 200 and r.text == "fake-device GET /moved"


def _hold(host, port, n, src):
    held = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=5, source_address=(src, 0))
        s.sendall(b"RLY")  # a hello that never completes
        held.append(s)
    return held


def _status(s, timeout=3.0):
    s.settimeout(timeout)
    try:
        return s.recv(1)
    except (socket.timeout, ConnectionResetError):
        return None


@pytest.mark.timeout(90)
def test_callback_port_bounds_unfinished_callbacks_per_source(relay_factory, fake_devices):
    relay = relay_factory("--max-callbacks-per-source", "8")
    dev = relay.fake_device("cbsrc", nsockets=1)
    fake_devices.append(dev)
    dev.notify_a()
    before = relay.metrics()
    held = _hold(relay.host, relay.tcp_port, 8, "127.0.0.2")
    try:
        extra = _hold(relay.host, relay.tcp_port, 3, "127.0.0.2")
        for s in extra:
            assert _status(s) in (bytes([rp.STATUS_BUSY_SOURCE]), b""), "over the bound: refused"
            s.close()
        relay.wait_delta(before, "relay_limit_rejections_total", 3, limit="callback_source")
        # a device calling back from another address is not held up
        wake_lands_on(relay, dev, 0)
    finally:
        for s in held:
            s.close()
    # the slots free up when the unfinished hellos go away
    time.sleep(0.3)
    again = _hold(relay.host, relay.tcp_port, 1, "127.0.0.2")
    assert _status(again[0], 0.5) is None, "a fresh callback from that address waits for its hello"
    again[0].close()
