"""The README demo (demo/run_demo.py) in a real browser: headless Chromium loads each device's
page through the relay, the stylesheet and script arrive (authorized by the relay cookie the
?relay_token= link sets), and the page's live polling of api/status keeps working.

Both are opened with host routing (http://ID.localhost:PORT/, which Chromium resolves to
loopback itself): each device is its own browser origin. Path routing
(http://127.0.0.1:PORT/d/ID/) is for API clients with Authorization: the demo prints a curl
line for it, and a browser's ?relay_token= there is refused. Screenshots are kept in
.build/demo-screenshot-<id>.png for a person to look at.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path

import pytest

from conftest import REPO, relay_bin

RUN_DEMO = REPO / "demo" / "run_demo.py"
SHOTS = REPO / ".build"
# Virtual time lets the page's 1 s polling run several rounds without waiting in real time
# (it pauses while fetches are in flight, so slow relaying does not eat the budget).
VIRTUAL_MS = 5000
BROWSER_TIMEOUT = 90


def find_chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class Demo:
    """run_demo.py as a child process, with its ready-file contents."""

    def __init__(self, workdir: Path):
        self.ready_file = workdir / "ready.json"
        self.out_path, self.err_path = workdir / "demo.stdout", workdir / "demo.stderr"
        env = dict(os.environ, RELAY_BIN=str(relay_bin()))
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            # --duration bounds the demo even if this test process dies without stopping it.
            self.p = subprocess.Popen([sys.executable, RUN_DEMO, "--http-port", "0", "--ready-file", self.ready_file,
                                       "--duration", "600"],
                                      stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        self.info: dict = {}

    def output(self) -> str:
        return (self.out_path.read_text(errors="replace") + "\n--- stderr ---\n"
                + self.err_path.read_text(errors="replace"))

    def wait_ready(self, timeout: float = 90):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.ready_file.exists():
                self.info = json.loads(self.ready_file.read_text())
                return
            if self.p.poll() is not None:
                pytest.fail(f"run_demo.py exited with {self.p.returncode} before ready\n{self.output()}")
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"run_demo.py not ready within {timeout:.0f}s\n{self.output()}")

    def device(self, dev_id: str) -> dict:
        return next(d for d in self.info["devices"] if d["id"] == dev_id)

    def stop(self) -> int | None:
        """SIGTERM, as Ctrl-C would; SIGKILL if it does not finish (its children then get
        SIGTERM from the kernel: run_demo sets PR_SET_PDEATHSIG)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        return self.p.returncode


@pytest.fixture(scope="module")
def browser() -> str:
    b = find_chromium()
    if not b:
        pytest.skip("chromium is not installed (apt-get install chromium, or set $CHROMIUM)")
    return b


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = Demo(tmp_path_factory.mktemp("demo"))
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()


