"""Device-side implementation of the relay wire protocol (docs/PROTOCOL.md, version 1).

Written from the spec only, independently of the relay's C core, so that the integration
tests can act as a device: register, notify, receive and verify connection requests, call
back over TCP, and serve HTTP on the device link. Every encoder takes overrides so tests can
forge, replay, truncate and corrupt datagrams and hellos on purpose.

All integers are unsigned big-endian; HMAC is HMAC-SHA256.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

MAGIC = 0x52
VERSION = 0x02
VERSION_OLD = 0x01  # refused by the relay (counted as old_version, logged when genuine)

PERIOD_REQUEST = 0x01
PERIOD_INFO = 0x02
NOTIFY_A = 0x03
NOTIFY_B = 0x04
RESYNC = 0x05
CONNECT_REQUEST = 0x06
NOTIFY_ACK = 0x07
LEAVE = 0x08
REJECT = 0x09
NOTIFY_ACK_MOVED = 0x0A  # NOTIFY_ACK of a notify that moved the anchor: confirm the mapping soon
CONNECT_REQUEST_TO = 0x0B  # a cluster node's CONNECT_REQUEST naming another node to call back to

CAP_CONNECT_TO = 0x01  # PERIOD_REQUEST capabilities (the byte after the counter): takes 0x0B
PERIOD_INFO_CLUSTERED = 0x0001  # PERIOD_INFO flags: the relay is a node of a cluster

TYPE_NAMES = {
    PERIOD_REQUEST: "PERIOD_REQUEST",
    PERIOD_INFO: "PERIOD_INFO",
    NOTIFY_A: "NOTIFY_A",
    NOTIFY_B: "NOTIFY_B",
    RESYNC: "RESYNC",
    CONNECT_REQUEST: "CONNECT_REQUEST",
    NOTIFY_ACK: "NOTIFY_ACK",
    LEAVE: "LEAVE",
    REJECT: "REJECT",
    NOTIFY_ACK_MOVED: "NOTIFY_ACK_MOVED",
    CONNECT_REQUEST_TO: "CONNECT_REQUEST_TO",
}

# Body length per type (between the device ID and the 16-byte tag).
BODY_LEN = {
    PERIOD_REQUEST: 24,  # client nonce (8) || counter (8) || capabilities (1) || 7 zero bytes
    PERIOD_INFO: 24,  # nonce 8, epoch 4, period 4, keepalive 4, cb port 2, flags 2
    NOTIFY_A: 12,  # epoch 4, counter 8
    NOTIFY_B: 12,
    RESYNC: 12,  # echoed counter 8, current epoch 4
    CONNECT_REQUEST: 36,  # session ID 16, nonce 16, cb port 2, reserved 2
    NOTIFY_ACK: 12,  # echoed counter 8, current epoch 4
    LEAVE: 12,  # epoch 4, counter 8
    REJECT: 24,  # echoed client nonce 8, 16 zero bytes (and a zero tag)
    NOTIFY_ACK_MOVED: 12,
    CONNECT_REQUEST_TO: 52,  # as CONNECT_REQUEST, then the callback address 16 (IPv4 as ::ffff:a.b.c.d)
}
TAG_LEN = 16
HEADER_LEN = 4  # magic, version, type, n

HELLO_MAGIC = b"RLY1"
SESSION_ID_LEN = 16
NONCE_LEN = 16
PROOF_LEN = 32

STATUS_BOUND = 0x00
STATUS_MALFORMED = 0x01
STATUS_UNKNOWN_SESSION = 0x02
STATUS_BAD_PROOF = 0x03
STATUS_ALREADY_LINKED = 0x04
STATUS_BAD_CERT = 0x05
STATUS_BUSY_SOURCE = 0x06  # too many unfinished callbacks from this address

DEVICE_KEY_LABEL = b"relay device key v1"
CALLBACK_LABEL = b"relay callback v1"
TOKEN_LABEL = b"relay token v1"


class ProtocolError(Exception):
    pass


def total_len(dtype: int, id_len: int) -> int:
    return HEADER_LEN + id_len + BODY_LEN[dtype] + TAG_LEN


# ---------------------------------------------------------------- keys and MACs


def secret_bytes(secret) -> bytes:
    """Accepts the 64-hex-digit text printed by `relay device add` or raw bytes."""
    if isinstance(secret, (bytes, bytearray)):
        if len(secret) != 32:
            raise ValueError("device secret must be 32 bytes")
        return bytes(secret)
    s = secret.strip()
    if len(s) != 64:
        raise ValueError("device secret must be 64 hex digits")
    return bytes.fromhex(s)


def derive_key(secret) -> bytes:
    """K = HMAC(secret, "relay device key v1")[0..16]."""
    return hmac.new(secret_bytes(secret), DEVICE_KEY_LABEL, hashlib.sha256).digest()[:16]


def mac16(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:TAG_LEN]


def callback_proof(key: bytes, session_id: bytes, nonce: bytes) -> bytes:
    """proof = HMAC(K, "relay callback v1" || session ID || nonce), all 32 bytes."""
    return hmac.new(key, CALLBACK_LABEL + session_id + nonce, hashlib.sha256).digest()


def token_mac(token_key: bytes, device_id: str, expiry: int, tid_hex: str, device_key: bytes) -> str:
    msg = (
        TOKEN_LABEL
        + b"\x00"
        + device_id.encode()
        + b"."
        + str(expiry).encode()
        + b"."
        + tid_hex.encode()
        + device_key
    )
    d = hmac.new(token_key, msg, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(d).rstrip(b"=").decode()


@dataclass
class Token:
    device_id: str
    expiry: int
    tid: str
    mac: str


def parse_token(text: str) -> Token:
    """Parses `<id>.<expiry>.<tid>.<mac>`; raises ValueError when malformed."""
    parts = text.strip().split(".")
    if len(parts) != 4:
        raise ValueError(f"token needs 4 dot-separated fields: {text!r}")
    dev, exp, tid, mac = parts
    if not valid_device_id(dev):
        raise ValueError(f"bad device id in token: {dev!r}")
    if not exp.isdigit():
        raise ValueError(f"bad expiry in token: {exp!r}")
    if len(tid) != 16 or any(c not in "0123456789abcdef" for c in tid.lower()):
        raise ValueError(f"bad tid in token: {tid!r}")
    raw = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
    if len(raw) != 16 or "=" in mac:
        raise ValueError(f"bad mac in token: {mac!r}")
    return Token(dev, int(exp), tid, mac)


def valid_device_id(s: str) -> bool:
    if not 1 <= len(s) <= 63:
        return False
    if s[0] == "-" or s[-1] == "-":
        return False
    return all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in s)


# ---------------------------------------------------------------- datagram frame


def encode(dtype: int, device_id, body: bytes, key: Optional[bytes], *, magic=MAGIC,
           version=VERSION, id_len: Optional[int] = None, tag: Optional[bytes] = None) -> bytes:
    """Builds a datagram. `key=None` with no `tag` gives 16 zero bytes as the tag."""
    did = device_id.encode() if isinstance(device_id, str) else bytes(device_id)
    n = len(did) if id_len is None else id_len
    head = bytes([magic & 0xFF, version & 0xFF, dtype & 0xFF, n & 0xFF]) + did + body
    if tag is None:
        tag = mac16(key, head) if key is not None else bytes(TAG_LEN)
    return head + tag


@dataclass
class Datagram:
    dtype: int
    device_id: str
    body: bytes
    tag: bytes
    raw: bytes


def decode(data: bytes, key: Optional[bytes] = None) -> Datagram:
    """Parses and length-checks a datagram; verifies the tag when `key` is given."""
    if len(data) < HEADER_LEN + 1 + TAG_LEN:
        raise ProtocolError("short datagram")
    magic, version, dtype, n = data[0], data[1], data[2], data[3]
    if magic != MAGIC:
        raise ProtocolError("bad magic")
    if version != VERSION:
        raise ProtocolError("bad version")
    if dtype not in BODY_LEN:
        raise ProtocolError(f"unknown type {dtype}")
    if not 1 <= n <= 63:
        raise ProtocolError("bad id length")
    if len(data) != total_len(dtype, n):
        raise ProtocolError(f"bad length {len(data)} for {TYPE_NAMES[dtype]} (want {total_len(dtype, n)})")
    did = data[4 : 4 + n]
    try:
        sid = did.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("non-ascii id")
    body = data[4 + n : -TAG_LEN]
    tag = data[-TAG_LEN:]
    if key is not None and not hmac.compare_digest(mac16(key, data[:-TAG_LEN]), tag):
        raise ProtocolError("bad tag")
    return Datagram(dtype, sid, body, tag, bytes(data))


# ---------------------------------------------------------------- typed messages


@dataclass
class PeriodInfo:
    nonce: bytes
    epoch: int
    period: int
    keepalive: int
    callback_port: int
    flags: int


@dataclass
class ConnectRequest:
    device_id: str
    session_id: bytes
    nonce: bytes
    callback_port: int
    reserved: int
    raw: bytes = b""
    callback_host: Optional[str] = None  # CONNECT_REQUEST_TO: where to call back (else the UDP host)
    src: tuple = ()
    sock_index: int = -1
    received_at: float = 0.0

    @property
    def sid_hex(self) -> str:
        return self.session_id.hex()


@dataclass
class Resync:
    counter: int
    epoch: int


def period_request(device_id: str, key: bytes, nonce: Optional[bytes] = None, counter: Optional[int] = None,
                   caps: int = 0, **kw) -> tuple[bytes, bytes]:
    """The counter defaults to the wall clock in microseconds (the relay answers each once);
    `caps` is the capabilities byte (CAP_CONNECT_TO: this device takes CONNECT_REQUEST_TO)."""
    nonce = os.urandom(8) if nonce is None else nonce
    counter = int(time.time() * 1_000_000) if counter is None else counter
    body = nonce + struct.pack(">QB", counter, caps & 0xFF) + bytes(7)
    return encode(PERIOD_REQUEST, device_id, body, key, **kw), nonce


def period_info(device_id: str, key: bytes, nonce: bytes, epoch: int, period: int, keepalive: int,
                callback_port: int, flags: int = 0) -> bytes:
    """Relay-side encoder (used by the self-tests)."""
    body = nonce + struct.pack(">IIIHH", epoch, period, keepalive, callback_port, flags)
    return encode(PERIOD_INFO, device_id, body, key)


def parse_period_info(data: bytes, key: bytes, expect_nonce: Optional[bytes] = None) -> PeriodInfo:
    d = decode(data, key)
    if d.dtype != PERIOD_INFO:
        raise ProtocolError(f"expected PERIOD_INFO, got type {d.dtype}")
    nonce = d.body[:8]
    epoch, period, keepalive, port, flags = struct.unpack(">IIIHH", d.body[8:24])
    if expect_nonce is not None and nonce != expect_nonce:
        raise ProtocolError("nonce mismatch")
    return PeriodInfo(nonce, epoch, period, keepalive, port, flags)


def notify(device_id: str, key: bytes, epoch: int, counter: int, kind: str = "A", **kw) -> bytes:
    dtype = NOTIFY_A if kind.upper() == "A" else NOTIFY_B
    return encode(dtype, device_id, struct.pack(">IQ", epoch, counter), key, **kw)


def leave(device_id: str, key: bytes, epoch: int, counter: int, **kw) -> bytes:
    return encode(LEAVE, device_id, struct.pack(">IQ", epoch, counter), key, **kw)


def parse_ack(data: bytes, key: bytes) -> Resync:
    """NOTIFY_ACK: the echoed counter and the relay's epoch (the same layout as RESYNC)."""
    d = decode(data, key)
    if d.dtype not in (NOTIFY_ACK, NOTIFY_ACK_MOVED):
        raise ProtocolError(f"expected NOTIFY_ACK, got type {d.dtype}")
    c, e = struct.unpack(">QI", d.body)
    return Resync(c, e)


