"""The device disappears mid-response: the terminal sees a short read (no hang), the relay
keeps serving others, and the session is released."""

import os
import re
import socket
import time

import pytest
import requests

import relayproto as rp
from conftest import both_agents
from helpers import connect, http_request_bytes

T = (5, 30)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@both_agents
@pytest.mark.timeout(120)
def test_agent_killed_mid_download(relay, static_server, agent_factory):
    root, port, _ = static_server()
    size = 300 * 1024 * 1024
    with open(root / "huge.bin", "wb") as f:  # sparse: cheap to make, long to stream
        f.truncate(size)
    (root / "small.txt").write_bytes(b"still here\n")
    victim = agent_factory(relay, "kill1", port)
    agent_factory(relay, "alive2", port)
    base = relay.metrics()("relay_sessions_active")
    tok = relay.token("kill1")
    base_fds = open_fds(relay.proc.pid)
    s = connect(relay.host, relay.http_port, 10)
    got = 0
    closed = False
    try:
        s.sendall(http_request_bytes("GET", "/d/kill1/huge.bin", "x", {"Authorization": f"Bearer {tok}"}))
        reader = rp.StreamReader(s)
        head = reader.read_until(b"\r\n\r\n")
        assert head is not None and re.match(rb"HTTP/1\.[01] 200 ", head), head
        got = len(reader.buf)
        while got < 1024 * 1024:
            d = s.recv(65536)
            assert d, "stream ended before the agent was killed"
            got += len(d)
        assert relay.metrics()("relay_sessions_active") >= base + 1
        victim.kill()  # SIGKILL
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                s.settimeout(10)
                d = s.recv(1 << 20)
            except socket.timeout:
                break
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
            if not d:
                closed = True
                break
            got += len(d)
    finally:
        s.close()
    assert closed, f"terminal connection not closed after the device died (read {got} bytes)"
    assert got < size, "the whole body cannot have arrived"
    relay.wait_metric("relay_sessions_active", lambda v: v == base, timeout=10)
    # Everything the dead session held is released: the relay is back to its open files.
    deadline = time.monotonic() + 10
    while open_fds(relay.proc.pid) > base_fds and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_fds(relay.proc.pid) <= base_fds, f"fds {open_fds(relay.proc.pid)} > baseline {base_fds}"
    r = requests.get(relay.dev_url("alive2", "/small.txt"), headers=relay.auth("alive2"), timeout=T)
    assert r.status_code == 200 and r.content == b"still here\n"
    assert relay.alive()


def test_device_closes_link_before_response_gives_502(relay, fake_devices):
    dev = relay.fake_device("drop1")
    fake_devices.append(dev)
    dev.notify_a()
    dev.start_responder(handler=lambda req: b"")  # reads the request, answers nothing, closes
    before = relay.metrics()
    r = requests.get(relay.dev_url("drop1", "/"), headers=relay.auth("drop1"), timeout=T)
    assert r.status_code == 502, r.text
    assert relay.metrics()("relay_wakes_total", outcome="bound") - before("relay_wakes_total", outcome="bound") == 1
