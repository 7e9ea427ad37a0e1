"""Several loop threads (--threads N): devices steered to the loop that owns them, wakes from any
loop, callback ports per loop, limits and capacity that hold for the whole relay."""

import os
import socket
import time

import pytest
import requests

import relayproto as rp
from helpers import answer_wake, run_bg

T = (5, 30)


def per_thread(m, name: str, n: int) -> list:
    return [m(name, thread=str(i)) for i in range(n)]


@pytest.fixture
def relay4(relay_factory):
    return relay_factory("--threads", "4", "--wake-timeout", "3s")


def test_loops_are_named_and_counted(relay4):
    m = relay4.metrics()
    assert m("relay_threads") == 4
    names = set()
    task_dir = f"/proc/{relay4.proc.p.pid}/task"
    for tid in os.listdir(task_dir):
        with open(f"{task_dir}/{tid}/comm") as f:
            names.add(f.read().strip())
    assert {f"rl-loop-{i}" for i in range(4)} <= names, names  # as top -H shows them


def test_a_device_always_reaches_the_same_loop_whatever_its_source_port(relay4, fake_devices):
    """The BPF program steers by device ID: five sockets (five NAT mappings) of one device land on
    one loop; forty devices spread over all four."""
    dev = relay4.fake_device("steer-one", nsockets=5)
    fake_devices.append(dev)
    before = relay4.metrics()
    for round_ in range(4):
        for s in range(5):
            dev.notify_b(sock=s)
            assert dev.recv(sock=s, timeout=2, acks=True) is not None, "every notify is answered"
    after = relay4.metrics()
    grew = [a - b for a, b in zip(per_thread(after, "relay_thread_datagrams_received_total", 4),
                                  per_thread(before, "relay_thread_datagrams_received_total", 4))]
    assert sorted(grew)[:3] == [0, 0, 0] and max(grew) == 20, grew

    devs = []
    for i in range(40):
        d = relay4.fake_device(f"spread-{i}")
        fake_devices.append(d)
        devs.append(d)
    m = relay4.metrics()
    counts = per_thread(m, "relay_thread_datagrams_received_total", 4)
    assert all(c > 0 for c in counts), counts  # every loop owns some of 41 devices


def test_wakes_of_devices_on_every_loop_from_two_terminal_addresses(relay4, fake_devices):
    """Terminals from 127.0.0.1 and 127.0.0.2 (steered by source address) wake devices owned by
    any loop; each connection request names a callback port in the relay's range, and the
    callback there binds."""
    devs = []
    for i in range(8):
        d = relay4.fake_device(f"wake-{i}")
        fake_devices.append(d)
        d.notify_a()
        devs.append(d)
    ports = set()
    for i, d in enumerate(devs):
        src = "127.0.0.1" if i % 2 == 0 else "127.0.0.2"
        tok = relay4.token(d.device_id)
        sess = requests.Session()
        sess.mount("http://", SourceAdapter(src))
        fut = run_bg(sess.get, relay4.dev_url(d.device_id, f"/n{i}"), headers={"Authorization": f"Bearer {tok}"},
                     timeout=T)
        cr = d.wait_connect_request(0, timeout=5)
        assert relay4.tcp_port <= cr.callback_port < relay4.tcp_port + 4, cr.callback_port
        ports.add(cr.callback_port)
        ans = answer_wake(d, cr)
        r = fut.result(30)
        assert r.status_code == 200 and r.text == f"fake-device GET /n{i}", r.text
        assert ans.result(10) == (rp.STATUS_BOUND, 1)
    m = relay4.metrics()
    assert m("relay_wakes_total", outcome="bound") == 8
    assert sum(per_thread(m, "relay_thread_wakes_started_total", 4)) == 8


def test_callback_on_another_loops_port_is_an_unknown_session(relay4, fake_devices):
    """A session lives on the loop that woke the device: a hello on any other loop's port finds
    nothing (and binds nothing), and the right port still works afterwards."""
    d = relay4.fake_device("wrong-port")
    fake_devices.append(d)
    d.notify_a()
    fut = run_bg(requests.get, relay4.dev_url("wrong-port", "/"), headers=relay4.auth("wrong-port"), timeout=T)
    cr = d.wait_connect_request(0, timeout=5)
    others = [p for p in range(relay4.tcp_port, relay4.tcp_port + 4) if p != cr.callback_port]
    for p in others:
        link, status = d.callback(cr, port=p)
        link.close()
        assert status == rp.STATUS_UNKNOWN_SESSION, (p, status)
    ans = answer_wake(d, cr)
    assert fut.result(30).status_code == 200
    assert ans.result(10) == (rp.STATUS_BOUND, 1)


