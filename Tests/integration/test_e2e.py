"""End to end: terminal -> relay -> real `relay agent` -> device web server."""

import re
import subprocess
import time
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from conftest import both_agents
from helpers import SID_RE

T = (5, 30)


@pytest.fixture
def served(relay, static_server, agent_factory):
    """Device 'cam1' behind the real agent, forwarding to python3 -m http.server."""
    root, port, _ = static_server()
    (root / "hello.txt").write_bytes(b"hello from the device\n")
    (root / "sub").mkdir()
    (root / "sub" / "deep.txt").write_bytes(b"deep file\n")
    agent_factory(relay, "cam1", port)
    return relay, root


@pytest.fixture
def recorded(relay, recording_server, agent_factory):
    """Device 'rec1' behind the real agent, forwarding to a server that records requests."""
    srv = recording_server()
    agent_factory(relay, "rec1", srv.port)
    return relay, srv


@both_agents
def test_path_routing_strips_prefix(served):
    relay, _ = served
    h = relay.auth("cam1")
    r = requests.get(relay.dev_url("cam1", "/hello.txt"), headers=h, timeout=T)
    assert r.status_code == 200, r.text
    assert r.content == b"hello from the device\n"
    assert SID_RE.match(r.headers.get("X-Relay-Session", "")), r.headers
    r2 = requests.get(relay.dev_url("cam1", "/sub/deep.txt"), headers=h, timeout=T)
    assert r2.status_code == 200 and r2.content == b"deep file\n"
    assert r2.headers["X-Relay-Session"] != r.headers["X-Relay-Session"]


def test_host_routing_with_requests(served):
    relay, _ = served
    h = relay.auth("cam1")
    h["Host"] = f"cam1.localhost:{relay.http_port}"
    r = requests.get(relay.url("/hello.txt"), headers=h, timeout=T)
    assert r.status_code == 200, r.text
    assert r.content == b"hello from the device\n"
    assert SID_RE.match(r.headers.get("X-Relay-Session", ""))


@both_agents
def test_host_routing_with_curl(served):
    relay, _ = served
    tok = relay.token("cam1")
    port = relay.http_port
    base = ["curl", "-sS", "--max-time", "30", "-D", "-", "-H", f"Authorization: Bearer {tok}"]
    for extra, url in [
        (["--resolve", f"cam1.localhost:{port}:127.0.0.1"], f"http://cam1.localhost:{port}/sub/deep.txt"),
        (["-H", f"Host: cam1.localhost:{port}"], f"http://127.0.0.1:{port}/sub/deep.txt"),
        ([], f"http://127.0.0.1:{port}/d/cam1/sub/deep.txt"),
    ]:
        p = subprocess.run(base + extra + [url], capture_output=True, timeout=40)
        assert p.returncode == 0, p.stderr
        head, _, body = p.stdout.partition(b"\r\n\r\n")
        assert re.match(rb"HTTP/1\.[01] 200 ", head), head
        assert b"x-relay-session:" in head.lower()
        assert body == b"deep file\n"


@both_agents
def test_device_sees_rewritten_request_without_credentials(recorded):
    relay, srv = recorded
    tok = relay.token("rec1")
    cookie = f"a=1; relay_token={tok}; b=2"
    r = requests.get(relay.dev_url("rec1", "/sub/p?q=1&z=2"),
                     headers={"Authorization": f"Bearer {tok}", "Cookie": cookie,
                              "X-Relay-Session": "0" * 32, "X-Custom": "kept"}, timeout=T)
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["path"] == "/sub/p?q=1&z=2"
    names = {k.lower(): v for k, v in seen["headers"]}
    assert "authorization" not in names
    assert "x-relay-session" not in names
    assert names.get("x-custom") == "kept"
    ck = names.get("cookie", "")
    assert "relay_token" not in ck and tok not in ck
    assert "a=1" in ck and "b=2" in ck
    # and nothing anywhere in what the server recorded carries the token
    assert all(tok not in v for _, v in srv.all_headers())
    assert all(tok not in p for p in srv.paths())


def test_path_routing_without_trailing_slash_redirects_to_the_directory(recorded):
    # "/d/ID" gets a 308 to "/d/ID/" (query kept): a browser then resolves the page's
    # relative links under /d/ID/ and sends the cookie scoped to that path.
    relay, srv = recorded
    r = requests.get(relay.url("/d/rec1?x=1&relay_token=t"), headers=relay.auth("rec1"), timeout=T,
                     allow_redirects=False)
    assert r.status_code == 308, r.text
    assert r.headers["Location"] == "/d/rec1/?x=1&relay_token=t"
    r = requests.get(relay.url("/d/rec1"), headers=relay.auth("rec1"), timeout=T)
    assert r.status_code == 200 and r.json()["path"] == "/"
    r = requests.get(relay.url("/d/rec1/"), headers=relay.auth("rec1"), timeout=T)
    assert r.json()["path"] == "/"


