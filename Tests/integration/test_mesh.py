"""The cluster's node-to-node channel on loopback: relays sharing one PostgreSQL store wake
each other's devices over the mesh (docs/PROTOCOL.md, "Between nodes").

Invariants checked here:
- a terminal on any node reaches a device that notifies another node, and the device calls
  back to the terminal's node: no session byte passes the holder;
- a device no node has heard from gets 503 at once, not after the wake timeout;
- no mesh datagram without the cluster key, or replayed, or stale, or malformed, makes a node
  send anything to a device (each is dropped and counted);
- an agent that predates CONNECT_REQUEST_TO is never sent one: the terminal hears why;
- half-set or unsafe cluster settings are refused before the relay starts.

Tests/cluster/ runs the same thing across network namespaces with floating addresses and
keepalived; this file keeps the protocol's edges in the ordinary suite.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
import time

import pytest
import requests

from conftest import free_port, run_cli
from helpers import wait_until

T = 10


def write_key(path, mode=0o600, key: bytes | None = None) -> bytes:
    key = key or os.urandom(32)
    path.write_text(key.hex() + "\n")
    os.chmod(path, mode)
    return key


def cluster(relay_factory, workdir, pg_url, n: int, *extra):
    """n relays, nodes 1..n, each taking WAKEs on its own loopback port and sending them to
    the others'."""
    keyfile = workdir / "mesh.key"
    key = write_key(keyfile)
    ports = [free_port("127.0.0.1", "udp") for _ in range(n)]
    relays = []
    for i in range(n):
        peers = []
        for j in range(n):
            if j != i:
                peers += ["--mesh-peer", f"127.0.0.1:{ports[j]}"]
        r = relay_factory("--store", pg_url, "--wake-timeout", "3s", "--node", str(i + 1),
                          "--mesh", f"127.0.0.1:{ports[i]}", *peers, "--mesh-key-file", str(keyfile),
                          "--callback-host", "127.0.0.1", *extra)
        r.mesh_port = ports[i]
        r.store_url = pg_url
        relays.append(r)
    return relays, key


def provision(relays, device_id: str) -> tuple:
    """Adds the device to the shared store (from node 1's data directory) and waits until
    every node has it."""
    from test_store_postgres import add, mint
    r0 = relays[0]
    counts = [r.metrics()("relay_devices") for r in relays]
    secret = add(r0.store_url, r0.data, device_id)
    for r, n in zip(relays, counts):
        r.devices[device_id] = secret
        r.wait_metric("relay_devices", lambda v, n=n: v >= n + 1, timeout=5)
    return secret, mint(r0.store_url, r0.data, device_id)


def get(relay, device_id, tok, path="/"):
    return requests.get(relay.dev_url(device_id, path), headers={"Authorization": f"Bearer {tok}"}, timeout=T)


def test_a_terminal_on_any_node_reaches_a_device_on_another(workdir, pg_url, relay_factory, agent_factory,
                                                            recording_server):
    relays, _ = cluster(relay_factory, workdir, pg_url, 3)
    a, b, c = relays
    secret, tok = provision(relays, "cam1")
    srv = recording_server()
    agent_factory(a, "cam1", srv.port)  # notifies node 1 only
    before = [r.metrics() for r in relays]
    for r in (b, c):
        resp = get(r, "cam1", tok, "/through-" + r.base.rsplit(":", 1)[1])
        assert resp.status_code == 200, (r.base, resp.status_code, resp.text)
    after = [r.metrics() for r in relays]
    delta = lambda i, name, **kw: after[i](name, **kw) - before[i](name, **kw)  # noqa: E731
    # the holder sent the requests and carried nothing
    assert delta(0, "relay_mesh_wakes_handled_total", status="sent") >= 2
    assert delta(0, "relay_mesh_connect_to_sent_total") >= 2
    assert delta(0, "relay_relayed_bytes_total", direction="to_device") == 0
    assert delta(0, "relay_relayed_bytes_total", direction="to_terminal") == 0
    assert delta(0, "relay_wakes_total", outcome="bound") == 0
    # each terminal's node woke through the mesh, bound the callback and carried the bytes
    for i in (1, 2):
        assert delta(i, "relay_cross_node_wakes_total") == 1
        assert delta(i, "relay_wakes_total", outcome="bound") == 1
        assert delta(i, "relay_relayed_bytes_total", direction="to_device") > 0
        assert delta(i, "relay_relayed_bytes_total", direction="to_terminal") > 0
    peer = f"127.0.0.1:{a.mesh_port}"
    assert after[1]("relay_mesh_answers_total", peer=peer, status="sent") >= 1
    assert after[1]("relay_cluster_node") == 2
    # locally live devices never touch the mesh
    sent = after[0]("relay_mesh_wakes_sent_total", peer=f"127.0.0.1:{b.mesh_port}")
    assert get(a, "cam1", tok).status_code == 200
    assert a.metrics()("relay_mesh_wakes_sent_total", peer=f"127.0.0.1:{b.mesh_port}") == sent
    paths = [req["path"] for req in srv.requests]
    assert any(p.startswith("/through-") for p in paths), paths


