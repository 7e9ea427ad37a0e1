"""Self-tests of relayproto.py (no relay binary needed): round trips, lengths, and MACs
checked against an HMAC computed by hand from the RFC 2104 definition with hashlib."""

import hashlib
import os
import socket
import struct
import threading

import pytest

import relayproto as rp


def hmac_sha256_by_hand(key: bytes, msg: bytes) -> bytes:
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    ipad = bytes(b ^ 0x36 for b in key)
    opad = bytes(b ^ 0x5C for b in key)
    return hashlib.sha256(opad + hashlib.sha256(ipad + msg).digest()).digest()


SECRET_HEX = bytes(range(32)).hex()


def test_hmac_by_hand_matches_rfc4231_case2():
    # RFC 4231 test case 2
    got = hmac_sha256_by_hand(b"Jefe", b"what do ya want for nothing?").hex()
    assert got == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_device_key_derivation():
    k = rp.derive_key(SECRET_HEX)
    assert len(k) == 16
    assert k == hmac_sha256_by_hand(bytes(range(32)), b"relay device key v1")[:16]
    assert rp.derive_key(bytes(range(32))) == k
    with pytest.raises(ValueError):
        rp.derive_key("abcd")


def test_datagram_lengths_match_table():
    n = len("dev-1")
    k = rp.derive_key(SECRET_HEX)
    req, nonce = rp.period_request("dev-1", k, counter=0x0102030405060708)
    assert len(req) == 44 + n
    assert req[4 + n : 4 + n + 8] == nonce
    assert req[4 + n + 8 : 4 + n + 16] == bytes(range(1, 9))  # the counter, big-endian
    assert req[4 + n + 16 : 4 + n + 24] == bytes(8)
    assert len(rp.period_info("dev-1", k, nonce, 1, 2, 3, 4)) == 44 + n
    assert len(rp.notify("dev-1", k, 1, 2, "A")) == 32 + n
    assert len(rp.notify("dev-1", k, 1, 2, "B")) == 32 + n
    assert len(rp.resync("dev-1", k, 1, 2)) == 32 + n
    assert len(rp.connect_request("dev-1", k, bytes(16), bytes(16), 9)) == 56 + n


def test_notify_layout_and_tag():
    k = rp.derive_key(SECRET_HEX)
    d = rp.notify("abc", k, 0xDEADBEEF, 0x0102030405060708, "A")
    assert d[:4] == bytes([0x52, 0x02, 0x03, 3])
    assert d[4:7] == b"abc"
    assert d[7:11] == bytes.fromhex("deadbeef")
    assert d[11:19] == bytes.fromhex("0102030405060708")
    assert d[19:] == hmac_sha256_by_hand(k, d[:19])[:16]
    assert rp.notify("abc", k, 1, 1, "B")[2] == 0x04
    dec = rp.decode(d, k)
    assert dec.dtype == rp.NOTIFY_A and dec.device_id == "abc"
    assert struct.unpack(">IQ", dec.body) == (0xDEADBEEF, 0x0102030405060708)


def test_period_info_round_trip_and_nonce_check():
    k = rp.derive_key(SECRET_HEX)
    _, nonce = rp.period_request("dev", k)
    pi = rp.period_info("dev", k, nonce, 0xAABBCCDD, 300, 25, 4433)
    info = rp.parse_period_info(pi, k, nonce)
    assert (info.epoch, info.period, info.keepalive, info.callback_port, info.flags) == (0xAABBCCDD, 300, 25, 4433, 0)
    with pytest.raises(rp.ProtocolError):
        rp.parse_period_info(pi, k, os.urandom(8))
    with pytest.raises(rp.ProtocolError):
        rp.parse_period_info(pi, rp.derive_key(os.urandom(32)), nonce)


def test_resync_and_connect_request_round_trip():
    k = rp.derive_key(SECRET_HEX)
    r = rp.parse_resync(rp.resync("d", k, 77, 99), k)
    assert (r.counter, r.epoch) == (77, 99)
    sid, nonce = os.urandom(16), os.urandom(16)
    raw = rp.connect_request("d", k, sid, nonce, 5555)
    cr = rp.parse_connect_request(raw, k)
    assert (cr.session_id, cr.nonce, cr.callback_port, cr.reserved) == (sid, nonce, 5555, 0)
    assert raw[-16:] == hmac_sha256_by_hand(k, raw[:-16])[:16]


@pytest.mark.parametrize("mutate", [
    lambda d: d[:-1],  # truncated
    lambda d: d + b"\0",  # oversized
    lambda d: b"X" + d[1:],  # wrong magic
    lambda d: d[:1] + b"\x01" + d[2:],  # the old version
    lambda d: d[:1] + b"\x03" + d[2:],  # an unknown version
    lambda d: d[:2] + b"\x0a" + d[3:],  # unknown type
    lambda d: d[:3] + b"\x00" + d[4:],  # id length 0
    lambda d: d[:3] + b"\x40" + d[4:],  # id length 64
    lambda d: b"",
])
def test_decode_rejects_malformed(mutate):
    k = rp.derive_key(SECRET_HEX)
    with pytest.raises(rp.ProtocolError):
        rp.decode(mutate(rp.notify("dev", k, 1, 2)), k)