def parse_reject(data: bytes) -> bytes:
    """REJECT (unauthenticated): returns the echoed client nonce."""
    d = decode(data)
    if d.dtype != REJECT or d.body[8:] != bytes(16) or d.tag != bytes(16):
        raise ProtocolError("not a REJECT")
    return d.body[:8]


def resync(device_id: str, key: bytes, counter: int, epoch: int) -> bytes:
    """Relay-side encoder (used by the self-tests)."""
    return encode(RESYNC, device_id, struct.pack(">QI", counter, epoch), key)


def parse_resync(data: bytes, key: bytes) -> Resync:
    d = decode(data, key)
    if d.dtype != RESYNC:
        raise ProtocolError(f"expected RESYNC, got type {d.dtype}")
    c, e = struct.unpack(">QI", d.body)
    return Resync(c, e)


def connect_request(device_id: str, key: bytes, session_id: bytes, nonce: bytes, callback_port: int,
                    reserved: int = 0) -> bytes:
    """Relay-side encoder (used by the self-tests)."""
    body = session_id + nonce + struct.pack(">HH", callback_port, reserved)
    return encode(CONNECT_REQUEST, device_id, body, key)


def connect_request_to(device_id: str, key: bytes, session_id: bytes, nonce: bytes, callback_port: int,
                       callback_host: str, reserved: int = 0) -> bytes:
    """Relay-side encoder (used by the self-tests)."""
    body = session_id + nonce + struct.pack(">HH", callback_port, reserved) + pack_address(callback_host)
    return encode(CONNECT_REQUEST_TO, device_id, body, key)


