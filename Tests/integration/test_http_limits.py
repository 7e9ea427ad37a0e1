"""Terminal request head limits: size (431) and time (408 or close)."""

import os
import socket
import time

import pytest

import relayproto as rp
from helpers import connect, http_request_bytes

HEADER_TIMEOUT_BOUND = float(os.environ.get("RELAY_HEADER_TIMEOUT_BOUND", "40"))


def send_and_read(relay, data: bytes, timeout=10):
    s = connect(relay.host, relay.http_port, timeout)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reader = rp.StreamReader(s)
        try:
            return rp.read_http_message(reader, is_response=True)
        except ConnectionResetError:
            return None
    finally:
        s.close()


def test_oversized_head_431(relay):
    relay.add_device("big1")
    req = http_request_bytes("GET", "/d/big1/", "x", {"X-Big": "a" * (20 * 1024)})
    msg = send_and_read(relay, req)
    assert msg is not None and msg.status == 431, msg
    many = http_request_bytes("GET", "/d/big1/", "x", [(f"X-H{i}", "b" * 1000) for i in range(20)])
    msg = send_and_read(relay, many)
    assert msg is not None and msg.status == 431, msg
    assert relay.healthy()


def test_head_under_limit_is_not_431(relay):
    relay.add_device("big2")
    req = http_request_bytes("GET", "/d/big2/", "x", {"X-Big": "a" * (8 * 1024)})
    msg = send_and_read(relay, req)
    assert msg is not None and msg.status == 401, msg  # judged normally: no token


def slow_head(relay, first: bytes, bound: float):
    s = connect(relay.host, relay.http_port, bound)
    t0 = time.monotonic()
    try:
        s.sendall(first)
        reader = rp.StreamReader(s)
        try:
            msg = rp.read_http_message(reader, is_response=True)
        except (ConnectionResetError, rp.ProtocolError):
            msg = None
        except socket.timeout:
            pytest.fail(f"an incomplete request head was kept open for more than {bound}s")
    finally:
        s.close()
    return msg, time.monotonic() - t0


@pytest.mark.timeout(HEADER_TIMEOUT_BOUND + 30)
def test_slow_head_default_timeout_408_or_close(relay):
    msg, elapsed = slow_head(relay, b"GET /d/some", HEADER_TIMEOUT_BOUND)
    assert msg is None or msg.status == 408, msg
    assert elapsed < HEADER_TIMEOUT_BOUND
    assert relay.healthy()


def test_slow_head_short_timeout_408(relay_factory):
    relay = relay_factory("--header-timeout", "1s")
    before = relay.metrics()
    msg, elapsed = slow_head(relay, b"GET /d/some", 10)
    assert msg is not None and msg.status == 408, msg
    assert 0.8 <= elapsed < 4, elapsed
    # headers trickling in slowly do not extend the deadline
    s = connect(relay.host, relay.http_port, 10)
    t0 = time.monotonic()
    try:
        s.sendall(b"GET /d/some/ HTTP/1.1\r\n")
        closed = False
        for i in range(40):
            try:
                s.sendall(b"X-Drip-%d: 1\r\n" % i)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
            s.settimeout(0.01)
            try:
                d = s.recv(4096)
                if not d or d.startswith(b"HTTP/1.1 408"):
                    closed = True
                    break
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed = True
                break
        assert closed, "a drip-fed head must time out"
        assert time.monotonic() - t0 < 3.5
    finally:
        s.close()
    relay.wait_delta(before, "relay_requests_refused_total", 2, reason="bad_request")


def test_max_header_bytes_option(relay_factory):
    relay = relay_factory("--max-header-bytes", "2048")
    relay.add_device("mh1")
    msg = send_and_read(relay, http_request_bytes("GET", "/d/mh1/", "x", {"X-Big": "a" * 3000}))
    assert msg is not None and msg.status == 431, msg
    msg = send_and_read(relay, http_request_bytes("GET", "/d/mh1/", "x", {"X-Big": "a" * 1000}))
    assert msg is not None and msg.status == 401, msg


def test_garbage_request_400(relay):
    msg = send_and_read(relay, b"THIS IS NOT HTTP\r\n\r\n")
    assert msg is None or msg.status == 400, msg
    assert relay.healthy()
