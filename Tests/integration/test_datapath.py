"""The byte path through the real agent: keep-alive, chunked both ways, large bodies, Upgrade [9, 10]."""

import hashlib
import json
import os

import pytest
import requests

import relayproto as rp
from devservers import UpgradeEchoServer
from helpers import SID_RE, connect, http_request_bytes

T = (5, 60)


@pytest.fixture
def rec(relay, recording_server, agent_factory):
    srv = recording_server()
    agent_factory(relay, "dp1", srv.port)
    return relay, srv


def test_keep_alive_connection_rewrites_every_request(rec):
    relay, srv = rec
    tok = relay.token("dp1")
    s = connect(relay.host, relay.http_port, 30)
    reader = rp.StreamReader(s)
    try:
        for i, path in enumerate(["/a", "/b?x=1", "/c/d"]):
            s.sendall(http_request_bytes("GET", f"/d/dp1{path}", f"127.0.0.1:{relay.http_port}",
                                         {"Authorization": f"Bearer {tok}", "Cookie": f"relay_token={tok}; k=v"}))
            msg = rp.read_http_message(reader, is_response=True)
            assert msg is not None, f"connection closed before response {i}"
            assert msg.status == 200, msg
            seen = json.loads(msg.body)
            assert seen["path"] == path
            names = {k.lower(): v for k, v in seen["headers"]}
            assert "authorization" not in names
            assert tok not in names.get("cookie", "") and "k=v" in names.get("cookie", "")
            assert SID_RE.match(msg.header("X-Relay-Session") or "")
    finally:
        s.close()
    assert srv.paths() == ["/a", "/b?x=1", "/c/d"]


def test_keep_alive_with_requests_session(rec):
    relay, srv = rec
    sess = requests.Session()
    sess.headers.update(relay.auth("dp1"))
    for i in range(5):
        r = sess.get(relay.dev_url("dp1", f"/k{i}"), timeout=T)
        assert r.status_code == 200 and r.json()["path"] == f"/k{i}"
    sess.close()


def test_chunked_request_upload(rec):
    relay, srv = rec
    chunks = [os.urandom(10_000 + i) for i in range(100)]
    want = hashlib.sha256(b"".join(chunks)).hexdigest()

    def gen():
        yield from chunks

    r = requests.post(relay.dev_url("dp1", "/upload"), data=gen(), headers=relay.auth("dp1"), timeout=T)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["len"] == sum(map(len, chunks)) and got["sha256"] == want
    assert srv.requests[-1]["path"] == "/upload"


def test_chunked_response(rec):
    relay, srv = rec
    r = requests.get(relay.dev_url("dp1", "/chunked?n=50&size=1000"), headers=relay.auth("dp1"), timeout=T)
    assert r.status_code == 200
    assert r.content == ((b"0123456789" * 100) * 50)


def test_chunked_response_then_next_request_on_same_connection(rec):
    relay, srv = rec
    tok = relay.token("dp1")
    s = connect(relay.host, relay.http_port, 30)
    reader = rp.StreamReader(s)
    try:
        hdr = {"Authorization": f"Bearer {tok}"}
        s.sendall(http_request_bytes("GET", "/d/dp1/chunked?n=3&size=10", "x", hdr))
        m1 = rp.read_http_message(reader, is_response=True)
        assert m1.status == 200 and m1.chunked and m1.body == b"0123456789" * 3
        s.sendall(http_request_bytes("POST", "/d/dp1/p", "x", hdr, body=b"abc"))
        m2 = rp.read_http_message(reader, is_response=True, request_method="POST")
        assert m2 is not None and m2.status == 200
        assert json.loads(m2.body)["sha256"] == hashlib.sha256(b"abc").hexdigest()
    finally:
        s.close()


@pytest.mark.timeout(180)
def test_large_upload_20mb(rec):
    relay, srv = rec
    body = os.urandom(20 * 1024 * 1024)
    r = requests.post(relay.dev_url("dp1", "/big"), data=body, headers=relay.auth("dp1"), timeout=(5, 120))
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["len"] == len(body)
    assert got["sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.timeout(180)
def test_large_download_50mb(relay, static_server, agent_factory):
    root, port, _ = static_server()
    data = os.urandom(50 * 1024 * 1024)
    (root / "big.bin").write_bytes(data)
    agent_factory(relay, "dl1", port)
    before = relay.metrics()
    r = requests.get(relay.dev_url("dl1", "/big.bin"), headers=relay.auth("dl1"), stream=True, timeout=(5, 60))
    assert r.status_code == 200
    h = hashlib.sha256()
    n = 0
    for chunk in r.iter_content(1 << 20):
        h.update(chunk)
        n += len(chunk)
    assert n == len(data)
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()
    m = relay.metrics()
    assert m("relay_relayed_bytes_total", direction="to_terminal") - \
        before("relay_relayed_bytes_total", direction="to_terminal") >= len(data)
    assert m("relay_spliced_bodies_total") - before("relay_spliced_bodies_total") == 1  # in the kernel


def test_upgrade_turns_connection_into_byte_stream(relay, agent_factory, cleanup):
    srv = UpgradeEchoServer().start()
    cleanup.append(srv.stop)
    agent_factory(relay, "ws1", srv.port)
    tok = relay.token("ws1")
    s = connect(relay.host, relay.http_port, 20)
    try:
        s.sendall(http_request_bytes("GET", "/d/ws1/ws", f"127.0.0.1:{relay.http_port}",
                                     [("Authorization", f"Bearer {tok}"), ("Connection", "Upgrade"),
                                      ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
                                      ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]))
        reader = rp.StreamReader(s)
        head = reader.read_until(b"\r\n\r\n")
        assert head is not None and head.startswith(b"HTTP/1.1 101"), head
        assert reader.read_exact(len(UpgradeEchoServer.BANNER)) == UpgradeEchoServer.BANNER  # device -> terminal
        s.sendall(b"ping-123")
        assert reader.read_exact(8) == b"ping-123"
        blob = os.urandom(256 * 1024)
        s.sendall(blob)
        assert reader.read_exact(len(blob)) == blob
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")  # after the upgrade, HTTP-looking bytes are just bytes
        assert reader.read_exact(18) == b"GET / HTTP/1.1\r\n\r\n"
    finally:
        s.close()
    dev_head = srv.heads[0].decode("latin-1")
    assert dev_head.startswith("GET /ws HTTP/1.1")
    assert "authorization" not in dev_head.lower() and tok not in dev_head
    assert "upgrade: websocket" in dev_head.lower()
