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


@pytest.mark.timeout(HEADER_TIMEOUT_BOUND + 30)
def test_slow_head_408_or_close(relay):
    s = connect(relay.host, relay.http_port, HEADER_TIMEOUT_BOUND)
    t0 = time.monotonic()
    try:
        s.sendall(b"GET /d/some")
        reader = rp.StreamReader(s)
        try:
            msg = rp.read_http_message(reader, is_response=True)
        except (ConnectionResetError, rp.ProtocolError):
            msg = None
        except socket.timeout:
            pytest.fail(f"half a request line kept open for more than {HEADER_TIMEOUT_BOUND}s")
    finally:
        s.close()
    elapsed = time.monotonic() - t0
    assert msg is None or msg.status == 408, msg
    assert elapsed < HEADER_TIMEOUT_BOUND
    assert relay.healthy()


def test_garbage_request_400(relay):
    msg = send_and_read(relay, b"THIS IS NOT HTTP\r\n\r\n")
    assert msg is None or msg.status == 400, msg
    assert relay.healthy()
