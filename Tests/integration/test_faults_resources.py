"""Fault injection (issue 6): a terminal vanishing mid-upload, connection requests lost on
the way, a full registry, an unreadable store. Resource checks read the relay's own
/proc/<pid>/fd, so a leaked socket or session shows up as a number, not a guess."""

import os
import socket
import struct
import threading
import time

import pytest
import requests

import relayproto as rp
from conftest import Relay, run_cli
from helpers import connect, run_bg, wait_until

T = (5, 30)


def fd_count(relay: Relay) -> int:
    return len(os.listdir(f"/proc/{relay.proc.pid}/fd"))


def wait_fds(relay: Relay, want: int, timeout: float = 10.0) -> int:
    got = wait_until(lambda: fd_count(relay) <= want and fd_count(relay), timeout, 0.1)
    return got or fd_count(relay)


@pytest.mark.timeout(90)
def test_terminal_vanishes_mid_upload(relay, fake_devices):
    dev = relay.fake_device("up1")
    fake_devices.append(dev)
    dev.notify_a()
    relay.metrics()  # the metrics connection is closed again before the baseline
    time.sleep(0.3)
    base_fds = fd_count(relay)
    base_sessions = relay.metrics()("relay_sessions_active")
    tok = relay.token("up1")
    size = 64 * 1024 * 1024
    term = connect(relay.host, relay.http_port, 10)
    term.sendall(f"POST /d/up1/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
                 f"Content-Length: {size}\r\n\r\n".encode())
    cr = dev.wait_connect_request(timeout=5)
    link, status = dev.callback(cr)
    assert status == rp.STATUS_BOUND
    got = [0]
    link_closed = threading.Event()

    def device_reads():
        link.settimeout(20)
        try:
            while True:
                d = link.recv(1 << 16)
                if not d:
                    break
                got[0] += len(d)
        except OSError:
            pass
        link_closed.set()

    reader = threading.Thread(target=device_reads, daemon=True)
    reader.start()
    chunk = b"u" * 65536
    for _ in range(32):  # 2 MiB of the 64 MiB body
        term.sendall(chunk)
    assert wait_until(lambda: got[0] >= 1024 * 1024, 10), f"device got only {got[0]} bytes of the upload"
    assert fd_count(relay) >= base_fds + 2  # terminal and device link
    # the terminal vanishes: RST, no FIN, mid-body
    term.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    term.close()
    assert link_closed.wait(10), "the relay kept the device link open after the terminal vanished"
    link.close()
    assert got[0] < size
    after = wait_fds(relay, base_fds)
    relay.wait_metric("relay_sessions_active", lambda v: v == base_sessions, timeout=10)
    print(f"\nfds: baseline {base_fds}, during upload >= {base_fds + 2}, after {after}; device got {got[0]} B")
    assert after == base_fds, f"relay fds {after} != baseline {base_fds}: something leaked"
    assert relay.alive()


@pytest.mark.timeout(60)
def test_connect_requests_lost_retransmission_wins(relay, fake_devices):
    dev = relay.fake_device("lossy1")
    fake_devices.append(dev)
    dev.notify_a()
    before = relay.metrics()
    tok = relay.token("lossy1")
    fut = run_bg(requests.get, relay.dev_url("lossy1", "/x"), headers={"Authorization": f"Bearer {tok}"},
                 timeout=T)
    # the first three connection requests are "lost": seen and dropped
    dropped = [dev.wait_connect_request(timeout=5) for _ in range(3)]
    sids = {cr.session_id for cr in dropped}
    assert len(sids) == 1, "retransmissions must carry the same session ID"
    gaps = [b.received_at - a.received_at for a, b in zip(dropped, dropped[1:])]
    cr = dev.wait_connect_request(timeout=5)
    assert cr.session_id in sids
    link, status = dev.callback(cr)
    assert status == rp.STATUS_BOUND
    served = run_bg(dev.serve_link, link, cr.sid_hex, keep_alive=False)
    r = fut.result(30)
    assert r.status_code == 200, r.text
    assert served.result(10) == 1
    link.close()
    sent = relay.metrics()("relay_connection_requests_sent_total") - before("relay_connection_requests_sent_total")
    print(f"\nconnection requests sent: {sent}, gaps between the dropped ones: {[round(g, 3) for g in gaps]} s")
    assert sent >= 4
    assert gaps[1] > gaps[0] * 1.3, f"backoff should grow: {gaps}"


