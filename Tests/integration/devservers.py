"""Small device-side web servers for the tests (run in threads of the test process)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def big_body(size: int, seed: int) -> bytes:
    """The bytes RecordingServer's /big route answers: deterministic, so a test can check them."""
    return random.Random(seed).randbytes(size)


class RecordingServer:
    """HTTP/1.1 keep-alive server recording every request it gets.

    Routes:
      POST/PUT any path   -> JSON {"sha256", "len", "chunked"} of the body (Content-Length or chunked)
      GET /slow?ms=N&tag=T -> sleeps N ms, answers "tag=T path=..."
      GET /chunked?n=K&size=S -> chunked response of K chunks of S bytes ("0123456789" pattern)
      GET /big?size=N&seed=S -> N pseudo-random bytes (big_body(N, S)), Content-Length framed
      GET anything else   -> JSON {"method", "path", "headers"}
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.requests: list = []
        self.lock = threading.Lock()
        rec = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _record(self, body_len=0, chunked=False):
                with rec.lock:
                    rec.requests.append({
                        "method": self.command,
                        "path": self.path,
                        "headers": [(k, v) for k, v in self.headers.items()],
                        "body_len": body_len,
                        "chunked": chunked,
                        "conn": self.client_address[:2],
                        "time": time.monotonic(),
                    })

            def _send(self, status, body: bytes, ctype="application/json", extra=()):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _read_body(self):
                h = hashlib.sha256()
                n = 0
                te = (self.headers.get("Transfer-Encoding") or "").lower()
                if "chunked" in te:
                    while True:
                        line = self.rfile.readline(1024)
                        if not line:
                            raise ConnectionError("eof in chunk size")
                        size = int(line.split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        left = size
                        while left:
                            d = self.rfile.read(min(left, 1 << 16))
                            if not d:
                                raise ConnectionError("eof in chunk")
                            h.update(d)
                            n += len(d)
                            left -= len(d)
                        self.rfile.readline(16)
                    return h.hexdigest(), n, True
                left = int(self.headers.get("Content-Length") or 0)
                while left:
                    d = self.rfile.read(min(left, 1 << 16))
                    if not d:
                        raise ConnectionError("eof in body")
                    h.update(d)
                    n += len(d)
                    left -= len(d)
                return h.hexdigest(), n, False

            def do_POST(self):
                digest, n, chunked = self._read_body()
                self._record(n, chunked)
                self._send(200, json.dumps({"sha256": digest, "len": n, "chunked": chunked}).encode())

            do_PUT = do_POST

            def do_GET(self):
                self._record()
                u = urlsplit(self.path)
                q = parse_qs(u.query)
                if u.path == "/slow":
                    time.sleep(int(q.get("ms", ["500"])[0]) / 1000)
                    self._send(200, f"tag={q.get('tag', [''])[0]} path={self.path}".encode(), "text/plain")
                    return
                if u.path == "/big":
                    body = big_body(int(q.get("size", ["1048576"])[0]), int(q.get("seed", ["0"])[0]))
                    self._send(200, body, "application/octet-stream")
                    return
                if u.path == "/chunked":
                    n = int(q.get("n", ["5"])[0])
                    size = int(q.get("size", ["1000"])[0])
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    pattern = (b"0123456789" * (size // 10 + 1))[:size]
                    for _ in range(n):
                        self.wfile.write(f"{size:x}\r\n".encode() + pattern + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    return
                body = json.dumps({"method": self.command, "path": self.path,
                                   "headers": [[k, v] for k, v in self.headers.items()]}).encode()
                self._send(200, body)

            do_HEAD = do_GET
            do_DELETE = do_GET

        cls = _V6Server if ":" in host else ThreadingHTTPServer
        cls.daemon_threads = True
        self.httpd = cls((host, port), H)
        self.host = host
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def paths(self) -> list:
        with self.lock:
            return [r["path"] for r in self.requests]

    def all_headers(self) -> list:
        with self.lock:
            return [h for r in self.requests for h in r["headers"]]


class UpgradeEchoServer:
    """asyncio server: answers an Upgrade request with 101, sends a banner, then echoes bytes."""

    BANNER = b"srv-hello\n"

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port = None
        self.heads: list = []
        self.loop = asyncio.new_event_loop()
        self.server = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            text = head.decode("latin-1").lower()
            if "upgrade:" not in text:
                body = b"not an upgrade"
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
                return
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
            writer.write(self.BANNER)
            await writer.drain()
            while True:
                d = await reader.read(65536)
                if not d:
                    break
                writer.write(d)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def main():
            self.server = await asyncio.start_server(self._handle, self.host, 0)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()

        self.loop.run_until_complete(main())
        self.loop.run_forever()

    def start(self):
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("upgrade server did not start")
        return self

    def stop(self):
        def shut():
            if self.server:
                self.server.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(shut)
        self.thread.join(5)
