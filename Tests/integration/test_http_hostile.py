"""Hostile terminals and confused parsers on the terminal side: every request head that reaches
a device was routed, authorized and found live by itself, carries none of the relay's
credentials nor forwarding headers a terminal made up, and reads the same to the relay and to
the device. The device here is a FakeDevice whose link the test reads byte for byte."""

from __future__ import annotations

import socket
import time

import pytest

import relayproto as rp
from helpers import connect
from test_tls import pki  # noqa: F401  (fixture)

T = 10
HOST_ID = "h1"


@pytest.fixture
def hrelay(relay_factory):
    return relay_factory("--wake-timeout", "5s", "--header-timeout", "1s")


@pytest.fixture
def dev(hrelay, fake_devices):
    """A live fake device (registered, one NOTIFY_A)."""
    d = hrelay.fake_device(HOST_ID)
    fake_devices.append(d)
    before = hrelay.metrics()
    d.notify_a()
    hrelay.wait_delta(before, "relay_notify_total", kind="a")
    return d


class Conn:
    """A terminal connection and, once the device called back, its link, both read raw."""

    def __init__(self, relay, dev, first: bytes, bind: bool = True, may_refuse_link: bool = False):
        self.relay, self.dev = relay, dev
        self.term = connect(relay.host, relay.http_port, T)
        self.tr = rp.StreamReader(self.term)
        self.term.sendall(first)
        self.link = self.lr = None
        if bind:
            cr = dev.wait_connect_request(0, timeout=5)
            self.link, status = dev.callback(cr)
            if status is None and may_refuse_link:  # the relay dropped the link at once
                self.link.close()
                self.link = None
                return
            assert status == rp.STATUS_BOUND
            self.link.settimeout(T)
            self.lr = rp.StreamReader(self.link)

    def device_request(self) -> rp.HttpMessage:
        msg = rp.read_http_message(self.lr)
        assert msg is not None, "the link closed before a request"
        return msg

    def respond(self, status=200, body=b"ok", headers=None, raw: bytes | None = None):
        self.link.sendall(raw if raw is not None else rp.build_response(status, body, headers))

    def response(self, method="GET") -> rp.HttpMessage | None:
        return rp.read_http_message(self.tr, is_response=True, request_method=method)

    def device_got_nothing(self, wait: float = 0.6) -> bool:
        """Nothing more arrives on the link within `wait` (EOF counts as nothing)."""
        if self.lr.buf:
            return False
        self.link.settimeout(wait)
        try:
            return self.link.recv(65536) == b""
        except socket.timeout:
            return True
        except ConnectionResetError:
            return True
        finally:
            self.link.settimeout(T)

    def close(self):
        for s in (self.term, self.link):
            if s:
                s.close()


def req(target: str, host: str = "relay.test", headers=(), method="GET", body=b"", version="1.1") -> bytes:
    hs = list(headers)
    if body:
        hs.append(("Content-Length", str(len(body))))
    head = f"{method} {target} HTTP/{version}\r\n" + (f"Host: {host}\r\n" if host else "")
    head += "".join(f"{k}: {v}\r\n" for k, v in hs) + "\r\n"
    return head.encode("latin-1") + body


def bearer(relay, device_id=HOST_ID):
    return ("Authorization", "Bearer " + relay.token(device_id))


def no_wake(dev, duration=0.5):
    assert dev.drain(0, duration) == [], "a refused request woke the device"


# ---------------------------------------------------------------- 4: Upgrade without 101


def test_upgrade_answered_without_101_keeps_checking_every_head(hrelay, dev):
    up = req(f"/d/{HOST_ID}/ws", headers=[bearer(hrelay), ("Upgrade", "foo"), ("Connection", "Upgrade")])
    sneak = req(f"/d/{HOST_ID}/secret")  # no token, pipelined before the device answered
    c = Conn(hrelay, dev, up + sneak)
    try:
        first = c.device_request()
        assert first.target == "/ws" and first.header("upgrade") == "foo"
        assert c.device_got_nothing(), "a request pipelined after an Upgrade went out before its answer"
        c.respond(200, b"no upgrade")
        assert c.response().status == 200
        r = c.response()
        assert r is not None and r.status == 401, "the next head was not checked after a 200 to an Upgrade"
        assert c.device_got_nothing()
    finally:
        c.close()


