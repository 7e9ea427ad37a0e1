"""Liveness a user can trust (docs/PROTOCOL.md, protocol version 2): answered notifies, a
stopped agent offline at once, an unanswered wake answered 503 until the device notifies
again, flapping anchors noticed, old agents refused with a log line, and an agent that says
what it sees and why."""

import re
import socket
import time

import pytest
import requests

import relayproto as rp
from conftest import Proc, agent_command, both_agents, free_port, hostport
from helpers import answer_wake, run_bg, wait_until

T = (5, 30)


def ask(relay, device_id, path="/"):
    started = time.monotonic()
    r = requests.get(relay.dev_url(device_id, path), headers=relay.auth(device_id), timeout=T)
    return r, time.monotonic() - started


# ---------------------------------------------------------------- answers to notifies


def test_every_accepted_notify_gets_one_ack_of_its_size_and_nothing_else_does(relay, fake_devices):
    dev = relay.fake_device("ack1", nsockets=2)
    fake_devices.append(dev)
    # the first notify gives the device its anchor: a new mapping, answered as such
    for kind, moved in (("A", True), ("B", False), ("A", False)):
        c = dev.next_counter()
        sent = dev.notify(kind, sock=0, counter=c)
        got = dev.drain(0, 0.5, acks=True)
        assert len(got) == 1, got
        data, src = got[0]
        ack = rp.parse_ack(data, dev.key)
        assert (ack.counter, ack.epoch, src, len(data)) == (c, dev.epoch, relay.udp_addr, len(sent))
        assert data[2] == (rp.NOTIFY_ACK_MOVED if moved else rp.NOTIFY_ACK), (kind, data[2])
    before = relay.metrics()
    dev.send_raw(sent, sock=1)  # a replay
    dev.notify_a(sock=1, key=rp.derive_key(b"x" * 32))  # a forgery
    relay.wait_delta(before, "relay_datagrams_dropped_total", reason="replay")
    relay.wait_delta(before, "relay_datagrams_dropped_total", reason="bad_auth")
    assert dev.drain(1, 0.5, acks=True) == [], "only accepted notifies are answered"
    assert relay.metrics()("relay_notify_acks_total") == before("relay_notify_acks_total")


# ---------------------------------------------------------------- offline at once


@both_agents
def test_agent_confirms_a_new_mapping_soon(relay_factory, recording_server, agent_factory):
    """NOTIFY_ACK_MOVED (the notify moved the anchor) makes the agent send a NOTIFY_B 3 s later,
    long before its keepalive: a NAT that promotes answered mappings only once they are 2 s old
    (Linux conntrack) then keeps the mapping for its long timeout."""
    relay = relay_factory("--period", "120", "--keepalive", "60")
    agent = agent_factory(relay, "confirm1", recording_server().port)
    before = relay.metrics()
    relay.wait_delta(before, "relay_notify_total", 1, timeout=8, kind="b")
    assert relay.metrics()("relay_notify_total", kind="b") == before("relay_notify_total", kind="b") + 1
    assert agent.alive()


@both_agents
def test_stopped_agent_is_offline_at_once(relay_factory, recording_server, agent_factory):
    relay = relay_factory("--period", "300")
    web = recording_server()
    agent = agent_factory(relay, "bye1", web.port)
    assert ask(relay, "bye1")[0].status_code == 200
    stopped_at = time.monotonic()
    assert agent.stop() == 0, agent.describe()
    r, took = ask(relay, "bye1")
    print(f"\nSIGTERM to the first answer after the agent exited: {time.monotonic() - stopped_at:.2f} s; "
          f"that answer took {took * 1000:.1f} ms: {r.status_code} {r.text.strip()}")
    assert r.status_code == 503, r.text
    assert "its agent said it was stopping" in r.text and re.search(r"\d+\.\d s ago", r.text), r.text
    assert "agent.stop" in agent.stderr()
    assert wait_until(lambda: "device.left" in relay.stderr(), 5), relay.stderr()[-2000:]
    assert relay.metrics()("relay_device_leaves_total") == 1
    # a new agent for the device: alive again
    agent_factory(relay, "bye1", web.port)
    assert ask(relay, "bye1")[0].status_code == 200