def pack_address(host: str) -> bytes:
    """16 bytes: an IPv6 address, or an IPv4 one as ::ffff:a.b.c.d."""
    if ":" in host:
        return socket.inet_pton(socket.AF_INET6, host)
    return bytes(10) + b"\xff\xff" + socket.inet_aton(host)


def unpack_address(raw: bytes) -> str:
    if raw[:12] == bytes(10) + b"\xff\xff":
        return socket.inet_ntoa(raw[12:16])
    return socket.inet_ntop(socket.AF_INET6, raw)


def parse_connect_request(data: bytes, key: bytes) -> ConnectRequest:
    """CONNECT_REQUEST or CONNECT_REQUEST_TO (then `callback_host` is the address it names)."""
    d = decode(data, key)
    if d.dtype not in (CONNECT_REQUEST, CONNECT_REQUEST_TO):
        raise ProtocolError(f"expected CONNECT_REQUEST, got type {d.dtype}")
    sid = d.body[:16]
    nonce = d.body[16:32]
    port, reserved = struct.unpack(">HH", d.body[32:36])
    host = unpack_address(d.body[36:52]) if d.dtype == CONNECT_REQUEST_TO else None
    return ConnectRequest(d.device_id, sid, nonce, port, reserved, raw=bytes(data), callback_host=host)


