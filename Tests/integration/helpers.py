"""Terminal-side helpers shared by the test modules."""

from __future__ import annotations

import re
import socket
import threading
import time
from concurrent.futures import Future

import relayproto as rp

SID_RE = re.compile(r"^[0-9a-f]{32}$")


def run_bg(fn, *args, **kw) -> Future:
    """Runs fn in a daemon thread; returns a Future (use .result(timeout))."""
    fut: Future = Future()

    def run():
        try:
            fut.set_result(fn(*args, **kw))
        except BaseException as e:  # noqa: BLE001
            fut.set_exception(e)

    threading.Thread(target=run, daemon=True).start()
    return fut


def connect(host: str, port: int, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection((host, port), timeout=timeout)
    s.settimeout(timeout)
    return s


def http_request_bytes(method: str, target: str, host: str, headers: dict | list | None = None,
                       body: bytes = b"") -> bytes:
    hs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    if body and not any(k.lower() == "content-length" for k, _ in hs):
        hs.append(("Content-Length", str(len(body))))
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hs) + "\r\n"
    return head.encode("latin-1") + body


def raw_request(host: str, port: int, data: bytes, timeout: float = 10.0, method: str = "GET"):
    """Sends raw bytes on a new connection and reads one response: (HttpMessage|None, sock, reader)."""
    s = connect(host, port, timeout)
    s.sendall(data)
    reader = rp.StreamReader(s)
    msg = rp.read_http_message(reader, is_response=True, request_method=method)
    return msg, s, reader


def answer_wake(dev: rp.FakeDevice, cr: rp.ConnectRequest, handler=rp.default_handler, keep_alive: bool = False):
    """Calls back for `cr` and serves HTTP on the link in a thread. Returns the Future of
    (status byte, requests served)."""

    def run():
        link, status = dev.callback(cr)
        if status != rp.STATUS_BOUND:
            link.close()
            return status, 0
        link.settimeout(30)
        try:
            n = dev.serve_link(link, cr.sid_hex, handler, keep_alive=keep_alive)
        finally:
            link.close()
        return status, n

    return run_bg(run)


def wait_until(pred, timeout: float, interval: float = 0.05):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > end:
            return v
        time.sleep(interval)
