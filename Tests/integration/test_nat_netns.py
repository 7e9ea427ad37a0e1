"""The relay and a real agent behind two real Linux NATs (network namespaces, nftables
masquerade, conntrack with lowered UDP timeouts): rebinding during a wake, a NAT timeout
shorter than the keepalive, one lost keepalive, a stopped agent, a relay restart.

Needs root; skipped with the reason where namespaces cannot be made. `pytest -s` prints the
figures (timings, conntrack entries). Topology and addresses: netns.py.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

import netns

from conftest import Proc, parse_metrics, relay_bin
from devservers import RecordingServer
from helpers import run_bg, wait_until

PERIOD = 20          # max access period (s): short, so that liveness effects show within a test
KEEPALIVE = 3        # NOTIFY_B interval (s), unless a test needs another
UDP_TIMEOUT = 10     # the NATs' unreplied UDP timeout (s): above the keepalive, unless a test lowers it
UDP_STREAM_TIMEOUT = 60
HTTP, UDP, TCP, METRICS = 8080, 4700, 4701, 9100
DEVICE = "cam1"
NOTIFY_B_MATCH = f'iifname "lan" udp dport {UDP} @th,80,8 0x04'  # UDP payload byte 2: datagram type 4


def say(msg: str):
    print(f"[nat] {msg}", flush=True)


@pytest.fixture(scope="module")
def nat():
    why = netns.unavailable()
    if why:
        pytest.skip(f"no network namespaces with a NAT here: {why}")
    netns.remove_stale()
    topo = netns.Topology(UDP_TIMEOUT, UDP_STREAM_TIMEOUT)
    try:
        topo.up()
        yield topo
    finally:
        topo.down()


@pytest.fixture(scope="module")
def site(nat):
    """A provisioned device, its token, its web server in `dev`, and a private copy of the binary
    (relay and agent from the same build, even if $RELAY_BIN is rebuilt while the module runs)."""
    d = Path(tempfile.mkdtemp(prefix="relay-nat-"))
    binary = d / "relay"
    shutil.copy2(relay_bin(), binary)
    data = d / "data"

    def cli(*args) -> str:
        p = subprocess.run([binary, *args, "--data", data], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, f"relay {' '.join(args)}: {p.stderr}"
        return p.stdout.strip().splitlines()[-1]

    secret = cli("device", "add", DEVICE)
    token = cli("token", DEVICE, "--ttl", "1h")
    server = netns.ns_call(nat["dev"], RecordingServer, "127.0.0.1")  # its socket lives in dev
    server.start()
    try:
        yield {"binary": binary, "data": data, "secret": secret, "token": token, "port": server.port}
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)


class Stack:
    """One `relay serve` in pub and one `relay agent` in dev, for one test."""

    def __init__(self, nat: netns.Topology, site: dict, workdir: Path):
        self.nat, self.site, self.workdir = nat, site, workdir
        self.relay: Proc | None = None
        self.agent: Proc | None = None
        self.n = 0

    def start_relay(self, keepalive: int = KEEPALIVE, wake_timeout: str = "5s", period: int = PERIOD,
                    timeout: float = 30):
        self.n += 1
        ip = netns.RELAY_IP
        args = self.nat.prefix("pub") + [
            self.site["binary"], "serve", "--data", self.site["data"], "--http", f"{ip}:{HTTP}",
            "--udp", f"{ip}:{UDP}", "--tcp", f"{ip}:{TCP}", "--metrics", f"{ip}:{METRICS}",
            "--domain", "localhost", "--period", period, "--keepalive", keepalive,
            "--wake-timeout", wake_timeout, "--drain-timeout", "1s"]
        self.relay = Proc(args, self.workdir, f"relay{self.n}")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.relay.alive(), f"relay exited\n{self.relay.describe()}"
            try:
                if self.http("/healthz", timeout=1)[0] == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        pytest.fail(f"relay not ready within {timeout}s\n{self.relay.describe()}")

    def start_agent(self, timeout: float = 20):
        base = self.metric("relay_notify_total", kind="a")
        self.agent = Proc(self.nat.prefix("dev") + [
            self.site["binary"], "agent", "--relay", f"{netns.RELAY_IP}:{UDP}", "--id", DEVICE,
            "--key", self.site["secret"], "--forward", f"127.0.0.1:{self.site['port']}"], self.workdir, "agent")
        ok = wait_until(lambda: self.metric("relay_notify_total", kind="a") > base or not self.agent.alive(),
                            timeout)
        assert ok and self.agent.alive(), f"agent not registered through the NAT\n{self.agent.describe()}"

    def stop(self):
        for p in (self.agent, self.relay):
            if p:
                p.stop()

    # terminal and scrape requests, made from inside pub
    def http(self, path: str, port: int = HTTP, headers: dict | None = None, timeout: float = 30):
        def get():
            t0 = time.monotonic()
            r = requests.get(f"http://{netns.RELAY_IP}:{port}{path}", headers=headers, timeout=timeout)
            return r.status_code, time.monotonic() - t0, r.text

        return netns.ns_call(self.nat["pub"], get, timeout=timeout + 10)

    def get(self, path: str = "/", timeout: float = 30):
        """(status, seconds, body) of a terminal request for the device."""
        return self.http(f"/d/{DEVICE}{path}", headers={"Authorization": f"Bearer {self.site['token']}"},
                         timeout=timeout)

    def metric(self, name: str, **labels) -> float:
        return parse_metrics(self.http("/metrics", port=METRICS, timeout=5)[2])(name, **labels)

    def notifies(self) -> float:
        return self.metric("relay_notify_total")

    def wait_notify(self, timeout: float = KEEPALIVE + 5) -> bool:
        """Waits for the relay to accept one more notify."""
        base = self.notifies()
        return bool(wait_until(lambda: self.notifies() > base, timeout, 0.05))

    def mapping(self, role: str = "cgn") -> list:
        return self.nat.mappings(role, UDP)


@pytest.fixture
def stack(nat, site, tmp_path):
    # every test starts from empty NATs with the module's timeouts and no drop rule
    for role in netns.NATS:
        nat.clear_drops(role)
    nat.set_udp_timeouts(UDP_TIMEOUT, UDP_STREAM_TIMEOUT)
    nat.flush_udp()
    s = Stack(nat, site, tmp_path)
    try:
        yield s
    finally:
        s.stop()
        for role in netns.NATS:
            nat.clear_drops(role)
        nat.set_udp_timeouts(UDP_TIMEOUT, UDP_STREAM_TIMEOUT)


@pytest.mark.timeout(60)
def test_baseline_page_through_two_nats(stack, nat):
    stack.start_relay()
    stack.start_agent()
    status, secs, body = stack.get("/hello?x=1")
    assert status == 200, body
    assert '"path": "/hello?x=1"' in body
    say(f"baseline: 200 in {secs:.3f}s")
    for role in netns.NATS:
        say(f"conntrack -L -p udp in {role}:\n{nat.conntrack_list(role).strip()}")
        assert stack.mapping(role), f"no UDP mapping towards the relay in {role}"
    # two layers: the carrier NAT maps the home router's public port, and the relay sees the device
    # at the carrier NAT's address and port
    home, cgn = stack.mapping("home")[0], stack.mapping("cgn")[0]
    assert home["reply_dport"] == cgn["sport"]
    say(f"the relay sees the device at {netns.CGN_PUBLIC_IP}:{cgn['reply_dport']}")


@pytest.mark.timeout(60)
def test_rebinding_during_a_wake(stack, nat):
    # The carrier NAT forgets the mapping (as after a reboot) right after a notify, so the wake's
    # CONNECT_REQUESTs go to a dead port until the next notify arrives from a new one; the relay
    # then re-sends to the new anchor at once.
    stack.start_relay(wake_timeout="10s")
    stack.start_agent()
    assert stack.wait_notify()
    old = stack.mapping()
    moves = stack.metric("relay_address_changes_total")
    sent = stack.metric("relay_connection_requests_sent_total")
    nat.flush_udp("cgn")
    fut = run_bg(stack.get, "/during-rebind")
    status, secs, body = fut.result(40)
    new = stack.mapping()
    say(f"rebinding during a wake: {status} in {secs:.2f}s; carrier NAT port {[m['reply_dport'] for m in old]} "
        f"-> {[m['reply_dport'] for m in new]}; connection requests sent "
        f"{stack.metric('relay_connection_requests_sent_total') - sent:.0f}")
    assert status == 200, body
    assert stack.metric("relay_address_changes_total") > moves, "the anchor did not move"
    assert old and new and old[0]["reply_dport"] != new[0]["reply_dport"]


@pytest.mark.timeout(60)
def test_nat_timeout_shorter_than_keepalive(stack, nat):
    # The requirement: the device stays reachable behind NATs that forget a mapping after
    # 4 s (unless conntrack has moved it to the stream timeout) with notifies 8 s apart. Once the
    # mapping is gone, a wake that ends before the next notify reaches the device only if the
    # mapping was kept. Answering each notify does not do it: conntrack moves a two-way flow to
    # the stream timeout only on a packet more than 2 s after the mapping was made, and here the
    # next packet comes after the mapping expired (each notify makes a new one).
    keepalive, unreplied = 8, 4
    nat.set_udp_timeouts(unreplied, UDP_STREAM_TIMEOUT)
    stack.start_relay(keepalive=keepalive, wake_timeout="2s")
    stack.start_agent()
    t0 = time.monotonic()
    gone = wait_until(lambda: not stack.mapping(), keepalive + 4, 0.05)
    say(f"NAT timeout {unreplied}s < keepalive {keepalive}s: mapping "
        f"{'expired' if gone else 'still there'} {time.monotonic() - t0:.2f}s after registration "
        f"(cgn: {stack.mapping() or 'no entry'})")
    status, secs, body = stack.get("/after-expiry", timeout=15)
    again = stack.get("/again", timeout=15)
    say(f"request after the mapping expired: {status} in {secs:.2f}s; the next one: {again[0]} in {again[1]:.2f}s")
    assert status == 200, (f"{status} after {secs:.2f}s ({body.strip()}): the relay woke the device through an "
                           f"expired NAT mapping")


@pytest.mark.parametrize("origin", ["period-request", "nat-reboot"])
@pytest.mark.timeout(60)
def test_one_lost_keepalive(stack, nat, origin):
    # Unreplied mappings live 4 s, keepalives come every 3 s: one lost keepalive leaves a 6 s gap,
    # which only a mapping on the stream timeout (two-way traffic) survives. A mapping made by the
    # PERIOD_REQUEST saw its PERIOD_INFO; one a notify re-created after a NAT reboot sees an
    # answer only with NEW notify answers. A long period keeps NOTIFY_A (which would shorten the
    # gap) out of the few keepalives this takes.
    nat.set_udp_timeouts(4, UDP_STREAM_TIMEOUT)
    stack.start_relay(period=40)
    stack.start_agent()
    if origin == "nat-reboot":
        moves = stack.metric("relay_address_changes_total")
        nat.flush_udp()
        assert wait_until(lambda: stack.metric("relay_address_changes_total") > moves, KEEPALIVE + 5), \
            "no notify through a new carrier NAT mapping after the reboot"
    # conntrack promotes a two-way flow to the stream timeout on a packet over 2 s after it began
    assert stack.wait_notify()
    before = stack.mapping()
    moves = stack.metric("relay_address_changes_total")
    nat.add_drop("home", NOTIFY_B_MATCH)
    assert wait_until(lambda: nat.drop_count("home") >= 1, KEEPALIVE + 5, 0.05), "no NOTIFY_B to drop"
    nat.clear_drops("home")
    t_lost = time.monotonic()
    assert stack.wait_notify(), "no notify after the lost one"
    gap = time.monotonic() - t_lost
    after = stack.mapping()
    status, secs, body = stack.get("/after-loss")
    say(f"one lost keepalive ({origin}): mapping before {before}, after {after}; next notify {gap:.2f}s after "
        f"the loss; request {status} in {secs:.2f}s")
    assert stack.metric("relay_address_changes_total") == moves, \
        "the NAT mapping expired during the lost keepalive (the next notify came from a new port)"
    assert status == 200, body


@pytest.mark.timeout(60)
def test_stopped_agent_gets_503_quickly(stack):
    # NEW: the agent tells the relay it is leaving; until then the relay counts it alive for the
    # whole period and every request waits out the wake timeout (504).
    stack.start_relay(wake_timeout="2s")
    stack.start_agent()
    assert stack.get()[0] == 200
    stack.agent.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    rc = stack.agent.wait(10)
    seen = []
    first_503 = None
    while time.monotonic() - t0 < PERIOD / 2:
        status, secs, _ = stack.get(timeout=10)
        seen.append(f"{status}@{time.monotonic() - t0:.1f}s")
        if status == 503:
            first_503 = time.monotonic() - t0
            break
        time.sleep(0.1)
    say(f"stopped agent (exit {rc}): first 503 "
        f"{f'{first_503:.2f}s' if first_503 is not None else 'not within ' + str(PERIOD / 2) + 's'} after SIGTERM "
        f"(period {PERIOD}s); answers {', '.join(seen)}")
    assert rc == 0, stack.agent.describe()
    assert first_503 is not None and first_503 < PERIOD / 2, f"no 503 within period/2: {seen}"


@pytest.mark.timeout(90)
def test_relay_restart(stack):
    # The agent keeps notifying the old epoch through the same mapping; the restarted relay
    # answers with RESYNC, the agent re-registers, and the device is reachable again.
    stack.start_relay()
    stack.start_agent()
    assert stack.get()[0] == 200
    before = stack.mapping()
    t0 = time.monotonic()
    assert stack.relay.stop() == 0, stack.relay.describe()
    t_stopped = time.monotonic() - t0
    stack.start_relay()
    t_ready = time.monotonic() - t0
    seen = []
    status = None
    while time.monotonic() - t0 < 30:
        status, _, body = stack.get(timeout=10)
        seen.append(status)
        if status == 200:
            break
        time.sleep(0.2)
    t_ok = time.monotonic() - t0
    say(f"relay restart: stopped in {t_stopped:.2f}s, ready again at {t_ready:.2f}s, first 200 at {t_ok:.2f}s "
        f"({t_ok - t_ready:.2f}s after ready; answers {seen}); carrier NAT mapping {before} -> {stack.mapping()}")
    assert status == 200, f"device not reachable 30s after the restart: {seen}"
    assert t_ok - t_ready < KEEPALIVE + 10