def run_chromium(browser: str, url: str, *extra: str) -> str:
    """One headless Chromium run with a fresh profile (so no cookie from an earlier run);
    returns stdout. Its whole process group is killed afterwards, so no helper outlives it."""
    profile = tempfile.mkdtemp(prefix="relay-demo-chromium-")
    args = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--no-proxy-server", f"--user-data-dir={profile}",
            f"--virtual-time-budget={VIRTUAL_MS}", *extra, url]
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=BROWSER_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(timeout=10)
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT}s\n{err[-3000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(profile, ignore_errors=True)
    assert p.returncode == 0, f"chromium exited with {p.returncode}\n{err[-3000:]}"
    return out


def png_facts(data: bytes) -> tuple:
    """(width, height, distinct byte values in the decompressed image data) of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if ctype == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif ctype == b"IDAT":
            idat += chunk
        elif ctype == b"IEND":
            break
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


# (device, which printed URL, the page's own address once the relay has traded the token for a cookie)
CASES = [
    ("cam1", "browser_url", "http://cam1.localhost:{port}/"),
    ("thermo1", "browser_url", "http://thermo1.localhost:{port}/"),
]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("dev_id,url_key,clean_url", CASES, ids=["host-routing-cam1", "host-routing-thermo1"])
def test_device_page_live_in_chromium(browser, demo, dev_id, url_key, clean_url):
    dev = demo.device(dev_id)
    url = dev[url_key]
    assert url in demo.out_path.read_text(), "run_demo.py must print the URL it wrote to the ready file"
    title = {"camera": "Camera", "thermostat": "Thermostat"}[dev["kind"]]

    dom = run_chromium(browser, url, "--dump-dom")
    where = f"{url}\n--- DOM ---\n{dom[:3000]}\n--- demo ---\n{demo.output()[-2000:]}"
    assert f'<h1 id="device-name">{dev_id}</h1>' in dom, f"device page not shown\n{where}"
    assert f"{title}, reached through the relay" in dom, where
    body = re.search(r"<body\b[^>]*>", dom)
    assert body, where
    assert 'data-css="ok"' in body.group(0), f"style.css did not apply (relay cookie on subresources?)\n{where}"
    updates = re.search(r'data-updates="(\d+)"', body.group(0))
    assert updates and int(updates.group(1)) >= 2, f"fewer than 2 live updates through the relay\n{where}"
    assert re.search(r'<span id="reading">-?\d+\.\d</span>', dom), f"no live reading\n{where}"
    assert 'class="state live"' in dom, f"last poll failed\n{where}"
    # The ?relay_token= link was traded for a cookie and a redirect to the clean URL.
    assert f'<code id="origin">{clean_url.format(port=demo.info["http_port"])}</code>' in dom, where
    assert dev["token"] not in dom

    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / f"demo-screenshot-{dev_id}.png"
    shot.unlink(missing_ok=True)
    run_chromium(browser, url, f"--screenshot={shot}", "--window-size=1000,700", "--hide-scrollbars")
    assert shot.exists(), f"chromium wrote no screenshot at {shot}"
    data = shot.read_bytes()
    assert len(data) > 20_000, f"screenshot only {len(data)} bytes: a blank page?"
    width, height, distinct = png_facts(data)
    assert (width, height) == (1000, 700)
    assert distinct > 50, f"screenshot looks flat ({distinct} distinct byte values): a blank page?"


@pytest.mark.timeout(120)
def test_path_routing_is_for_api_clients(browser, demo):
    """The printed curl line (Authorization) works; a browser with ?relay_token= under /d/ID/
    gets the 401 that sends it to host routing, and no cookie for the shared origin."""
    dev = demo.device("thermo1")
    assert dev["api_curl"] in demo.out_path.read_text()
    port = demo.info["http_port"]
    req = urllib.request.Request(dev["api_url"], headers={"Authorization": f"Bearer {dev['token']}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200 and json.loads(r.read())
    dom = run_chromium(browser, f"http://127.0.0.1:{port}/d/thermo1/?relay_token={dev['token']}", "--dump-dom")
    assert "takes the token only in Authorization" in dom and "host routing" in dom, dom[:2000]
    assert "Thermostat, reached through the relay" not in dom


@pytest.mark.timeout(60)
def test_demo_stops_every_process(demo):
    """SIGTERM (what Ctrl-C does) stops the relay, both agents and both device servers, and
    removes the temporary store."""
    pids = demo.info["pids"]
    assert set(pids) == {"relay", "cam1-server", "cam1-agent", "thermo1-server", "thermo1-agent"}
    for name, pid in pids.items():
        os.kill(pid, 0)  # all running before the stop (raises if not)
    assert demo.stop() == 0, demo.output()
    assert "demo: stopping" in demo.out_path.read_text()
    # run_demo reaps its children before it exits, so every pid is gone now.
    alive = []
    for name, pid in pids.items():
        try:
            os.kill(pid, 0)
            alive.append(name)
        except ProcessLookupError:
            pass
    assert not alive, f"still running after the demo stopped: {alive}\n{demo.output()}"
    assert not Path(demo.info["data"]).exists(), "temporary store not removed"