def test_upgrade_request_body_stays_framed_until_the_101(hrelay, dev):
    up = req(f"/d/{HOST_ID}/ws", method="POST", body=b"hello",
             headers=[bearer(hrelay), ("Upgrade", "foo"), ("Connection", "Upgrade")])
    c = Conn(hrelay, dev, up + b"EARLY")
    try:
        first = c.device_request()
        assert first.body == b"hello"
        assert c.device_got_nothing(), "bytes after the Upgrade request's body went out before the 101"
        c.respond(raw=b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\n")
        assert c.response().status == 101
        assert c.lr.read_exact(5) == b"EARLY"  # opaque from the 101 on, both ways
        c.term.sendall(b"GET / HTTP/1.1\r\n\r\n")  # not a head any more: the new protocol's bytes
        assert c.lr.read_exact(18) == b"GET / HTTP/1.1\r\n\r\n"
        c.link.sendall(b"pong")
        assert c.tr.read_exact(4) == b"pong"
    finally:
        c.close()


# ---------------------------------------------------------------- 5: relay credentials


def test_device_never_sees_a_relay_token(hrelay, dev):
    tok = hrelay.token(HOST_ID)
    target = (f"/d/{HOST_ID}/p?relay_token={tok}&a=1&relay_token=other&relay%5Ftoken={tok}&b=2"
              f"&relay_token")
    hs = [("Authorization", f"Bearer {tok}"), ("Cookie", f"relay_token={tok}; k=v; relay_token=second"),
          ("Cookie", f"x=1; Relay_Token = {tok}")]
    c = Conn(hrelay, dev, req(target, headers=hs))
    try:
        got = c.device_request()
        assert got.target == "/p?a=1&b=2"
        assert got.header_all("cookie") == ["k=v", "x=1"]
        assert got.header("authorization") is None
        assert tok not in got.raw_head.decode("latin-1")
        assert "relay_token" not in got.raw_head.decode("latin-1").lower()
    finally:
        c.close()


def test_cookie_authenticated_request_keeps_other_authorization(hrelay, dev):
    tok = hrelay.token(HOST_ID)
    host = f"{HOST_ID}.localhost:{hrelay.http_port}"
    hs = [("Authorization", "Basic dXNlcjpwdw=="), ("Cookie", f"relay_token={tok}")]
    c = Conn(hrelay, dev, req("/p", host=host, headers=hs))
    try:
        got = c.device_request()
        assert got.header("authorization") == "Basic dXNlcjpwdw=="
        assert got.header("cookie") is None
        assert tok not in got.raw_head.decode("latin-1")
    finally:
        c.close()


# ---------------------------------------------------------------- 6: forwarding headers


@pytest.mark.parametrize("routing", ["path", "host"])
def test_forwarding_headers_are_the_relays(hrelay, dev, routing):
    made_up = [("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-For", "10.0.0.2"), ("Forwarded", "for=10.0.0.3"),
               ("X-Forwarded-Prefix", "/evil"), ("X-Forwarded-Prefix", "/evil2"), ("X-Forwarded-Host", "evil.example"),
               ("X-Forwarded-Proto", "https"), ("X-Real-IP", "10.0.0.4"), ("X-Forwarded-Port", "1")]
    host = f"{HOST_ID}.localhost:{hrelay.http_port}" if routing == "host" else "relay.test"
    target = "/x" if routing == "host" else f"/d/{HOST_ID}/x"
    c = Conn(hrelay, dev, req(target, host=host, headers=[bearer(hrelay)] + made_up))
    try:
        got = c.device_request()
        assert got.header_all("x-forwarded-for") == ["10.0.0.1, 10.0.0.2, 127.0.0.1"]
        assert got.header_all("forwarded") == [f'for=10.0.0.3, for=127.0.0.1;proto=http;host="{host}"']
        assert got.header_all("x-forwarded-proto") == ["http"]
        assert got.header_all("x-forwarded-host") == [host]
        assert got.header_all("x-real-ip") == ["127.0.0.1"]
        assert got.header_all("x-forwarded-port") == []
        assert got.header_all("x-forwarded-prefix") == ([f"/d/{HOST_ID}"] if routing == "path" else [])
    finally:
        c.close()


# ---------------------------------------------------------------- 7: one reading of every head


HOSTILE_HEADS = {
    "obs_fold": b"GET /d/h1/ HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n x\r\n\r\n",
    "obs_fold_tab": b"GET /d/h1/ HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\tGET /d/h1/x HTTP/1.1\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\nHost: h1.localhost\r\nHost: other.localhost\r\n\r\n",
    "cl_and_te": b"POST /d/h1/ HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
    "two_cl": b"POST /d/h1/ HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
    "cl_list": b"POST /d/h1/ HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\n",
    "cl_sign": b"POST /d/h1/ HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\n",
    "te_gzip": b"POST /d/h1/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "te_twice": b"POST /d/h1/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    "te_http10": b"POST /d/h1/ HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    "bare_lf": b"GET /d/h1/ HTTP/1.1\nHost: a\r\nX-A: 1\r\n\r\n",
    "bare_cr": b"GET /d/h1/ HTTP/1.1\r\nHost: a\rX-A: 1\r\n\r\n",
    "space_before_colon": b"GET /d/h1/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
    "nul_in_value": b"GET /d/h1/ HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n",
    "ctl_in_value": b"GET /d/h1/ HTTP/1.1\r\nHost: a\r\nX-A: 1\x0b2\r\n\r\n",
    "tab_in_target": b"GET /d/h1/\tx HTTP/1.1\r\nHost: a\r\n\r\n",
    "fragment": b"GET /d/h1/#x HTTP/1.1\r\nHost: a\r\n\r\n",
    "two_spaces": b"GET  /d/h1/ HTTP/1.1\r\nHost: a\r\n\r\n",
    "http2": b"GET /d/h1/ HTTP/2.0\r\nHost: a\r\n\r\n",
    "userinfo": b"GET http://user@h1.localhost/ HTTP/1.1\r\nHost: a\r\n\r\n",
    "host_slash": b"GET /d/h1/ HTTP/1.1\r\nHost: a/b\r\n\r\n",
    "host_backslash": b"GET /d/h1/ HTTP/1.1\r\nHost: a\\b\r\n\r\n",
    "host_at": b"GET /d/h1/ HTTP/1.1\r\nHost: a@b\r\n\r\n",
    "two_authorizations": b"GET /d/h1/ HTTP/1.1\r\nHost: a\r\nAuthorization: Basic x\r\nAuthorization: Bearer y\r\n\r\n",
    "connect": b"CONNECT h1.localhost:80 HTTP/1.1\r\nHost: h1.localhost:80\r\n\r\n",
    "asterisk": b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_HEADS))