def hello(device_id, session_id: bytes, proof: bytes, *, magic: bytes = HELLO_MAGIC,
          id_len: Optional[int] = None) -> bytes:
    did = device_id.encode() if isinstance(device_id, str) else bytes(device_id)
    n = len(did) if id_len is None else id_len
    return magic + bytes([n & 0xFF]) + did + session_id + proof


def parse_hello(data: bytes) -> tuple[str, bytes, bytes]:
    """Relay-side parser (used by the self-tests)."""
    if len(data) < 5 or data[:4] != HELLO_MAGIC:
        raise ProtocolError("bad hello magic")
    n = data[4]
    if not 1 <= n <= 63 or len(data) != 5 + n + 16 + 32:
        raise ProtocolError("bad hello length")
    return data[5 : 5 + n].decode(), data[5 + n : 21 + n], data[21 + n :]


# ---------------------------------------------------------------- HTTP on a byte stream


@dataclass
class HttpMessage:
    start_line: str
    headers: list  # [(name, value)]
    body: bytes
    chunked: bool = False
    raw_head: bytes = b""

    def header(self, name: str, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name: str) -> list:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    # request helpers
    @property
    def method(self) -> str:
        return self.start_line.split(" ", 2)[0]

    @property
    def target(self) -> str:
        return self.start_line.split(" ", 2)[1]

    # response helpers
    @property
    def status(self) -> int:
        return int(self.start_line.split(" ", 2)[1])


