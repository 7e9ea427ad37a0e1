"""The `relay` command line: devices, tokens, signals, and live effect on a running relay."""

import re
import signal
import time

import pytest
import requests

import relayproto as rp
from conftest import HEX64, hostport, run_cli
from helpers import wait_until

T = (5, 30)


@pytest.fixture
def data(workdir):
    d = workdir / "clidata"
    d.mkdir()
    return d


def cli(data, *args):
    return run_cli(list(args) + ["--data", data])


def test_device_add_prints_secret_alone(data):
    r = cli(data, "device", "add", "cli1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and HEX64.match(lines[0]), r.stdout
    r2 = cli(data, "device", "add", "cli2")
    assert r2.stdout.strip() != lines[0], "secrets must be random"


def test_duplicate_add_fails(data):
    assert cli(data, "device", "add", "dup1").returncode == 0
    r = cli(data, "device", "add", "dup1")
    assert r.returncode != 0
    assert not HEX64.match(r.stdout.strip() or "x")


@pytest.mark.parametrize("bad", ["-lead", "trail-", "Upper", "under_score", "dot.ted", "x" * 64, "sp ace"])
def test_invalid_device_id_rejected(data, bad):
    r = cli(data, "device", "add", bad)
    assert r.returncode != 0, f"{bad!r} accepted"


def test_list_and_remove(data):
    for i in ["ls1", "ls2"]:
        assert cli(data, "device", "add", i).returncode == 0
    r = cli(data, "device", "list")
    assert r.returncode == 0
    rows = [l.split("\t") for l in r.stdout.splitlines() if l.strip()]
    assert sorted(row[0] for row in rows) == ["ls1", "ls2"]
    assert all(len(row) == 2 and row[1].strip() for row in rows), r.stdout
    assert cli(data, "device", "remove", "ls1").returncode == 0
    r = cli(data, "device", "list")
    assert [l.split("\t")[0] for l in r.stdout.splitlines() if l.strip()] == ["ls2"]
    assert cli(data, "token", "ls1").returncode != 0
    assert cli(data, "device", "add", "ls1").returncode == 0  # can be provisioned again


def test_token_format_and_ttl(data):
    assert cli(data, "device", "add", "tok1").returncode == 0
    r = cli(data, "token", "tok1", "--ttl", "1h")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1
    t = rp.parse_token(lines[0])
    assert t.device_id == "tok1"
    assert abs(t.expiry - (time.time() + 3600)) < 120
    d = rp.parse_token(cli(data, "token", "tok1").stdout.strip())
    assert d.expiry > time.time() + 30
    assert d.tid != t.tid


def test_token_for_unknown_device_fails(data):
    r = cli(data, "token", "nobody")
    assert r.returncode != 0
    assert r.stdout.strip() == ""


def test_ready_line_and_sigterm_exit_0(relay_factory):
    relay = relay_factory()
    pat = re.compile(r"relay\.ready\s+http=(\S+)\s+udp=(\S+)\s+tcp=(\S+)\s+metrics=(\S+)")
    m = wait_until(lambda: pat.search(relay.stderr()), 3)
    assert m, relay.stderr()
    assert hostport("127.0.0.1", relay.http_port) in m.group(1).split(",")
    assert hostport("127.0.0.1", relay.udp_port) in m.group(2).split(",")
    assert hostport("127.0.0.1", relay.tcp_port) in m.group(3).split(",")
    assert hostport("127.0.0.1", relay.metrics_port) in m.group(4).split(",")
    relay.proc.send_signal(signal.SIGTERM)
    assert relay.proc.wait(15) == 0, relay.stderr()


def test_sigint_exit_0(relay_factory):
    relay = relay_factory()
    relay.proc.send_signal(signal.SIGINT)
    assert relay.proc.wait(15) == 0, relay.stderr()


def test_ready_line_lists_every_listener(relay_factory):
    relay = relay_factory(udp_count=2, http_count=2)
    for p in relay.http_ports:
        assert requests.get(f"http://127.0.0.1:{p}/healthz", timeout=5).status_code == 200
    line = next(l for l in relay.stderr().splitlines() if "relay.ready" in l)
    for p in relay.http_ports + relay.udp_ports:
        assert f"127.0.0.1:{p}" in line, line


def test_device_added_while_running_is_known(relay):
    tok = None
    relay.add_device("late1", wait=False)
    tok = relay.token("late1")
    t0 = time.monotonic()
    st = wait_until(lambda: requests.get(relay.dev_url("late1", "/"), headers={"Authorization": f"Bearer {tok}"},
                                         timeout=T).status_code == 503, 3, 0.1)
    assert st, "a device added with the CLI must be known to the running relay within ~1 s"
    assert time.monotonic() - t0 < 2.5


def test_device_removed_while_running_refuses_its_token(relay):
    relay.add_device("gone1")
    tok = relay.token("gone1")
    url = relay.dev_url("gone1", "/")
    assert requests.get(url, headers={"Authorization": f"Bearer {tok}"}, timeout=T).status_code == 503
    assert relay.remove_device("gone1").returncode == 0
    t0 = time.monotonic()
    # 401 invalid token: a removed device answers like any unknown one, as a known one would
    ok = wait_until(lambda: requests.get(url, headers={"Authorization": f"Bearer {tok}"}, timeout=T).status_code == 401,
                    4, 0.1)
    assert ok, "removed device still served"
    assert time.monotonic() - t0 < 2.5


def test_reprovisioned_device_invalidates_old_tokens(relay):
    old_secret = relay.add_device("re1")
    old_tok = relay.token("re1")
    assert relay.remove_device("re1").returncode == 0
    time.sleep(0.2)
    new_secret = relay.add_device("re1", wait=False)
    assert new_secret != old_secret
    new_tok = relay.token("re1")
    url = relay.dev_url("re1", "/")
    ok = wait_until(lambda: requests.get(url, headers={"Authorization": f"Bearer {new_tok}"}, timeout=T).status_code == 503,
                    4, 0.1)
    assert ok
    assert requests.get(url, headers={"Authorization": f"Bearer {old_tok}"}, timeout=T).status_code == 401


def test_removed_device_notifies_are_unknown(relay, fake_devices):
    dev = relay.fake_device("gone2")
    fake_devices.append(dev)
    assert relay.remove_device("gone2").returncode == 0
    ok = wait_until(lambda: relay.metrics()("relay_devices") == 0, 3)
    assert ok
    before = relay.metrics()
    dev.notify_a()
    relay.wait_delta(before, "relay_datagrams_dropped_total", reason="unknown_device")


def test_store_survives_restart(relay):
    relay.add_device("keep1")
    tok = relay.token("keep1")
    assert relay.stop() == 0
    relay.start()
    r = requests.get(relay.dev_url("keep1", "/"), headers={"Authorization": f"Bearer {tok}"}, timeout=T)
    assert r.status_code == 503, "device and token must survive a restart"
    assert relay.metrics()("relay_devices") == 1