def test_host_routing_keeps_path(recorded):
    relay, srv = recorded
    h = relay.auth("rec1")
    h["Host"] = f"rec1.localhost:{relay.http_port}"
    r = requests.get(relay.url("/d/other/x?y=1"), headers=h, timeout=T)
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["path"] == "/d/other/x?y=1"  # with host routing nothing is stripped
    assert "authorization" not in {k.lower() for k, _ in seen["headers"]}


def test_query_token_redirects_and_sets_cookie(recorded):
    # Host routing: each device is its own browser origin, so the token may come in the URL
    # once and live on in a cookie for that origin.
    relay, srv = recorded
    tok = relay.token("rec1")
    s = requests.Session()
    host = {"Host": f"rec1.localhost:{relay.http_port}"}
    url = relay.url(f"/page?x=1&relay_token={tok}&y=2")
    r = s.get(url, headers=host, allow_redirects=False, timeout=T)
    assert r.status_code == 302, r.text
    loc = r.headers["Location"]
    assert "relay_token" not in loc and tok not in loc
    u = urlsplit(urljoin(url, loc))
    assert u.path == "/page"
    assert parse_qs(u.query) == {"x": ["1"], "y": ["2"]}
    sc = r.headers.get("Set-Cookie", "")
    assert f"relay_token={tok}" in sc
    low = sc.lower()
    assert "httponly" in low and "samesite=lax" in low and "path=/;" in low
    n_before = len(srv.requests)
    assert n_before == 0, "the redirect must not reach the device"
    r2 = s.get(urljoin(url, loc), headers=host, allow_redirects=False, timeout=T)
    assert r2.status_code == 200, r2.text
    seen = r2.json()
    assert seen["path"] == "/page?x=1&y=2"
    assert all(tok not in v for _, v in seen["headers"])
    assert SID_RE.match(r2.headers.get("X-Relay-Session", ""))
    # the cookie alone keeps working on later requests
    r3 = s.get(relay.url("/again"), headers=host, timeout=T)
    assert r3.status_code == 200 and r3.json()["path"] == "/again"


def test_path_routing_takes_no_query_or_cookie_token(recorded):
    # Path routing puts every device on the relay's one origin: a page of one device could
    # use the browser's cookie for another. There the token goes in Authorization only.
    relay, srv = recorded
    tok = relay.token("rec1")
    for headers, target in (({}, f"/page?relay_token={tok}"), ({"Cookie": f"relay_token={tok}"}, "/page")):
        r = requests.get(relay.dev_url("rec1", target), headers=headers, allow_redirects=False, timeout=T)
        assert r.status_code == 401, r.text
        assert "Authorization" in r.text and "host routing" in r.text
        assert "Set-Cookie" not in r.headers
    assert srv.requests == []
    r = requests.get(relay.dev_url("rec1", f"/page?relay_token={tok}"), headers=relay.auth("rec1"), timeout=T)
    assert r.status_code == 200 and r.json()["path"] == "/page"


def test_query_token_with_host_routing_sets_root_cookie(recorded):
    relay, srv = recorded
    tok = relay.token("rec1")
    h = {"Host": f"rec1.localhost:{relay.http_port}"}
    r = requests.get(relay.url(f"/a/b?relay_token={tok}"), headers=h, allow_redirects=False, timeout=T)
    assert r.status_code == 302, r.text
    loc = r.headers["Location"]
    assert tok not in loc and urlsplit(loc).path == "/a/b"
    sc = r.headers.get("Set-Cookie", "").lower()
    assert "path=/;" in sc + ";" or sc.rstrip().endswith("path=/")
    r2 = requests.get(relay.url("/a/b"), headers=dict(h, Cookie=f"relay_token={tok}"), timeout=T)
    assert r2.status_code == 200 and r2.json()["path"] == "/a/b"


def test_response_headers_and_status_pass_through(served):
    relay, _ = served
    r = requests.get(relay.dev_url("cam1", "/missing.txt"), headers=relay.auth("cam1"), timeout=T)
    assert r.status_code == 404  # the device's own 404, relayed
    assert SID_RE.match(r.headers.get("X-Relay-Session", ""))


@both_agents
def test_agent_recovers_after_relay_restart(relay_factory, static_server, agent_factory):
    """The relay restarts (new epoch): the agent's next notify gets RESYNC, it re-notifies, and
    terminals reach it again without restarting the agent."""
    relay = relay_factory("--wake-timeout", "5s", "--period", "6", "--keepalive", "1")
    root, port, _ = static_server()
    (root / "r.txt").write_bytes(b"restarted ok\n")
    agent = agent_factory(relay, "rs1", port)
    tok = relay.token("rs1")
    h = {"Authorization": f"Bearer {tok}"}
    assert requests.get(relay.dev_url("rs1", "/r.txt"), headers=h, timeout=T).status_code == 200
    assert relay.stop() == 0
    relay.start()
    deadline = time.monotonic() + 15
    status = None
    while time.monotonic() < deadline:
        status = requests.get(relay.dev_url("rs1", "/r.txt"), headers=h, timeout=T).status_code
        if status == 200:
            break
        assert status == 503, status
        time.sleep(0.3)
    assert status == 200, f"agent did not come back after the relay restarted\n{agent.describe()}"
    assert agent.alive()
