"""Callback hellos: wrong session, wrong proof, malformed, duplicate; the right one still binds [1, 3, 7, 17]."""

import os
import socket
import time

import pytest
import requests

import relayproto as rp
from helpers import run_bg

T = (5, 30)


@pytest.fixture
def waking(relay, fake_devices):
    """A device 'cb1' with a terminal request waiting on it; returns (dev, cr, future)."""
    relay.add_device("cb2")  # a second device, for cross-device proofs
    dev = relay.fake_device("cb1")
    fake_devices.append(dev)
    dev.notify_a()
    tok = relay.token("cb1")
    fut = run_bg(requests.get, relay.dev_url("cb1", "/after-bad-hellos"),
                 headers={"Authorization": f"Bearer {tok}"}, timeout=T)
    cr = dev.wait_connect_request(0, timeout=5)
    return dev, cr, fut


def bad_hello(dev, cr, expect, **kw):
    link, status = dev.callback(cr, **kw)
    try:
        if isinstance(expect, tuple):
            assert status in expect, f"status {status!r}, expected one of {expect}"
        else:
            assert status == expect, f"status {status!r}, expected {expect}"
        assert rp.closed_by_peer(link, 3.0), "relay must close the link after a non-zero status"
    finally:
        link.close()


def test_wrong_session_id(relay, waking):
    dev, cr, fut = waking
    before = relay.metrics()
    sid = os.urandom(16)
    bad_hello(dev, cr, rp.STATUS_UNKNOWN_SESSION, session_id=sid,
              proof=rp.callback_proof(dev.key, sid, cr.nonce))
    relay.wait_delta(before, "relay_callbacks_rejected_total")
    finish(dev, cr, fut)


def test_wrong_proof(relay, waking):
    dev, cr, fut = waking
    before = relay.metrics()
    bad_hello(dev, cr, rp.STATUS_BAD_PROOF, proof=os.urandom(32))
    bad_hello(dev, cr, rp.STATUS_BAD_PROOF, nonce=os.urandom(16))  # proof over the wrong nonce
    bad_hello(dev, cr, rp.STATUS_BAD_PROOF, key=rp.derive_key(os.urandom(32)))  # forged key
    bad = bytearray(dev.make_hello(cr))
    bad[-1] ^= 1
    bad_hello(dev, cr, rp.STATUS_BAD_PROOF, raw_hello=bytes(bad))
    relay.wait_delta(before, "relay_callbacks_rejected_total", 4)
    finish(dev, cr, fut)


def test_session_of_another_device(relay, waking):
    dev, cr, fut = waking
    other_key = rp.derive_key(relay.devices["cb2"])
    bad_hello(dev, cr, rp.STATUS_BAD_PROOF, device_id="cb2", key=other_key)
    finish(dev, cr, fut)


@pytest.mark.parametrize("kind", ["magic", "id_len_zero", "id_len_64", "bad_id_chars", "all_zero"])
def test_malformed_hello(relay, waking, kind):
    dev, cr, fut = waking
    good = dev.make_hello(cr)
    raw = {
        "magic": b"XLY1" + good[4:],
        "id_len_zero": b"RLY1\x00" + good[5 + 3:],
        "id_len_64": b"RLY1\x40" + b"a" * 64 + cr.session_id + os.urandom(32),
        "bad_id_chars": rp.hello("CB_1", cr.session_id, os.urandom(32)),
        "all_zero": bytes(len(good)),
    }[kind]
    before = relay.metrics()
    link = dev.connect_tcp()
    try:
        link.sendall(raw)
        status = rp.read_status(link, 5)
        allowed = (rp.STATUS_MALFORMED, None)
        if kind == "bad_id_chars":  # may also be judged as an unknown session / bad proof
            allowed += (rp.STATUS_UNKNOWN_SESSION, rp.STATUS_BAD_PROOF)
        assert status in allowed, f"malformed hello got status {status!r}"
        if status is not None:
            assert rp.closed_by_peer(link, 3.0)
    finally:
        link.close()
    relay.wait_delta(before, "relay_callbacks_rejected_total")
    finish(dev, cr, fut)


def test_second_callback_for_bound_session(relay, waking):
    dev, cr, fut = waking
    link, status = dev.callback(cr, pieces=3, piece_delay=0.05)  # hello split across segments
    assert status == rp.STATUS_BOUND
    before = relay.metrics()
    bad_hello(dev, cr, rp.STATUS_ALREADY_LINKED)
    relay.wait_delta(before, "relay_callbacks_rejected_total")
    link.settimeout(10)
    dev.serve_link(link, cr.sid_hex, keep_alive=False)
    link.close()
    r = fut.result(30)
    assert r.status_code == 200 and r.text == "fake-device GET /after-bad-hellos"


def test_incomplete_hello_is_closed(relay_factory, fake_devices):
    relay = relay_factory("--wake-timeout", "1s")
    s = socket.create_connection((relay.host, relay.tcp_port), timeout=5)
    try:
        s.sendall(b"RLY1\x03cb")
        t0 = time.monotonic()
        assert rp.closed_by_peer(s, 6.0), "a partial hello must be dropped within the wake timeout"
        assert time.monotonic() - t0 < 5.0
    finally:
        s.close()
    s = socket.create_connection((relay.host, relay.tcp_port), timeout=5)
    try:  # nothing at all
        assert rp.closed_by_peer(s, 6.0)
    finally:
        s.close()
    assert relay.healthy()


def test_raw_callback_link_carries_the_request(relay, waking):
    """After 0x00 the relay writes the terminal's request and relays what the device sends."""
    dev, cr, fut = waking
    resp = rp.build_response(200, b"early", keep_alive=False)
    link = dev.connect_tcp(cr.callback_port)  # the port of the loop that woke it
    try:
        link.sendall(dev.make_hello(cr))
        assert rp.read_status(link, 5) == rp.STATUS_BOUND
        reader = rp.StreamReader(link)
        req = rp.read_http_message(reader)
        assert req.target == "/after-bad-hellos"
        link.sendall(resp)
    finally:
        time.sleep(0.2)
        link.close()
    r = fut.result(30)
    assert r.status_code == 200 and r.text == "early"


def finish(dev, cr, fut):
    """The correct callback still binds after the bad ones, and the terminal is served."""
    link, status = dev.callback(cr)
    assert status == rp.STATUS_BOUND, f"correct hello after bad ones got {status!r}"
    link.settimeout(10)
    dev.serve_link(link, cr.sid_hex, keep_alive=False)
    link.close()
    r = fut.result(30)
    assert r.status_code == 200, r.text
    assert r.text == "fake-device GET /after-bad-hellos"
    assert r.headers.get("X-Relay-Session") == cr.sid_hex