def test_ambiguous_head_is_refused_400(hrelay, dev, name):
    head = HOSTILE_HEADS[name]
    tok = hrelay.token(HOST_ID).encode()
    if b"Authorization" not in head:  # authorized in every other respect
        head = head.replace(b"\r\n", b"\r\nAuthorization: Bearer " + tok + b"\r\n", 1)
    c = Conn(hrelay, dev, head, bind=False)
    try:
        r = c.response()
        assert r is not None and r.status == 400, (name, r and r.start_line, r and r.body)
        no_wake(dev)
    finally:
        c.close()


def test_ambiguous_head_on_a_keep_alive_connection_is_refused(hrelay, dev):
    tok = hrelay.token(HOST_ID)
    good = req(f"/d/{HOST_ID}/1", headers=[("Authorization", f"Bearer {tok}")])
    folded = (f"GET /d/{HOST_ID}/2 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {tok}\r\nX-A: 1\r\n"
              f" GET /d/{HOST_ID}/3 HTTP/1.1\r\n\r\n").encode()
    c = Conn(hrelay, dev, good + folded)
    try:
        assert c.device_request().target == "/1"
        c.respond()
        assert c.response().status == 200
        r = c.response()
        assert r is not None and r.status == 400 and b"obs-fold" in r.body
        assert c.device_got_nothing()
    finally:
        c.close()


