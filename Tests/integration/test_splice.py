"""Large response bodies move device -> terminal with splice(2), inside the kernel [claim 10].

A Content-Length body with at least 256 KiB left, on plain TCP both ways, is spliced; the
session's framing stays exact: the next response on the same link and connection is found,
and either side leaving mid-body ends the session as on the ordinary path.
"""

import hashlib
import os
import time

import requests

from devservers import big_body
from conftest import both_agents
from helpers import connect, http_request_bytes, wait_until

T = (5, 60)


def spliced(relay) -> float:
    return relay.metrics()("relay_spliced_bodies_total")


def test_large_bodies_spliced_then_same_connection_goes_on(relay, recording_server, agent_factory):
    srv = recording_server()
    agent_factory(relay, "sp1", srv.port)
    before = spliced(relay)
    with requests.Session() as http:
        http.headers.update(relay.auth("sp1"))
        # Each well above the threshold even after a first read of up to 256 KiB.
        sizes = [(3 << 20) + 17, 2 << 20, (1 << 20) + (1 << 19)]
        for seed, size in enumerate(sizes):
            r = http.get(relay.dev_url("sp1", f"/big?size={size}&seed={seed}"), timeout=T)
            assert r.status_code == 200 and len(r.content) == size
            assert hashlib.sha256(r.content).digest() == hashlib.sha256(big_body(size, seed)).digest()
        small = http.get(relay.dev_url("sp1", "/after"), timeout=T)  # below the threshold: ordinary path
        assert small.status_code == 200 and small.json()["path"] == "/after"
        head = http.head(relay.dev_url("sp1", f"/big?size={1 << 20}&seed=9"), timeout=T)
        assert head.status_code == 200 and head.content == b""
        again = http.get(relay.dev_url("sp1", f"/big?size={2 << 20}&seed=4"), timeout=T)
        assert again.content == big_body(2 << 20, 4)
    assert spliced(relay) - before == len(sizes) + 1
    # One terminal connection, one device link: every request reached the device on it.
    conns = {tuple(r["conn"]) for r in srv.requests}
    assert len(conns) == 1, conns


@both_agents
def test_terminal_leaving_mid_splice_ends_the_session(relay, recording_server, agent_factory):
    srv = recording_server()
    agent = agent_factory(relay, "sp2", srv.port)
    size = 64 << 20
    s = connect("127.0.0.1", relay.http_port)
    s.sendall(http_request_bytes("GET", f"/d/sp2/big?size={size}&seed=1", relay.host, relay.auth("sp2")))
    got = 0
    deadline = time.monotonic() + 30
    while got < (2 << 20) and time.monotonic() < deadline:
        got += len(s.recv(1 << 16))
    s.close()  # leaves with most of the body still to come
    assert got >= (2 << 20)
    assert wait_until(lambda: relay.metrics()("relay_sessions_active") == 0, 10), "the session stayed"
    assert wait_until(lambda: relay.metrics()("relay_terminal_connections") == 0, 10)
    # The agent was writing to the link the relay closed: EPIPE for it, not SIGPIPE (found
    # when the C agent's library stopped ignoring SIGPIPE for the process).
    time.sleep(0.3)
    assert agent.alive(), agent.describe()
    # The relay serves the next terminal normally.
    r = requests.get(relay.dev_url("sp2", f"/big?size={1 << 20}&seed=2"), headers=relay.auth("sp2"), timeout=T)
    assert r.status_code == 200 and r.content == big_body(1 << 20, 2)


def relay_cpu_seconds(relay) -> float:
    fields = open(f"/proc/{relay.proc.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_slow_terminal_holds_the_device_back_without_spinning(relay, recording_server, agent_factory):
    """A terminal reading slowly fills its socket, then the pipe: the relay waits for it
    (no busy loop) and the body still arrives whole."""
    srv = recording_server()
    agent_factory(relay, "sp3", srv.port)
    size = 24 << 20
    s = connect("127.0.0.1", relay.http_port)
    s.settimeout(30)
    s.sendall(http_request_bytes("GET", f"/d/sp3/big?size={size}&seed=3", relay.host, relay.auth("sp3")))
    data = bytearray()
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    h = hashlib.sha256(body)
    got = len(body)
    cpu0 = relay_cpu_seconds(relay)
    for _ in range(12):  # about 3 s with the relay held back by this reader
        time.sleep(0.25)
        chunk = s.recv(256 * 1024)
        h.update(chunk)
        got += len(chunk)
    cpu_slow = relay_cpu_seconds(relay) - cpu0
    while got < size:
        chunk = s.recv(1 << 20)
        assert chunk, f"closed after {got} of {size} bytes"
        h.update(chunk)
        got += len(chunk)
    s.close()
    assert got == size and h.digest() == hashlib.sha256(big_body(size, 3)).digest()
    assert cpu_slow < 1.0, f"the relay used {cpu_slow:.2f} s of CPU waiting for a slow reader"