def test_per_device_limit_holds_across_loops(relay_factory, fake_devices):
    """--max-sessions-per-device counts the device's sessions on every loop together."""
    relay = relay_factory("--threads", "4", "--max-sessions-per-device", "2", "--wake-timeout", "3s")
    d = relay.fake_device("limited")
    fake_devices.append(d)
    d.notify_a()
    tok = relay.token("limited")
    statuses = []
    futs = []
    for src in ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"):
        sess = requests.Session()
        sess.mount("http://", SourceAdapter(src))
        futs.append(run_bg(sess.get, relay.dev_url("limited", "/"), headers={"Authorization": f"Bearer {tok}"},
                           timeout=T))
        time.sleep(0.05)
    statuses = sorted(f.result(30).status_code for f in futs)  # the two wakes time out (504)
    assert statuses.count(429) == 4 and statuses.count(504) == 2, statuses


def test_capacity_bounds_every_shard_together(relay_factory):
    relay = relay_factory("--threads", "4", "--capacity", "5")
    for i in range(5):
        assert relay.cli("device", "add", f"cap-{i}").returncode == 0
    relay.wait_metric("relay_devices", lambda v: v == 5, timeout=5)
    relay.cli("device", "add", "cap-5")
    relay.wait_metric("relay_registry_full_total", lambda v: v >= 1, timeout=5)
    m = relay.metrics()
    assert m("relay_devices") == 5 and m("relay_registry_capacity") == 5


@pytest.mark.parametrize("bad", ["0", "65", "two"])
def test_bad_thread_counts_are_refused(relay_factory, bad):
    relay = relay_factory("--threads", bad, start=False)
    r = relay.cli("check-config", *[str(a) for a in relay.args()[2:]])
    assert r.returncode != 0 and "threads" in (r.stderr + r.stdout), r


class SourceAdapter(requests.adapters.HTTPAdapter):
    """Connections from a chosen loopback address (the relay steers terminals by source)."""

    def __init__(self, source: str, **kw):
        self.source = source
        super().__init__(**kw)

    def init_poolmanager(self, *a, **kw):
        kw["source_address"] = (self.source, 0)
        return super().init_poolmanager(*a, **kw)


def test_a_second_relay_cannot_join_the_first_ones_ports(relay4, relay_factory):
    """SO_REUSEPORT would let a second relay of the same user share the first one's addresses
    (and silently take some of its devices and terminals): it is refused as address in use."""
    for flag, port in (("--http", relay4.http_ports[0]), ("--udp", relay4.udp_ports[0])):
        second = relay_factory("--threads", "2", start=False)
        args = [str(a) for a in second.args()[2:]]
        i = args.index(flag)
        args[i + 1] = f"127.0.0.1:{port}"
        r = second.cli("serve", *args, timeout=20)
        assert r.returncode != 0 and "Address already in use" in r.stderr, (flag, r.returncode, r.stderr[-400:])
    assert relay4.healthy()


def test_offline_verdict_is_whole_on_every_loop(relay4, fake_devices):
    """A device that left is answered 503 with how long ago it left, whichever loop the
    terminal reaches (the time is kept by the loop that owns the device)."""
    d = relay4.fake_device("left-1")
    fake_devices.append(d)
    d.notify_a()
    d.send_raw(rp.leave("left-1", d.key, d.epoch, d.next_counter()))
    relay4.wait_metric("relay_device_leaves_total", lambda v: v >= 1, timeout=5)
    tok = relay4.token("left-1")
    for i in range(2, 10):  # eight source addresses: every loop of four, with near certainty
        sess = requests.Session()
        sess.mount("http://", SourceAdapter(f"127.0.0.{i}"))
        r = sess.get(relay4.dev_url("left-1", "/"), headers={"Authorization": f"Bearer {tok}"}, timeout=T)
        assert r.status_code == 503 and "its agent said it was stopping" in r.text and " s ago" in r.text, r.text