class StreamReader:
    """Buffered reader over a socket, tolerant of partial reads."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, delim: bytes, limit: int = 1 << 20) -> Optional[bytes]:
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                out, self.buf = self.buf[: i + len(delim)], self.buf[i + len(delim) :]
                return out
            if len(self.buf) > limit:
                raise ProtocolError("line too long")
            if not self._fill():
                return None

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ProtocolError(f"eof after {len(self.buf)} of {n} bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self) -> bytes:
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out


def read_http_message(reader: StreamReader, is_response: bool = False, request_method: str = "GET",
                      body_to_eof_ok: bool = True) -> Optional[HttpMessage]:
    """Reads one HTTP/1.x message (head + body). Returns None on clean EOF before a head."""
    head = reader.read_until(b"\r\n\r\n")
    if head is None:
        if reader.buf:
            raise ProtocolError(f"eof inside a message head: {reader.buf[:200]!r}")
        return None
    lines = head[:-4].decode("latin-1").split("\r\n")
    start = lines[0]
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    msg = HttpMessage(start, headers, b"", raw_head=head)
    te = (msg.header("transfer-encoding") or "").lower()
    cl = msg.header("content-length")
    if is_response:
        status = msg.status
        if request_method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return msg
    if "chunked" in te:
        msg.chunked = True
        parts = []
        while True:
            line = reader.read_until(b"\r\n")
            if line is None:
                raise ProtocolError("eof in chunk size")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                # trailers
                while True:
                    t = reader.read_until(b"\r\n")
                    if t is None or t == b"\r\n":
                        break
                break
            parts.append(reader.read_exact(size))
            if reader.read_exact(2) != b"\r\n":
                raise ProtocolError("bad chunk terminator")
        msg.body = b"".join(parts)
    elif cl is not None:
        msg.body = reader.read_exact(int(cl))
    elif is_response and body_to_eof_ok:
        msg.body = reader.read_to_eof()
    return msg


def build_response(status: int, body: bytes = b"", headers: Optional[list] = None, reason: str = "OK",
                   keep_alive: bool = True) -> bytes:
    hs = list(headers or [])
    names = {k.lower() for k, _ in hs}
    if "content-length" not in names and "transfer-encoding" not in names:
        hs.append(("Content-Length", str(len(body))))
    if "content-type" not in names:
        hs.append(("Content-Type", "text/plain"))
    if not keep_alive:
        hs.append(("Connection", "close"))
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hs) + "\r\n"
    return head.encode("latin-1") + body


# ---------------------------------------------------------------- fake device


@dataclass
class LinkRequest:
    """One HTTP request as received by the fake device on a device link."""
    session_id: str
    link_no: int
    method: str
    target: str
    headers: list
    body: bytes
    received_at: float

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default


def default_handler(req: LinkRequest):
    body = f"fake-device {req.method} {req.target}".encode()
    return 200, [("X-Fake-Device", "1")], body


class FakeDevice:
    """A device agent written from PROTOCOL.md with its own UDP sockets.

    `relay_udp` is the relay's UDP (host, port); `relay_host` the host to call back on
    (defaults to the UDP host). Sockets are bound on `bind_host` with ephemeral ports.
    """

    def __init__(self, device_id: str, secret, relay_udp: tuple, nsockets: int = 1,
                 bind_host: Optional[str] = None, relay_host: Optional[str] = None, caps: int = 0):
        self.device_id = device_id
        self.caps = caps  # PERIOD_REQUEST capabilities (CAP_CONNECT_TO to take CONNECT_REQUEST_TO)
        self.secret = secret
        self.key = derive_key(secret) if secret is not None else bytes(16)
        self.relay_udp = tuple(relay_udp)
        self.family = socket.AF_INET6 if ":" in relay_udp[0] else socket.AF_INET
        self.bind_host = bind_host or ("::1" if self.family == socket.AF_INET6 else "127.0.0.1")
        self.relay_host = relay_host or relay_udp[0]
        self.socks: list[socket.socket] = []
        for _ in range(nsockets):
            self.add_socket()
        self.epoch: Optional[int] = None
        self.info: Optional[PeriodInfo] = None
        self.counter = 0
        self.sent: list = []  # (sock index, bytes)
        self.received: list = []  # (sock index, bytes, addr)
        self.answered: set = set()
        self.acks: list = []  # (sock index, echoed counter) of every NOTIFY_ACK received
        self.requests: list[LinkRequest] = []
        self.links_opened = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._open_links: list[socket.socket] = []

    # -- sockets
    def add_socket(self) -> int:
        s = socket.socket(self.family, socket.SOCK_DGRAM)
        s.bind((self.bind_host, 0))
        self.socks.append(s)
        return len(self.socks) - 1

    def addr(self, i: int = 0) -> tuple:
        return self.socks[i].getsockname()[:2]

    def send_raw(self, data: bytes, sock: int = 0, dest: Optional[tuple] = None) -> bytes:
        self.socks[sock].sendto(data, dest or self.relay_udp)
        with self._lock:
            self.sent.append((sock, data))
        return data

    def _is_ack(self, data: bytes) -> bool:
        try:
            return decode(data, self.key).dtype in (NOTIFY_ACK, NOTIFY_ACK_MOVED)
        except ProtocolError:
            return False

    def recv(self, sock: int = 0, timeout: float = 1.0, acks: bool = False) -> Optional[tuple]:
        """The next datagram on `sock`. Genuine NOTIFY_ACKs (the relay answers every accepted
        notify) go to `self.acks` as (sock, counter) and are skipped unless `acks`."""
        s = self.socks[sock]
        end = time.monotonic() + timeout
        while True:
            s.settimeout(max(end - time.monotonic(), 0.001))
            try:
                data, addr = s.recvfrom(65536)
            except (socket.timeout, BlockingIOError):
                return None
            with self._lock:
                self.received.append((sock, data, addr))
            if not acks and self._is_ack(data):
                with self._lock:
                    self.acks.append((sock, parse_ack(data, self.key).counter))
                if time.monotonic() < end:
                    continue
                return None
            return data, addr[:2]

    def drain(self, sock: int = 0, duration: float = 0.5, acks: bool = False) -> list:
        """Everything received on `sock` within `duration` seconds (NOTIFY_ACKs only if `acks`)."""
        out = []
        end = time.monotonic() + duration
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return out
            r = self.recv(sock, left, acks)
            if r is not None:
                out.append(r)

    # -- counters
    def next_counter(self) -> int:
        self.counter = max(int(time.time() * 1_000_000), self.counter + 1)
        return self.counter

    # -- registration
    def register(self, sock: int = 0, timeout: float = 8.0, dest: Optional[tuple] = None) -> PeriodInfo:
        """PERIOD_REQUEST, retried 1 s, 2 s, 4 s apart (each with a fresh counter: the relay
        answers a counter once), until a matching PERIOD_INFO."""
        end = time.monotonic() + timeout
        wait = 1.0
        nonce = os.urandom(8)
        while time.monotonic() < end:
            req, _ = period_request(self.device_id, self.key, nonce, self.next_counter(), caps=self.caps)
            self.send_raw(req, sock, dest)
            until = min(end, time.monotonic() + wait)
            while time.monotonic() < until:
                r = self.recv(sock, until - time.monotonic())
                if r is None:
                    break
                data, _ = r
                try:
                    info = parse_period_info(data, self.key, nonce)
                except ProtocolError:
                    continue
                if len(data) > len(req):
                    raise AssertionError(f"PERIOD_INFO ({len(data)} B) larger than request ({len(req)} B)")
                self.info = info
                self.epoch = info.epoch
                return info
            wait = min(wait * 2, 30)
        raise TimeoutError(f"no PERIOD_INFO for {self.device_id} within {timeout}s")

    def notify(self, kind: str = "A", sock: int = 0, epoch: Optional[int] = None, counter: Optional[int] = None,
               key: Optional[bytes] = None, dest: Optional[tuple] = None) -> bytes:
        if epoch is None:
            if self.epoch is None:
                raise RuntimeError("register() first")
            epoch = self.epoch
        if counter is None:
            counter = self.next_counter()
        data = notify(self.device_id, self.key if key is None else key, epoch, counter, kind)
        return self.send_raw(data, sock, dest)

    def notify_a(self, sock: int = 0, **kw) -> bytes:
        return self.notify("A", sock, **kw)

    def notify_b(self, sock: int = 0, **kw) -> bytes:
        return self.notify("B", sock, **kw)

    def start_notifier(self, kind: str, interval: float, sock: int = 0) -> Callable[[], None]:
        """Sends notifies of `kind` every `interval` s from a thread; returns a stop function."""
        stop = threading.Event()

        def run():
            while not stop.is_set() and not self._stop.is_set():
                try:
                    self.notify(kind, sock)
                except OSError:
                    return
                stop.wait(interval)

        t = threading.Thread(target=run, daemon=True, name=f"notify-{kind}-{self.device_id}")
        t.start()
        self._threads.append(t)

        def halt():
            stop.set()
            t.join(5)

        return halt

    # -- connection requests
    def wait_connect_request(self, sock: int = 0, timeout: float = 5.0, skip_answered: bool = False) -> ConnectRequest:
        """Next CONNECT_REQUEST with a valid tag on `sock`. Other datagrams are recorded and ignored."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no CONNECT_REQUEST on socket {sock} within {timeout}s")
            r = self.recv(sock, left)
            if r is None:
                continue
            data, addr = r
            try:
                cr = parse_connect_request(data, self.key)
            except ProtocolError:
                continue
            if skip_answered and cr.session_id in self.answered:
                continue
            cr.src = addr
            cr.sock_index = sock
            cr.received_at = time.monotonic()
            return cr

    # -- callbacks
    def connect_tcp(self, port: Optional[int] = None, host: Optional[str] = None, timeout: float = 5.0) -> socket.socket:
        port = port or (self.info.callback_port if self.info else None)
        if not port:
            raise RuntimeError("no callback port known")
        s = socket.create_connection((host or self.relay_host, port), timeout=timeout)
        s.settimeout(timeout)
        return s

    def make_hello(self, cr: ConnectRequest, *, session_id=None, nonce=None, proof=None, device_id=None,
                   key=None) -> bytes:
        sid = cr.session_id if session_id is None else session_id
        n = cr.nonce if nonce is None else nonce
        k = self.key if key is None else key
        pr = callback_proof(k, sid, n) if proof is None else proof
        return hello(self.device_id if device_id is None else device_id, sid, pr)

    def callback(self, cr: Optional[ConnectRequest], *, raw_hello: Optional[bytes] = None, port: Optional[int] = None,
                 host: Optional[str] = None, timeout: float = 5.0, pieces: int = 1, piece_delay: float = 0.0,
                 **hello_kw) -> tuple[socket.socket, Optional[int]]:
        """Opens the callback link and sends a hello. Returns (socket, status byte or None on close)."""
        if port is None and cr is not None and cr.callback_port:
            port = cr.callback_port
        if host is None and cr is not None and cr.callback_host:
            host = cr.callback_host
        s = self.connect_tcp(port, host, timeout)
        data = raw_hello if raw_hello is not None else self.make_hello(cr, **hello_kw)
        if pieces <= 1:
            s.sendall(data)
        else:
            step = max(1, len(data) // pieces)
            for i in range(0, len(data), step):
                s.sendall(data[i : i + step])
                time.sleep(piece_delay)
        status = read_status(s, timeout)
        if status == STATUS_BOUND and cr is not None:
            with self._lock:
                self.answered.add(cr.session_id)
                self.links_opened += 1
        return s, status

    # -- serving HTTP on a link
    def serve_link(self, link: socket.socket, sid: str, handler: Callable = default_handler,
                   keep_alive: bool = True, link_no: int = 0, max_requests: int = 1000) -> int:
        """Reads HTTP requests from the link and answers them via `handler(req)`.

        `handler` returns (status, headers, body) or raw bytes. Returns the number served."""
        reader = StreamReader(link)
        served = 0
        while served < max_requests and not self._stop.is_set():
            try:
                msg = read_http_message(reader)
            except (ProtocolError, OSError):
                break
            if msg is None:
                break
            req = LinkRequest(sid, link_no, msg.method, msg.target, msg.headers, msg.body, time.monotonic())
            with self._lock:
                self.requests.append(req)
            out = handler(req)
            if isinstance(out, (bytes, bytearray)):
                resp = bytes(out)
            else:
                status, headers, body = out
                resp = build_response(status, body, headers, keep_alive=keep_alive)
            try:
                link.sendall(resp)
            except OSError:
                break
            served += 1
            if not keep_alive:
                break
        return served

    def start_responder(self, handler: Callable = default_handler, sock: int = 0, keep_alive: bool = False,
                        ignore: int = 0) -> None:
        """Thread: answers every new CONNECT_REQUEST on `sock` by calling back and serving
        HTTP on the link (one thread per link). Ignores the first `ignore` requests."""
        seen: set = set()
        ignored = [0]

        def serve(cr: ConnectRequest, no: int):
            try:
                link, status = self.callback(cr)
            except OSError:
                return
            if status != STATUS_BOUND:
                link.close()
                return
            with self._lock:
                self._open_links.append(link)
            link.settimeout(60)
            try:
                self.serve_link(link, cr.sid_hex, handler, keep_alive=keep_alive, link_no=no)
            finally:
                try:
                    link.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                link.close()

        def loop():
            no = 0
            while not self._stop.is_set():
                try:
                    cr = self.wait_connect_request(sock, timeout=0.2)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if cr.session_id in seen:
                    continue
                if ignored[0] < ignore:
                    ignored[0] += 1
                    continue
                seen.add(cr.session_id)
                no += 1
                t = threading.Thread(target=serve, args=(cr, no), daemon=True)
                t.start()
                self._threads.append(t)

        t = threading.Thread(target=loop, daemon=True, name=f"responder-{self.device_id}")
        t.start()
        self._threads.append(t)

    def close(self):
        self._stop.set()
        for t in list(self._threads):
            t.join(3)
        for s in self.socks:
            s.close()
        for link in self._open_links:
            try:
                link.close()
            except OSError:
                pass


def read_status(s: socket.socket, timeout: float = 5.0) -> Optional[int]:
    """One status byte from the relay, or None when it closed (or reset) first."""
    s.settimeout(timeout)
    try:
        b = s.recv(1)
    except (ConnectionResetError, BrokenPipeError):
        return None
    return b[0] if b else None


def closed_by_peer(s: socket.socket, timeout: float = 3.0) -> bool:
    """True when the peer closes (EOF or reset) within `timeout`, ignoring data received."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return False
        s.settimeout(left)
        try:
            d = s.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
        if not d:
            return True