def test_absolute_form_is_routed_by_its_authority(hrelay, dev):
    authority = f"{HOST_ID}.localhost:{hrelay.http_port}"
    c = Conn(hrelay, dev, req(f"http://{authority}/p?q=1", host="other.example", headers=[bearer(hrelay)]))
    try:
        got = c.device_request()
        assert got.start_line == "GET /p?q=1 HTTP/1.1"
        assert got.header_all("host") == [authority]
        c.respond()
        assert c.response().status == 200
        # path routing inside an absolute URL, and an empty path
        c.term.sendall(req(f"HTTP://127.0.0.1:{hrelay.http_port}/d/{HOST_ID}?z=2", headers=[bearer(hrelay)]))
        r = c.response()
        assert r.status == 308 and r.header("location") == f"/d/{HOST_ID}/?z=2"
    finally:
        c.close()


# ---------------------------------------------------------------- 8: header timeout per head


@pytest.mark.timeout(60)
def test_every_head_has_the_header_timeout(hrelay, dev):
    c = Conn(hrelay, dev, req(f"/d/{HOST_ID}/1", headers=[bearer(hrelay)]))
    try:
        c.device_request()
        c.respond()
        assert c.response().status == 200
        before = hrelay.metrics()
        second = req(f"/d/{HOST_ID}/2", headers=[bearer(hrelay)])
        t0 = time.monotonic()
        got = b""
        for i in range(len(second)):  # one byte every 0.25 s: never a complete head within 1 s
            try:
                c.term.sendall(second[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            c.term.settimeout(0.25)
            try:
                d = c.term.recv(4096)
            except socket.timeout:
                continue
            except ConnectionResetError:
                break
            got += d
            if not d or b"408" in got:
                break
            if time.monotonic() - t0 > 10:
                break
        elapsed = time.monotonic() - t0
        assert got.startswith(b"HTTP/1.1 408 "), got
        assert elapsed < 4, elapsed
        assert rp.closed_by_peer(c.term, 3)
        hrelay.wait_metric("relay_sessions_active", lambda v: v == 0, timeout=3)
        assert hrelay.metrics()("relay_requests_refused_total", reason="bad_request") > before(
            "relay_requests_refused_total", reason="bad_request")
    finally:
        c.close()


# ---------------------------------------------------------------- 9: Connection: close


@pytest.mark.parametrize("how", ["close", "http10"])
def test_last_request_closes_the_connection_after_its_response(hrelay, dev, how):
    tok = hrelay.token(HOST_ID)
    if how == "close":
        last = req(f"/d/{HOST_ID}/1", headers=[("Authorization", f"Bearer {tok}"), ("Connection", "close")])
    else:
        last = req(f"/d/{HOST_ID}/1", headers=[("Authorization", f"Bearer {tok}")], version="1.0")
    after = req(f"/d/{HOST_ID}/2", headers=[("Authorization", f"Bearer {tok}")])
    c = Conn(hrelay, dev, last + after)
    try:
        assert c.device_request().target == "/1"
        c.respond()
        assert c.response().status == 200
        assert rp.closed_by_peer(c.term, 3), "the terminal's connection stayed open after its last request"
        assert c.device_got_nothing(), "a request pipelined after the last one was forwarded"
    finally:
        c.close()


def test_device_saying_close_closes_the_terminal_after_that_response(hrelay, dev):
    c = Conn(hrelay, dev, req(f"/d/{HOST_ID}/1", headers=[bearer(hrelay)]))
    try:
        c.device_request()
        c.respond(headers=[("Connection", "close")])  # the link itself stays open
        r = c.response()
        assert r.status == 200 and r.header("connection") == "close"
        assert rp.closed_by_peer(c.term, 3)
        assert rp.closed_by_peer(c.link, 3), "a link whose device said close was kept"
    finally:
        c.close()


# ---------------------------------------------------------------- 10: same-origin redirects


@pytest.mark.parametrize("path", ["//evil.example/x", "/\\evil.example/x", "/\\/evil.example/x", "///evil.example/x"])
def test_token_trade_redirect_stays_on_the_origin(hrelay, dev, path):
    tok = hrelay.token(HOST_ID)
    host = f"{HOST_ID}.localhost:{hrelay.http_port}"
    c = Conn(hrelay, dev, req(f"{path}?relay_token={tok}&k=1", host=host), bind=False)
    try:
        r = c.response()
        assert r.status == 302, r.body
        loc = r.header("location")
        assert loc == "/evil.example/x?k=1", loc
    finally:
        c.close()


# ---------------------------------------------------------------- 12: no device oracle


def test_forged_token_for_an_existing_other_device_is_401_not_403(hrelay, dev):
    hrelay.add_device("other1")
    genuine = hrelay.token("other1")
    d, exp, tid, mac = genuine.split(".")
    forged = f"{d}.{exp}.{tid}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"
    ghost = f"ghost1.{exp}.{tid}.{mac}"
    answers = {}
    for name, tok in (("genuine", genuine), ("forged", forged), ("ghost", ghost)):
        c = Conn(hrelay, dev, req(f"/d/{HOST_ID}/", headers=[("Authorization", f"Bearer {tok}")]), bind=False)
        try:
            r = c.response()
            answers[name] = (r.status, r.body)
        finally:
            c.close()
    assert answers["genuine"][0] == 403
    assert answers["forged"] == answers["ghost"] == (401, b"invalid token\n")
    no_wake(dev)


@pytest.mark.parametrize("host", ["evil.example/x", "evil.example\\x", "user@evil.example", "a b"])
def test_https_redirect_names_only_a_checked_host(relay_factory, pki, host):
    from test_tls import DOMAIN, tls_relay
    relay = tls_relay(relay_factory, pki)
    s = connect(relay.host, relay.http_port, T)
    try:
        s.sendall(f"GET /a HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        r = rp.read_http_message(rp.StreamReader(s), is_response=True)
        assert r is not None and r.status == 400 and r.header("location") is None, (host, r and r.start_line)
        s2 = connect(relay.host, relay.http_port, T)
        s2.sendall(f"GET //evil.example/x HTTP/1.1\r\nHost: cam1.{DOMAIN}\r\n\r\n".encode())
        r = rp.read_http_message(rp.StreamReader(s2), is_response=True)
        s2.close()
        assert r.status == 308 and r.header("location").startswith(f"https://cam1.{DOMAIN}:"), r.header("location")
    finally:
        s.close()


@pytest.mark.parametrize("body", [b"5;x\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n", b"5\r\nhello\r\n0\r\nX: 1\n\r\n",
                                  b"5\r\nhello\r\n0\r\n Y: 1\r\n\r\n"], ids=["lf_in_ext", "no_crlf_after_data",
                                                                             "bare_lf_trailer", "folded_trailer"])
def test_chunked_body_the_device_could_read_otherwise_ends_the_connection(hrelay, dev, body):
    tok = hrelay.token(HOST_ID)
    smuggled = f"GET /d/{HOST_ID}/smuggled HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    head = req(f"/d/{HOST_ID}/up", method="POST", headers=[("Authorization", f"Bearer {tok}"),
                                                           ("Transfer-Encoding", "chunked")])
    c = Conn(hrelay, dev, head + body + smuggled, may_refuse_link=True)
    try:
        if c.link is None:  # the terminal's bytes were judged as the link bound: it never spoke
            assert rp.closed_by_peer(c.term, 3)
            return
        got = c.lr.read_until(b"\r\n\r\n")
        assert got and got.startswith(b"POST /up HTTP/1.1\r\n")
        rest = c.lr.read_to_eof()  # the relay closes the link: a body it cannot frame strictly
        assert b"smuggled" not in rest and len(rest) < len(body), rest
        assert rp.closed_by_peer(c.term, 3)
    finally:
        c.close()


@pytest.mark.timeout(60)
def test_connection_left_between_requests_is_closed_at_the_idle_timeout(relay_factory, fake_devices):
    # The device closes its link after answering (without saying so): the terminal keeps its
    # connection for a next request, but not forever, and not with a trickled head.
    relay = relay_factory("--wake-timeout", "5s", "--header-timeout", "1s", "--idle-timeout", "2s")
    d = relay.fake_device(HOST_ID)
    fake_devices.append(d)
    d.notify_a()
    c = Conn(relay, d, req(f"/d/{HOST_ID}/1", headers=[bearer(relay)]))
    try:
        c.device_request()
        c.respond()
        assert c.response().status == 200
        c.link.close()
        c.link = None
        t0 = time.monotonic()
        assert rp.closed_by_peer(c.term, 6), "an idle connection between requests was kept"
        assert 1.5 <= time.monotonic() - t0 < 5
    finally:
        c.close()