def test_a_device_no_node_heard_from_gets_503_at_once(workdir, pg_url, relay_factory):
    relays, _ = cluster(relay_factory, workdir, pg_url, 3)
    _, tok = provision(relays, "ghost")
    t0 = time.monotonic()
    resp = get(relays[1], "ghost", tok)
    took = time.monotonic() - t0
    assert resp.status_code == 503, resp.text
    assert "no node of the cluster" in resp.text or "has not notified" in resp.text, resp.text
    assert took < 2.5, f"503 after {took:.2f} s: the answers of every peer should end the wait"
    m = relays[1].metrics()
    assert m("relay_wakes_total", outcome="cluster_offline") == 1
    for r in (relays[0], relays[2]):
        assert r.metrics()("relay_mesh_wakes_handled_total", status="unknown") >= 1


def test_an_old_agent_is_never_sent_connect_request_to(workdir, pg_url, relay_factory):
    relays, _ = cluster(relay_factory, workdir, pg_url, 2)
    a, b = relays
    secret, tok = provision(relays, "old1")
    dev = a.fake_device("old1", secret=secret)  # relayproto's device: capability bit not set
    dev.notify_a()
    try:
        a.wait_metric("relay_devices_alive", lambda v: v >= 1, timeout=3)
        resp = get(b, "old1", tok)
        assert resp.status_code == 503, resp.text
        assert "upgrade the agent" in resp.text, resp.text
        assert a.metrics()("relay_mesh_wakes_handled_total", status="legacy") >= 1
        assert a.metrics()("relay_mesh_connect_to_sent_total") == 0
        # the holder itself still wakes it the old way
        assert a.metrics()("relay_connection_requests_sent_total") == 0
    finally:
        dev.close()


def mesh_datagram(key: bytes, mtype: int, body: bytes, node: int = 9, when_us: int | None = None,
                  seq: int | None = None) -> bytes:
    when_us = int(time.time() * 1e6) if when_us is None else when_us
    seq = when_us if seq is None else seq
    head = bytes([0x4D, 1, mtype, node]) + struct.pack(">QQ", when_us, seq)
    msg = head + body
    return msg + hmac.new(key, msg, hashlib.sha256).digest()[:16]


def wake_body(device_id: str, cb_port: int) -> bytes:
    return (bytes([len(device_id)]) + device_id.encode() + os.urandom(32) +
            socket.inet_pton(socket.AF_INET6, "::ffff:127.0.0.1") + struct.pack(">H", cb_port))


def test_forged_replayed_stale_and_malformed_mesh_datagrams_are_dropped(workdir, pg_url, relay_factory,
                                                                       agent_factory, recording_server):
    relays, key = cluster(relay_factory, workdir, pg_url, 2)
    a = relays[0]
    secret, _ = provision(relays, "cam2")
    srv = recording_server()
    agent_factory(a, "cam2", srv.port)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    to = ("127.0.0.1", a.mesh_port)
    before = a.metrics()
    wrong = os.urandom(32)
    cases = {
        "bad_auth": [mesh_datagram(wrong, 1, wake_body("cam2", 1))],
        "stale": [mesh_datagram(key, 1, wake_body("cam2", 1), when_us=int((time.time() - 5) * 1e6)),
                  mesh_datagram(key, 1, wake_body("cam2", 1), when_us=int((time.time() + 5) * 1e6))],
        "malformed": [b"M", b"\x4d\x01\x01", mesh_datagram(key, 1, wake_body("cam2", 1)[:-3]),
                      mesh_datagram(key, 1, bytes([70]) + b"x" * 70 + os.urandom(50)),
                      mesh_datagram(key, 1, wake_body("CAM-2", 1)), mesh_datagram(key, 7, b"")],
    }
    for datagrams in cases.values():
        for d in datagrams:
            s.sendto(d, to)
    # one genuine WAKE, then the very same bytes again: acted on once
    genuine = mesh_datagram(key, 1, wake_body("cam2", 1))
    s.sendto(genuine, to)
    answer, _ = s.recvfrom(512)
    assert answer[2] == 2 and answer[4 + 16 + 16] == 0, answer.hex()  # WAKE_ACK, status sent
    s.sendto(genuine, to)
    expect = {k: len(v) for k, v in cases.items()}
    expect["replay"] = 1
    for reason, n in expect.items():
        a.wait_metric("relay_mesh_dropped_total", lambda v, n=n, r=reason: v - before("relay_mesh_dropped_total",
                      reason=r) >= n, timeout=3, reason=reason)
    after = a.metrics()
    for reason, n in expect.items():
        got = after("relay_mesh_dropped_total", reason=reason) - before("relay_mesh_dropped_total", reason=reason)
        assert got == n, (reason, got, n)
    # only the genuine one made the holder send anything to the device
    assert after("relay_mesh_connect_to_sent_total") - before("relay_mesh_connect_to_sent_total") == 1
    # nothing answers what did not verify
    s.sendto(mesh_datagram(wrong, 1, wake_body("cam2", 1)), to)
    with pytest.raises(socket.timeout):
        s.recvfrom(512)
    s.close()