def test_unanswered_wake_is_answered_503_until_the_device_notifies(relay_factory, fake_devices):
    relay = relay_factory("--wake-timeout", "1s")
    dev = relay.fake_device("deaf1")
    fake_devices.append(dev)
    dev.notify_a()
    time.sleep(0.1)
    r, took = ask(relay, "deaf1", "/first")
    assert r.status_code == 504, r.text
    dev.drain(0, 0.3)  # the wake's connection requests
    r, took = ask(relay, "deaf1", "/second")
    print(f"\nafter an unanswered wake: {r.status_code} in {took * 1000:.1f} ms: {r.text.strip()}")
    assert r.status_code == 503 and "did not answer its last wake" in r.text, r.text
    got = dev.drain(0, 0.5)
    assert not any(d[2] == rp.CONNECT_REQUEST for d, _ in got), "nothing is sent to a device known not to answer"
    assert wait_until(lambda: "device.wake_unanswered" in relay.stderr(), 5)
    # it notifies again: the next request wakes it
    dev.notify_b()
    fut = run_bg(requests.get, relay.dev_url("deaf1", "/third"), headers=relay.auth("deaf1"), timeout=T)
    answer_wake(dev, dev.wait_connect_request(0, timeout=5))
    assert fut.result(30).status_code == 200


def test_a_replayed_leave_changes_nothing(relay, fake_devices):
    dev = relay.fake_device("lv1", nsockets=2)
    fake_devices.append(dev)
    dev.notify_a()
    leave = dev.send_raw(rp.leave("lv1", dev.key, dev.epoch, dev.next_counter()))
    assert wait_until(lambda: ask(relay, "lv1")[0].status_code == 503, 5)
    dev.notify_a()  # back
    time.sleep(0.1)
    before = relay.metrics()
    dev.send_raw(leave, sock=1)  # captured earlier, replayed
    relay.wait_delta(before, "relay_datagrams_dropped_total", reason="replay")
    fut = run_bg(requests.get, relay.dev_url("lv1", "/still"), headers=relay.auth("lv1"), timeout=T)
    answer_wake(dev, dev.wait_connect_request(0, timeout=5))
    assert fut.result(30).status_code == 200


def test_offline_verdict_says_tenths(relay_factory, fake_devices):
    relay = relay_factory("--period", "2", "--keepalive", "1")
    dev = relay.fake_device("age1")
    fake_devices.append(dev)
    dev.notify_a()
    time.sleep(2.3)
    r, _ = ask(relay, "age1")
    assert r.status_code == 503 and re.search(r"last notify 2\.\d s ago, max access period 2 s", r.text), r.text


# ---------------------------------------------------------------- what the relay notices


def test_two_agents_with_one_id_are_noticed(relay, fake_devices):
    dev = relay.fake_device("twin1", nsockets=2)
    fake_devices.append(dev)
    before = relay.metrics()
    for i in range(6):
        dev.notify_b(sock=i % 2)  # two sources taking turns, as two agents with one ID would
        time.sleep(0.05)
    relay.wait_delta(before, "relay_anchor_flaps_total", 4)
    assert wait_until(lambda: "device.anchor_flap" in relay.stderr(), 5)
    line = next(ln for ln in relay.stderr().splitlines() if "device.anchor_flap" in ln)
    assert "twin1" in line and "two agents with this device ID" in line, line
    assert relay.stderr().count("device.anchor_flap") == 1, "logged at most once a minute per device"


def test_an_old_agent_is_refused_and_named_in_the_log(relay, fake_devices):
    dev = relay.fake_device("old1")
    fake_devices.append(dev)
    before = relay.metrics()
    dev.send_raw(rp.notify("old1", dev.key, dev.epoch, dev.next_counter(), "A", version=rp.VERSION_OLD))
    relay.wait_delta(before, "relay_datagrams_dropped_total", reason="old_version")
    assert dev.drain(0, 0.3, acks=True) == []
    assert wait_until(lambda: "device.old_protocol" in relay.stderr(), 5)
    line = next(ln for ln in relay.stderr().splitlines() if "device.old_protocol" in ln)
    assert "old1" in line and "upgrade the agent" in line, line


# ---------------------------------------------------------------- an agent that says what it sees


def agent_proc(workdir, cleanup, relay_addr, device_id, secret, forward_port, name, impl="swift"):
    p = Proc(agent_command(impl) + ["--relay", relay_addr, "--id", device_id, "--key", secret,
              "--forward", hostport("127.0.0.1", forward_port)], workdir, name)
    cleanup.append(p.stop)
    return p


def says(p, text, timeout):
    return wait_until(lambda: text in p.stderr(), timeout)


@both_agents
@pytest.mark.timeout(60)
def test_agent_names_a_wrong_key_or_id(relay, workdir, cleanup, agent_impl):
    relay.add_device("cred1")
    wrong_key = agent_proc(workdir, cleanup, hostport(relay.host, relay.udp_port), "cred1", "ab" * 32, 9, "wk",
                           agent_impl)
    unknown = agent_proc(workdir, cleanup, hostport(relay.host, relay.udp_port), "nobody-here", "cd" * 32, 9, "uk",
                         agent_impl)
    for p in (wrong_key, unknown):
        assert says(p, "agent.rejected", 15), p.describe()
        assert "check --id and --key" in p.stderr()


