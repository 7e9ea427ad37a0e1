"""The admin console (GET / on the admin listener) in headless Chromium, driven over the
DevTools protocol: it logs in with an admin key (a #key= link, kept in sessionStorage), shows
the device table with the online count, and a device going offline and back online without a
reload; the detail panel shows its address history, wakes and tokens, and a token is minted
from it. A screenshot is kept in .build/console-screenshot.png."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request

import pytest

import relayproto as rp
from admin_helpers import Admin
from conftest import REPO, free_port
from test_demo_browser import find_chromium, png_facts

pytestmark = pytest.mark.needs_relay
SHOT = REPO / ".build" / "console-screenshot.png"


class DevTools:
    """The smallest DevTools protocol client: one WebSocket (RFC 6455, text frames, masked
    as a client must) to one page target, request/response by id."""

    def __init__(self, ws_url: str, timeout: float = 10.0):
        assert ws_url.startswith("ws://")
        hostport, path = ws_url[5:].split("/", 1)
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, "DevTools closed during the handshake"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head[:200]
        self.buf = head.split(b"\r\n\r\n", 1)[1]
        self.next_id = 0

    def _recv_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            assert chunk, "DevTools closed"
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _frame(self) -> bytes:
        b0, b1 = self._recv_exact(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._recv_exact(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._recv_exact(8))[0]
        data = self._recv_exact(n)
        if b0 & 0x80 == 0:  # fragmented: append continuation frames
            return data + self._frame()
        return data

    def send(self, method: str, **params):
        self.next_id += 1
        payload = json.dumps({"id": self.next_id, "method": method, "params": params}).encode()
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
                                  if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        while True:
            msg = json.loads(self._frame())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg["result"]

    def eval(self, expression: str):
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def wait(self, expression: str, timeout: float = 15.0, what: str = ""):
        end = time.monotonic() + timeout
        v = None
        while time.monotonic() < end:
            v = self.eval(expression)
            if v:
                return v
            time.sleep(0.1)
        pytest.fail(f"console: {what or expression} not seen within {timeout}s (last {v!r})\n"
                    f"{self.eval('document.body.innerText')[:2000]}")

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()


@pytest.fixture
def chromium(cleanup):
    browser = find_chromium()
    if not browser:
        pytest.skip("chromium is not installed (apt-get install chromium, or set $CHROMIUM)")
    profile = tempfile.mkdtemp(prefix="relay-console-chromium-")
    port = free_port()
    p = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--no-first-run", "--no-default-browser-check", "--no-proxy-server",
                          f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
                          "--remote-debugging-address=127.0.0.1", "--window-size=1280,800", "about:blank"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)

    def stop():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
        shutil.rmtree(profile, ignore_errors=True)

    cleanup.append(stop)
    end = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            if pages:
                break
        except OSError:
            pass
        assert time.monotonic() < end and p.poll() is None, "chromium's DevTools did not come up"
        time.sleep(0.2)
    dt = DevTools(pages[0]["webSocketDebuggerUrl"])
    cleanup.append(dt.close)
    return dt


def pill(dev_id: str) -> str:
    return f"(document.querySelector('tr[data-id=\"{dev_id}\"] .pill') || {{}}).textContent"


@pytest.mark.timeout(120)
def test_console_shows_devices_live(relay_factory, chromium, fake_devices):
    relay = relay_factory("--period", "2", "--keepalive", "1")
    admin = Admin(relay)
    secrets = {d: admin.ok("POST", "/api/v1/devices", status=201, json={"id": d})["secret"]
               for d in ("cam-1", "cam-2", "thermo-1")}
    cam = rp.FakeDevice("cam-1", secrets["cam-1"], relay.udp_addr, nsockets=2)
    fake_devices.append(cam)
    cam.register()
    cam.notify_a()
    cam.notify_a(sock=1)  # a NAT rebinding: one address change
    admin.ok("POST", "/api/v1/devices/cam-1/tokens", status=201, json={"ttl": "1h"})

    chromium.send("Page.enable")
    chromium.send("Page.navigate", url=f"{admin.url}/#key={admin.key}")
    chromium.wait("document.readyState === 'complete'")
    chromium.eval("window.__noReload = 1")
    chromium.wait(f"{pill('cam-1')} === 'online'", what="cam-1 online")
    assert chromium.eval("location.hash") == "", "the key stays in the address bar"
    assert chromium.eval("sessionStorage.getItem('relayAdminKey')") == admin.key
    assert chromium.eval("document.cookie") == ""
    assert chromium.eval(f"{pill('cam-2')}") == "offline"
    chromium.wait("document.getElementById('sum-online').textContent === '1'")
    assert chromium.eval("document.getElementById('sum-devices').textContent") == "3"

    # Silent for longer than the period: offline, without a reload.
    chromium.wait(f"{pill('cam-1')} === 'offline'", timeout=10, what="cam-1 going offline")
    chromium.wait("document.getElementById('sum-online').textContent === '0'")
    # Its agent notifies again: online again, same page.
    cam.notify_a(sock=1)
    chromium.wait(f"{pill('cam-1')} === 'online'", timeout=10, what="cam-1 back online")
    assert chromium.eval("window.__noReload") == 1, "the page was reloaded"

    # Search and filter.
    chromium.eval("{ const s = document.getElementById('search'); s.value = 'thermo'; s.dispatchEvent(new Event('input')) }")
    chromium.wait("document.querySelectorAll('#devices tbody tr').length === 1 && "
                  "!!document.querySelector('tr[data-id=\"thermo-1\"]')", what="search")
    chromium.eval("{ const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input')) }")
    chromium.eval("{ const f = document.getElementById('filter'); f.value = 'true'; f.dispatchEvent(new Event('change')) }")
    chromium.wait("document.querySelectorAll('#devices tbody tr').length === 1 && "
                  "!!document.querySelector('tr[data-id=\"cam-1\"]')", what="online filter")
    chromium.eval("{ const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('change')) }")
    chromium.wait("document.querySelectorAll('#devices tbody tr').length === 3")

    # The detail: address history, tokens; mint one from the page.
    cam.notify_a()  # keep it online while we look
    chromium.eval("document.querySelector('tr[data-id=\"cam-1\"]').click()")
    chromium.wait("document.getElementById('d-id').textContent === 'cam-1'")
    chromium.wait("document.getElementById('d-history').children.length >= 2 && "
                  "document.getElementById('d-history').textContent.includes('127.0.0.1:')", what="address history")
    assert chromium.eval("document.getElementById('d-moves').textContent") in ("2", "3")
    chromium.wait("document.getElementById('d-tokens').textContent.includes('valid')")
    chromium.eval("document.getElementById('mint-btn').click()")
    chromium.wait("document.getElementById('mint-result').textContent.includes('token (shown once): cam-1.')",
                  what="minted token")
    assert len(admin.ok("GET", "/api/v1/devices/cam-1/tokens")["tokens"]) == 2
    # Revoke one from the page.
    chromium.wait("document.querySelectorAll('#d-tokens button').length === 2")
    chromium.eval("document.querySelector('#d-tokens button').click()")
    end = time.monotonic() + 10
    while time.monotonic() < end:
        states = [t["state"] for t in admin.ok("GET", "/api/v1/devices/cam-1/tokens?all=true")["tokens"]]
        if "revoked" in states:
            break
        time.sleep(0.1)
    assert "revoked" in states
    cam.notify_a()
    time.sleep(1.2)  # one more refresh so the screenshot shows the state after it

    SHOT.parent.mkdir(parents=True, exist_ok=True)
    data = base64.b64decode(chromium.send("Page.captureScreenshot", format="png")["data"])
    SHOT.write_bytes(data)
    width, height, distinct = png_facts(data)
    assert width >= 800 and height >= 500 and distinct > 50, (width, height, distinct)

    # Remove a device from the page (confirm() answered yes).
    chromium.eval("window.confirm = () => true")
    chromium.eval("document.querySelector('tr[data-id=\"thermo-1\"]').click()")
    chromium.wait("document.getElementById('d-id').textContent === 'thermo-1'")
    chromium.eval("document.getElementById('remove-btn').click()")
    chromium.wait("!document.querySelector('tr[data-id=\"thermo-1\"]')", what="thermo-1 removed")
    assert admin.get("/api/v1/devices/thermo-1").status_code == 404

    # A wrong key gets the login form back.
    chromium.eval("sessionStorage.setItem('relayAdminKey', 'rk_wrong')")
    chromium.wait("!document.getElementById('login').hidden", what="login form after a refused key")