def test_decode_rejects_bad_tag():
    k = rp.derive_key(SECRET_HEX)
    d = bytearray(rp.notify("dev", k, 1, 2))
    d[-1] ^= 1
    with pytest.raises(rp.ProtocolError):
        rp.decode(bytes(d), k)
    rp.decode(bytes(d))  # structure alone is fine


def test_callback_proof_and_hello():
    k = rp.derive_key(SECRET_HEX)
    sid, nonce = os.urandom(16), os.urandom(16)
    proof = rp.callback_proof(k, sid, nonce)
    assert proof == hmac_sha256_by_hand(k, b"relay callback v1" + sid + nonce)
    h = rp.hello("my-dev", sid, proof)
    assert h[:4] == b"RLY1" and h[4] == 6 and len(h) == 4 + 1 + 6 + 16 + 32
    assert rp.parse_hello(h) == ("my-dev", sid, proof)


def test_token_parse_and_mac():
    k = rp.derive_key(SECRET_HEX)
    tk = bytes(range(32, 64))
    mac = rp.token_mac(tk, "dev", 1700000000, "0123456789abcdef", k)
    import base64
    raw = hmac_sha256_by_hand(tk, b"relay token v1\x00dev.1700000000.0123456789abcdef" + k)[:16]
    assert mac == base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    t = rp.parse_token(f"dev.1700000000.0123456789abcdef.{mac}")
    assert (t.device_id, t.expiry, t.tid) == ("dev", 1700000000, "0123456789abcdef")
    for bad in ["", "a.b.c", "dev.x.0123456789abcdef." + mac, "dev.1.0123.x", "-x.1.0123456789abcdef." + mac]:
        with pytest.raises(ValueError):
            rp.parse_token(bad)


def test_device_id_rules():
    assert rp.valid_device_id("a") and rp.valid_device_id("a-1") and rp.valid_device_id("x" * 63)
    for bad in ["", "-a", "a-", "A", "a_b", "x" * 64, "a.b"]:
        assert not rp.valid_device_id(bad)


def test_http_message_reader_content_length_and_chunked():
    a, b = socket.socketpair()
    try:
        b.sendall(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                  b"POST /y HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3;x=1\r\nllo\r\n0\r\n\r\n")
        b.shutdown(socket.SHUT_WR)
        r = rp.StreamReader(a)
        m1 = rp.read_http_message(r)
        m2 = rp.read_http_message(r)
        assert (m1.method, m1.target, m1.body) == ("POST", "/x", b"abc")
        assert (m2.target, m2.body, m2.chunked) == ("/y", b"hello", True)
        assert rp.read_http_message(r) is None
    finally:
        a.close()
        b.close()


def test_fake_device_against_a_fake_relay():
    """Drives FakeDevice against a minimal relay written here: register, notify, connect
    request, callback hello verification, and HTTP on the link."""
    secret = os.urandom(32).hex()
    k = rp.derive_key(secret)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(4)
    cb_port = tcp.getsockname()[1]
    udp.settimeout(5)
    tcp.settimeout(5)
    sid, nonce = os.urandom(16), os.urandom(16)
    result = {}

    def relay():
        data, addr = udp.recvfrom(2048)
        d = rp.decode(data, k)
        assert d.dtype == rp.PERIOD_REQUEST
        udp.sendto(rp.period_info("dev", k, d.body[:8], 1234, 300, 25, cb_port), addr)
        data, addr = udp.recvfrom(2048)
        d = rp.decode(data, k)
        assert d.dtype == rp.NOTIFY_A and struct.unpack(">IQ", d.body)[0] == 1234
        udp.sendto(rp.connect_request("dev", k, sid, nonce, cb_port), addr)
        c, _ = tcp.accept()
        c.settimeout(5)
        h = b""
        while len(h) < 4 + 1 + 3 + 48:
            h += c.recv(100)
        result["hello"] = rp.parse_hello(h)
        c.sendall(b"\x00")
        c.sendall(b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n")
        r = rp.StreamReader(c)
        result["resp"] = rp.read_http_message(r, is_response=True)
        c.close()

    t = threading.Thread(target=relay, daemon=True)
    t.start()
    dev = rp.FakeDevice("dev", secret, udp.getsockname())
    try:
        info = dev.register()
        assert info.epoch == 1234 and info.callback_port == cb_port
        dev.notify_a()
        cr = dev.wait_connect_request()
        assert cr.session_id == sid and cr.src == udp.getsockname()
        link, status = dev.callback(cr)
        assert status == rp.STATUS_BOUND
        dev.serve_link(link, cr.sid_hex, keep_alive=False)
        link.close()
        t.join(5)
        assert result["hello"] == ("dev", sid, rp.callback_proof(k, sid, nonce))
        assert result["resp"].status == 200 and result["resp"].body == b"fake-device GET /p"
    finally:
        dev.close()
        udp.close()
        tcp.close()