@both_agents
@pytest.mark.timeout(60)
def test_agent_names_a_wrong_port_and_a_silent_one(workdir, cleanup, agent_impl):
    closed = free_port("127.0.0.1", "udp")  # nothing listens: the kernel answers ICMP port unreachable
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # listens, never answers
    silent.bind(("127.0.0.1", 0))
    cleanup.append(silent.close)
    a = agent_proc(workdir, cleanup, f"127.0.0.1:{closed}", "port1", "ab" * 32, 9, "closed", agent_impl)
    b = agent_proc(workdir, cleanup, f"127.0.0.1:{silent.getsockname()[1]}", "port2", "ab" * 32, 9, "silent", agent_impl)
    assert says(a, "agent.no_relay", 15), a.describe()
    assert "is --relay the relay's UDP port" in a.stderr()
    assert says(b, "agent.no_answer", 15), b.describe()
    assert "after 3 period requests" in b.stderr()


@both_agents
def test_agent_logs_a_failed_forward(relay, agent_factory):
    closed = free_port("127.0.0.1", "tcp")
    agent = agent_factory(relay, "fwd1", closed)
    assert "agent.registered" in agent.stderr()
    r, _ = ask(relay, "fwd1")
    assert r.status_code == 502, r.text
    assert says(agent, "agent.forward_failed", 5), agent.describe()
    assert f"127.0.0.1:{closed}" in agent.stderr() and "refused" in agent.stderr().lower()


@both_agents
@pytest.mark.timeout(90)
def test_agent_notices_the_relay_gone_and_registers_when_it_is_back(relay_factory, recording_server, agent_factory):
    relay = relay_factory("--period", "4", "--keepalive", "1")
    web = recording_server()
    agent = agent_factory(relay, "back1", web.port)
    assert relay.stop() == 0
    assert says(agent, "agent.relay_lost", 15), agent.describe()
    registered = agent.stderr().count("agent.registered")
    relay.start()  # same ports and store, new epoch
    assert wait_until(lambda: agent.stderr().count("agent.registered") > registered, 40), agent.describe()
    assert wait_until(lambda: ask(relay, "back1")[0].status_code == 200, 10)


@pytest.mark.timeout(60)
def test_agent_retries_a_callback_whose_syn_was_lost(workdir, cleanup):
    """A relay (played here) whose callback port drops the agent's first SYN (its accept queue
    is full): the resent CONNECT_REQUEST gets a fresh attempt that connects at once, instead of
    waiting for TCP's own SYN retry a second later."""
    secret = bytes(range(32))
    key = rp.derive_key(secret)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(10)
    cb = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    cb.bind(("127.0.0.1", 0))
    cb.listen(0)  # an accept queue of one
    filler = socket.create_connection(cb.getsockname(), timeout=5)  # fills it: later SYNs are dropped
    web = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # the device's local server: connects suffice
    web.bind(("127.0.0.1", 0))
    web.listen(16)
    cleanup += [udp.close, cb.close, filler.close, web.close]
    agent = agent_proc(workdir, cleanup, f"127.0.0.1:{udp.getsockname()[1]}", "syn1", secret.hex(),
                       web.getsockname()[1], "syn")
    data, agent_addr = udp.recvfrom(512)
    d = rp.decode(data, key)
    assert d.dtype == rp.PERIOD_REQUEST
    udp.sendto(rp.period_info("syn1", key, d.body[:8], 7, 300, 25, cb.getsockname()[1]), agent_addr)
    sid, nonce = bytes(range(16)), bytes(range(16, 32))
    request = rp.connect_request("syn1", key, sid, nonce, cb.getsockname()[1])
    udp.sendto(request, agent_addr)  # the agent's callback SYN meets the full queue
    time.sleep(0.3)
    queued, _ = cb.accept()  # the filler: the queue has room again
    queued.close()
    resent_at = time.monotonic()
    udp.sendto(request, agent_addr)  # the relay's resend
    cb.settimeout(5)
    try:
        link, _ = cb.accept()
    except socket.timeout:
        pytest.fail(f"no callback after the resend\n{agent.describe()}")
    link.settimeout(5)
    hello = link.recv(256)
    took = time.monotonic() - resent_at
    print(f"\nhello {took * 1000:.0f} ms after the resend (TCP's own SYN retry comes 1 s after the first)")
    assert rp.parse_hello(hello)[1] == sid
    assert took < 0.8, "the callback waited for the lost SYN's retry instead of trying again"
    link.close()
    assert agent.alive(), agent.describe()
