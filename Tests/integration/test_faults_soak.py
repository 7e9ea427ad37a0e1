"""A bounded soak (issue 6): thousands of devices notifying and a steady stream of wakes,
while the relay's RSS and open fds are sampled from /proc. Both must stay flat once warm.

RELAY_SOAK_SECONDS (default 30; `make test-soak` runs 60) and RELAY_SOAK_DEVICES (default 2000) size the run; the
figures are printed (run pytest with -s to see them)."""

import os
import secrets
import sqlite3
import threading
import time

import pytest
import requests

import relayproto as rp
from helpers import wait_until

SOAK_S = float(os.environ.get("RELAY_SOAK_SECONDS", "30"))
N_DEV = int(os.environ.get("RELAY_SOAK_DEVICES", "2000"))
N_WAKERS = 8  # devices that answer wakes (responder threads)


def proc_figures(pid: int) -> tuple:
    rss_kb = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return rss_kb, len(os.listdir(f"/proc/{pid}/fd"))


def provision_bulk(relay, n: int) -> dict:
    """soak-0 through the CLI (creates the store and its token key), the rest straight into
    the store as the CLI would write them: ID, derived key, creation time, change counter."""
    secrets_by_id = {"soak-0": relay.add_device("soak-0", wait=False)}
    con = sqlite3.connect(relay.data / "relay.sqlite")
    with con:
        seq = int(con.execute("SELECT value FROM meta WHERE name = 'seq'").fetchone()[0]) + 1
        rows = []
        for i in range(1, n):
            sec = secrets.token_hex(32)
            secrets_by_id[f"soak-{i}"] = sec
            rows.append((f"soak-{i}", rp.derive_key(sec), time.time(), seq))
        con.executemany("INSERT INTO devices (id, key, created_at, seq) VALUES (?, ?, ?, ?)", rows)
        con.execute("UPDATE meta SET value = ? WHERE name = 'seq'", (seq,))
    con.close()
    relay.devices.update(secrets_by_id)
    return secrets_by_id


@pytest.mark.timeout(SOAK_S + 240)
def test_soak_flat_rss_and_fds(relay_factory, fake_devices):
    # Wakes back to back from one address: the abuse limits (tested in test_limits.py) are off.
    relay = relay_factory("--period", "60", "--wake-timeout", "5s", "--idle-link", "2s",
                          "--conn-rate-per-source", "0", "--wakes-per-device-minute", "0", start=False)
    provision_bulk(relay, N_DEV)
    relay.start()
    relay.wait_metric("relay_devices", lambda v: v >= N_DEV, timeout=30)
    # one period request tells the epoch, which is relay-wide
    first = relay.fake_device("soak-0")
    fake_devices.append(first)
    epoch = first.epoch
    socks, keys = [], []
    for i in range(N_DEV):
        d = rp.FakeDevice(f"soak-{i}", relay.devices[f"soak-{i}"], relay.udp_addr)
        d.epoch = epoch
        fake_devices.append(d)
        socks.append(d)
    wakers = socks[1:1 + N_WAKERS]
    for d in wakers:
        d.start_responder()
    tokens = {d.device_id: relay.token(d.device_id) for d in wakers}
    stop = threading.Event()
    counts = {"notifies": 0, "wakes": 0, "ok": 0, "bad": []}

    def notifier():
        # every device: NOTIFY_A each round, NOTIFY_B in between (a few thousand datagrams/s)
        rnd = 0
        while not stop.is_set():
            kind = "A" if rnd % 2 == 0 else "B"
            for d in socks:
                d.notify(kind)
                counts["notifies"] += 1
                if counts["notifies"] % 500 == 0:
                    time.sleep(0.01)  # stay below the socket buffers
            rnd += 1
            stop.wait(0.5)

    def waker(d):
        s = requests.Session()
        n = 0
        while not stop.is_set():
            n += 1
            try:
                # a new connection each time, so each request is a fresh wake
                r = requests.get(relay.dev_url(d.device_id, f"/soak/{n}"), timeout=(5, 30),
                                 headers={"Authorization": f"Bearer {tokens[d.device_id]}", "Connection": "close"})
                counts["wakes"] += 1
                if r.status_code == 200:
                    counts["ok"] += 1
                else:
                    counts["bad"].append(r.status_code)
            except requests.RequestException as e:
                counts["bad"].append(repr(e)[:80])
        s.close()

    threads = [threading.Thread(target=notifier, daemon=True)] + \
        [threading.Thread(target=waker, args=(d,), daemon=True) for d in wakers[:4]]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    samples = []
    while time.monotonic() - t0 < SOAK_S:
        time.sleep(min(5, SOAK_S / 12))
        rss, fds = proc_figures(relay.proc.pid)
        samples.append((round(time.monotonic() - t0, 1), rss, fds, counts["wakes"], counts["notifies"]))
    stop.set()
    for t in threads:
        t.join(40)
    # quiesce: links go idle then expire (--idle-link 2s), terminals are gone
    time.sleep(4)
    m = relay.metrics()
    wait_until(lambda: relay.metrics()("relay_sessions_active") == 0, 10)
    end_rss, end_fds = proc_figures(relay.proc.pid)
    print(f"\nsoak {SOAK_S:.0f}s, {N_DEV} devices: {counts['notifies']} notifies, {counts['wakes']} wakes "
          f"({counts['ok']} ok, {len(counts['bad'])} not), "
          f"relay_notify_total a={m('relay_notify_total', kind='a'):.0f} b={m('relay_notify_total', kind='b'):.0f}")
    print("  t(s)  rss(KiB)  fds  wakes  notifies")
    for s in samples:
        print(f"  {s[0]:5}  {s[1]:8}  {s[2]:3}  {s[3]:5}  {s[4]:8}")
    print(f"  end   {end_rss:8}  {end_fds:3}  (after quiesce)")
    assert relay.alive()
    assert counts["ok"] >= 0.95 * max(1, counts["wakes"]), f"wakes failing: {counts['bad'][:10]}"
    assert counts["wakes"] >= 20
    # flat: compare the second third of the run against the end
    warm = samples[len(samples) // 3]
    growth_kb = max(s[1] for s in samples[len(samples) // 3:]) - warm[1]
    assert growth_kb < max(8192, warm[1] * 0.10), f"RSS grew {growth_kb} KiB after warm-up: {samples}"
    fds_during = [s[2] for s in samples]
    assert max(fds_during) - min(fds_during) < 64, f"fd count not bounded: {fds_during}"
    assert end_fds <= samples[0][2], f"fds after quiesce {end_fds} > first sample {samples[0][2]}"
