"""Terminal tokens: recorded, listed and revoked with `relay token`, refused by a running relay
within about a second (on open keep-alive connections and through the cookie too), and still
refused after a restart."""

import time
from datetime import datetime

import pytest
import requests

import relayproto as rp
from helpers import http_request_bytes, raw_request, wait_until

T = (5, 30)
REVOKED = "token revoked\n"


@pytest.fixture
def device(relay, recording_server, agent_factory):
    """Device 'tk1' behind the real agent, forwarding to a keep-alive server that records
    requests. Returns (relay, server)."""
    srv = recording_server()
    agent_factory(relay, "tk1", srv.port)
    return relay, srv


def get(relay, token, path="/", device_id="tk1", **kw):
    return requests.get(relay.dev_url(device_id, path), headers={"Authorization": f"Bearer {token}"}, timeout=T, **kw)


def tid(token):
    return rp.parse_token(token).tid


def revoke(relay, *args):
    r = relay.cli("token", "revoke", *args)
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if line.strip()]


def token_list(relay, *args):
    r = relay.cli("token", "list", *args)
    assert r.returncode == 0, r.stderr
    return [line.split("\t") for line in r.stdout.splitlines() if line.strip()]


def wait_revoked(relay, token, device_id="tk1", timeout=3.0):
    """Seconds until a new request with `token` gets 401 "token revoked" (fails after `timeout`)."""
    t0 = time.monotonic()
    refused = wait_until(lambda: (lambda r: r.status_code == 401 and r.text == REVOKED)(
        get(relay, token, device_id=device_id)), timeout, 0.05)
    assert refused, f"{device_id} token still accepted {timeout}s after revocation"
    return time.monotonic() - t0


def test_revoked_token_is_refused_within_a_second(device):
    relay, _ = device
    token = relay.token("tk1")
    assert get(relay, token).status_code == 200
    before = relay.metrics()
    assert revoke(relay, tid(token)) == [tid(token)]
    assert wait_revoked(relay, token) < 1.5
    r = get(relay, token)
    assert (r.status_code, r.text) == (401, REVOKED)
    relay.wait_delta(before, "relay_requests_refused_total", reason="unauthorized")


def test_revocation_reaches_an_open_keep_alive_connection(device):
    relay, srv = device
    token = relay.token("tk1")
    host = f"127.0.0.1:{relay.http_port}"
    first = http_request_bytes("GET", "/d/tk1/one", host, {"Authorization": f"Bearer {token}"})
    msg, sock, reader = raw_request(relay.host, relay.http_port, first)
    try:
        assert msg.status == 200, msg.body
        assert revoke(relay, tid(token)) == [tid(token)]
        wait_revoked(relay, token)
        # The same connection, still open: its next request is checked again.
        sock.sendall(http_request_bytes("GET", "/d/tk1/two", host, {"Authorization": f"Bearer {token}"}))
        second = rp.read_http_message(reader, is_response=True)
        assert second is not None and second.status == 401
        assert second.body == REVOKED.encode()
    finally:
        sock.close()
    assert [r["path"] for r in srv.requests if r["path"] in ("/one", "/two")] == ["/one"], \
        "the refused request must not reach the device"


def test_cookie_from_query_token_is_refused_once_revoked(device):
    # Cookies and URL tokens belong to host routing (each device its own origin).
    relay, _ = device
    token = relay.token("tk1")
    s = requests.Session()
    host = {"Host": f"tk1.localhost:{relay.http_port}"}
    url = relay.url(f"/page?relay_token={token}")
    r = s.get(url, headers=host, allow_redirects=False, timeout=T)
    assert r.status_code == 302 and f"relay_token={token}" in r.headers.get("Set-Cookie", "")
    assert s.get(relay.url("/page"), headers=host, timeout=T).status_code == 200, "the cookie works"
    revoke(relay, tid(token))
    refused = wait_until(lambda: s.get(relay.url("/page"), headers=host, timeout=T).status_code == 401, 3, 0.05)
    assert refused, "the cookie still works after revocation"
    r = s.get(relay.url("/page"), headers=host, timeout=T)
    assert r.text == REVOKED
    # The query token itself is refused too: no new cookie for a revoked token.
    r = requests.get(url, headers=host, allow_redirects=False, timeout=T)
    assert (r.status_code, r.text) == (401, REVOKED) and "Set-Cookie" not in r.headers