@pytest.mark.parametrize("case", ["no-key", "key-mode", "key-short", "public-mesh", "wildcard-mesh", "no-node",
                                  "no-callback-host", "peers-missing", "name-callback-host"])
def test_cluster_settings_are_checked_before_start(workdir, case):
    key = workdir / "k"
    write_key(key)
    base = {"--node": "1", "--mesh": "127.0.0.1:4702", "--mesh-peer": "127.0.0.2:4702",
            "--mesh-key-file": str(key), "--callback-host": "127.0.0.1"}
    want = {"no-key": "--mesh-key-file", "key-mode": "readable by others", "key-short": "64 hex digits",
            "public-mesh": "private", "wildcard-mesh": "private", "no-node": "--node", "no-callback-host":
            "--callback-host", "peers-missing": "--mesh-peer", "name-callback-host": "--callback-host"}[case]
    if case == "no-key":
        base["--mesh-key-file"] = str(workdir / "missing")
    elif case == "key-mode":
        os.chmod(key, 0o644)
    elif case == "key-short":
        key.write_text("abcd\n")
    elif case == "public-mesh":
        base["--mesh"] = "198.51.100.1:4702"
    elif case == "wildcard-mesh":
        base["--mesh"] = "0.0.0.0:4702"
    elif case == "no-node":
        del base["--node"]
    elif case == "no-callback-host":
        del base["--callback-host"]
    elif case == "peers-missing":
        del base["--mesh-peer"]
    elif case == "name-callback-host":
        base["--callback-host"] = "relay.example"
    args = [x for kv in base.items() for x in kv]
    r = run_cli(["check-config", "--data", str(workdir / "d")] + args, 30)
    assert r.returncode != 0, r.stdout
    assert want in r.stderr, r.stderr


def test_check_config_shows_the_cluster(workdir):
    key = workdir / "k"
    write_key(key)
    r = run_cli(["check-config", "--data", str(workdir / "d"), "--node", "3", "--mesh", "10.0.0.13:4702",
                 "--mesh-peer", "10.0.1.11:4702", "--mesh-peer", "10.0.1.12:4702", "--mesh-key-file", str(key),
                 "--callback-host", "198.51.100.13"], 30)
    assert r.returncode == 0, r.stderr
    for text in ("node: 3", "10.0.1.12:4702", "198.51.100.13", str(key)):
        assert text in r.stdout, (text, r.stdout)
    assert key.read_text().strip() not in r.stdout, "the key itself is never shown"


def test_a_node_cut_off_from_the_mesh_says_so(workdir, pg_url, relay_factory):
    """No peer answers (nothing listens at its address): the wake ends at the wake timeout with
    a 504 that names the mesh, and the silent peer is logged."""
    keyfile = workdir / "mesh.key"
    write_key(keyfile)
    mine, silent = free_port("127.0.0.1", "udp"), free_port("127.0.0.1", "udp")
    r = relay_factory("--store", pg_url, "--wake-timeout", "1500ms", "--node", "1", "--mesh", f"127.0.0.1:{mine}",
                      "--mesh-peer", f"127.0.0.1:{silent}", "--mesh-key-file", str(keyfile),
                      "--callback-host", "127.0.0.1")
    r.store_url = pg_url
    _, tok = provision([r], "far1")
    resp = get(r, "far1", tok)
    assert resp.status_code == 504, resp.text
    assert "no other node of the cluster answered" in resp.text, resp.text
    assert r.metrics()("relay_mesh_wakes_sent_total", peer=f"127.0.0.1:{silent}") >= 3  # the resend schedule
    assert wait_until(lambda: "mesh.peer_silent" in r.stderr(), 5), r.stderr()[-2000:]