@pytest.mark.timeout(90)
def test_registry_full_refuses_new_devices_counted(relay_factory, fake_devices):
    relay = relay_factory("--capacity", "2", "--wake-timeout", "5s")
    d1, d2 = relay.fake_device("full1"), relay.fake_device("full2")
    fake_devices += [d1, d2]
    for d in (d1, d2):
        d.notify_a()
        d.start_responder()
    before = relay.metrics()
    assert before("relay_registry_capacity") == 2
    relay.add_device("full3", wait=False)
    relay.wait_delta(before, "relay_registry_full_total", 1, timeout=5)
    m = relay.metrics()
    assert m("relay_devices") == 2
    # the refused device is unknown to the relay: its datagrams are dropped and counted
    d3 = rp.FakeDevice("full3", relay.devices["full3"], relay.udp_addr)
    fake_devices.append(d3)
    with pytest.raises(TimeoutError):
        d3.register(timeout=2)
    assert relay.metrics()("relay_datagrams_dropped_total", reason="unknown_device") > \
        before("relay_datagrams_dropped_total", reason="unknown_device")
    r = requests.get(relay.dev_url("full3", "/"), headers=relay.auth("full3"), timeout=T)
    assert (r.status_code, r.text) == (401, "invalid token\n"), r.text  # unknown to the relay
    # existing devices are unaffected
    for name in ("full1", "full2"):
        r = requests.get(relay.dev_url(name, "/ok"), headers=relay.auth(name), timeout=T)
        assert r.status_code == 200, (name, r.status_code, r.text)
    # (A put queued to the running loop is refused there: the count above is the record.
    # The control layer logs device.added for it all the same; see Tests/fuzz/README.md.)
    # A relay started with more devices than capacity serves the ones that fit and says so.
    relay.stop()
    relay.start()
    m = relay.metrics()
    assert m("relay_devices") == 2 and m("relay_registry_full_total") >= 1
    assert "registry full" in relay.stderr()
    for name in ("full1", "full2"):
        fake = rp.FakeDevice(name, relay.devices[name], relay.udp_addr)
        fake_devices.append(fake)
        fake.register()
        fake.notify_a()
        fake.start_responder()
        r = requests.get(relay.dev_url(name, "/ok"), headers=relay.auth(name), timeout=T)
        assert r.status_code == 200, (name, r.status_code, r.text)
    assert relay.alive()


def _start_fails(relay_factory, data_dir):
    r = relay_factory(data_dir=data_dir, start=False)
    p = run_cli(["serve", "--data", data_dir, "--http", f"127.0.0.1:{r.http_port}", "--udp",
                 f"127.0.0.1:{r.udp_port}", "--tcp", f"127.0.0.1:{r.tcp_port}"], timeout=30)
    return p


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", ["garbage", "directory"])
def test_store_unreadable_at_start(relay_factory, workdir, damage):
    data = workdir / f"store-{damage}"
    data.mkdir(mode=0o700)
    store = data / "relay.sqlite"
    if damage == "garbage":
        store.write_bytes(b"this is not an SQLite database, it was damaged on disk\n" * 100)
    else:
        store.mkdir()
    p = _start_fails(relay_factory, data)
    print(f"\nexit {p.returncode}; stderr: {p.stderr.strip()[-300:]}")
    assert p.returncode != 0, "the relay must not serve from an unreadable store"
    assert "relay.sqlite" in p.stderr or str(data) in p.stderr, f"the error should name the store: {p.stderr!r}"
    assert "Fatal error" not in p.stderr and "Stack dump" not in p.stderr, "a clear error, not a crash"


@pytest.mark.timeout(60)
@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_store_permission_denied_at_start(relay_factory, workdir):
    data = workdir / "store-perm"
    data.mkdir(mode=0o700)
    assert run_cli(["device", "add", "perm1", "--data", data]).returncode == 0
    os.chmod(data / "relay.sqlite", 0)
    p = _start_fails(relay_factory, data)
    assert p.returncode != 0 and "relay.sqlite" in p.stderr