def test_other_tokens_of_the_device_keep_working(device):
    relay, _ = device
    gone, kept = relay.token("tk1"), relay.token("tk1")
    revoke(relay, tid(gone))
    wait_revoked(relay, gone)
    r = get(relay, kept)
    assert r.status_code == 200, r.text


def test_revoke_by_device_takes_all_its_tokens_and_no_other(relay_factory, recording_server, agent_factory):
    relay = relay_factory("--wake-timeout", "5s")
    srv = recording_server()
    agent_factory(relay, "tk1", srv.port)
    agent_factory(relay, "tk2", srv.port)
    a, b, other = relay.token("tk1"), relay.token("tk1"), relay.token("tk2")
    assert sorted(revoke(relay, "--device", "tk1")) == sorted([tid(a), tid(b)])
    wait_revoked(relay, a)
    r = get(relay, b)
    assert (r.status_code, r.text) == (401, REVOKED)
    assert get(relay, other, device_id="tk2").status_code == 200
    assert revoke(relay, "--device", "tk1") == [], "nothing left to revoke"
    r = relay.cli("token", "revoke", "--device", "ghost")
    assert r.returncode != 0 and "ghost" in r.stderr


def test_revocation_survives_a_restart(relay):
    relay.add_device("tk3")
    gone, kept = relay.token("tk3"), relay.token("tk3")
    revoke(relay, tid(gone))
    assert relay.stop() == 0
    relay.start()
    # The first request after start is refused: revocations load before the relay is ready.
    r = get(relay, gone, device_id="tk3")
    assert (r.status_code, r.text) == (401, REVOKED)
    assert get(relay, kept, device_id="tk3").status_code == 503, "accepted; the device is offline"


def test_unknown_token_id_fails_and_revokes_nothing(relay):
    relay.add_device("tk4")
    token = relay.token("tk4")
    r = relay.cli("token", "revoke", tid(token), "0011223344556677")
    assert r.returncode != 0
    assert "0011223344556677" in r.stderr and r.stdout.strip() == ""
    r = relay.cli("token", "revoke", "not-a-tid")
    assert r.returncode != 0 and "not a token ID" in r.stderr
    assert relay.cli("token", "revoke").returncode != 0, "an ID or --device is required"
    assert [row[4] for row in token_list(relay, "tk4")] == ["valid"]
    assert get(relay, token, device_id="tk4").status_code == 503


def test_token_list_shows_states_newest_first(relay):
    relay.add_device("tk5")
    relay.add_device("tk6")
    expired = relay.token("tk5", ttl="1s")
    time.sleep(0.01)
    revoked = relay.token("tk5")
    time.sleep(0.01)
    valid = relay.token("tk5")
    time.sleep(0.01)
    other = relay.token("tk6")
    revoke(relay, revoked)  # a whole token names its own ID
    time.sleep(2.1)  # `expired` is past its expiry second

    rows = token_list(relay, "--all")
    assert all(len(row) == 5 for row in rows), rows
    assert [row[0] for row in rows] == [tid(other), tid(valid), tid(revoked), tid(expired)]
    assert {row[0]: row[4] for row in rows} == {
        tid(other): "valid", tid(valid): "valid", tid(revoked): "revoked", tid(expired): "expired"}
    assert {row[0]: row[1] for row in rows}[tid(other)] == "tk6"
    for row in rows:
        created, expires = (datetime.fromisoformat(v.replace("Z", "+00:00")) for v in row[2:4])
        assert created <= expires
    by_id = {row[0]: row for row in rows}
    assert int(datetime.fromisoformat(by_id[tid(valid)][3].replace("Z", "+00:00")).timestamp()) == \
        rp.parse_token(valid).expiry

    # By default expired tokens are left out; a device ID narrows the list.
    assert [row[0] for row in token_list(relay)] == [tid(other), tid(valid), tid(revoked)]
    assert [row[0] for row in token_list(relay, "tk5")] == [tid(valid), tid(revoked)]
    r = relay.cli("token", "list", "ghost")
    assert r.returncode != 0 and "ghost" in r.stderr


def test_minting_still_prints_the_token_alone(relay):
    relay.add_device("tk7")
    relay.add_device("list")
    r = relay.cli("token", "tk7", "--ttl", "1h")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1
    assert rp.parse_token(r.stdout.strip()).device_id == "tk7"
    # A device named like a subcommand is minted for with the explicit `mint`.
    r = relay.cli("token", "mint", "list")
    assert r.returncode == 0 and rp.parse_token(r.stdout.strip()).device_id == "list"
