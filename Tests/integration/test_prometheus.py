"""/metrics as Prometheus itself sees it: `promtool check metrics` finds nothing to lint after
real traffic, and a real Prometheus server scrapes the relay and answers queries on it.

Skipped only when promtool / prometheus are not installed (`scripts/setup.sh --test` installs
Debian's `prometheus`). Every process is on loopback and stopped at teardown."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest
import requests

from conftest import Proc, free_port, hostport, parse_metrics, wait_tcp

READY_RE = re.compile(r"relay\.ready .*\bmetrics=(\S+)")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (Debian package prometheus)")
    return path


def ready_metrics_addresses(relay, timeout: float = 10.0) -> list:
    """The bound metrics addresses from the relay.ready line (ports resolved when given as 0)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        m = READY_RE.search(relay.stderr())
        if m:
            return m.group(1).split(",")
        time.sleep(0.05)
    pytest.fail(f"no relay.ready line with metrics=\n{relay.proc.describe()}")


def some_traffic(relay, fake_devices) -> None:
    """A device added and registered, a few notifies of both kinds, a forged datagram and a
    refused terminal request, so that counters of every family move off zero."""
    before = relay.metrics()
    dev = relay.fake_device("prom-1")
    fake_devices.append(dev)
    for _ in range(3):
        dev.notify_a()
    for _ in range(2):
        dev.notify_b()
    dev.notify_a(key=bytes(16))  # wrong key: dropped as bad_auth
    relay.wait_delta(before, "relay_notify_total", 3, kind="a")
    relay.wait_delta(before, "relay_notify_total", 2, kind="b")
    relay.wait_delta(before, "relay_datagrams_dropped_total", 1, reason="bad_auth")
    r = requests.get(relay.dev_url("nobody"), timeout=5)
    assert r.status_code in (401, 404), r.status_code


@pytest.mark.timeout(60)
def test_promtool_check_metrics_after_traffic(relay_factory, fake_devices):
    promtool = need("promtool")
    relay = relay_factory("--metrics", "127.0.0.1:0")
    addrs = ready_metrics_addresses(relay)
    fixed = hostport(relay.host, relay.metrics_port)
    assert fixed in addrs and len(addrs) == 2, addrs
    ephemeral = next(a for a in addrs if a != fixed)
    assert not ephemeral.endswith(":0"), f"relay.ready shows the unresolved port: {addrs}"

    some_traffic(relay, fake_devices)

    resp = requests.get(f"http://{ephemeral}/metrics", timeout=5)
    assert resp.status_code == 200, resp.status_code
    body = resp.text
    m = parse_metrics(body)
    assert m("relay_devices") == 1 and m("relay_notify_total", kind="a") >= 3, body

    r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
    problems = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
    assert r.returncode == 0 and not problems, (
        f"promtool check metrics: exit {r.returncode}\n" + "\n".join(problems) + f"\n--- /metrics ---\n{body}")


def prometheus_query(base: str, query: str) -> list:
    r = requests.get(f"{base}/api/v1/query", params={"query": query}, timeout=5)
    r.raise_for_status()
    data = r.json()
    assert data.get("status") == "success", data
    return data["data"]["result"]


def wait_query_value(base: str, query: str, want: float, prom: Proc, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        if not prom.alive():
            pytest.fail(f"prometheus exited with {prom.p.returncode}\n{prom.describe()}")
        try:
            last = prometheus_query(base, query)
            if len(last) == 1 and float(last[0]["value"][1]) == want:
                return
        except requests.RequestException as e:
            last = repr(e)
        time.sleep(0.25)
    try:
        targets = requests.get(f"{base}/api/v1/targets", timeout=5).json()
    except Exception as e:  # noqa: BLE001
        targets = repr(e)
    pytest.fail(f"{query} did not become {want} within {timeout}s (last: {last})\ntargets: {targets}\n"
                f"{prom.describe()}")


@pytest.mark.timeout(110)
def test_prometheus_server_scrapes_relay(relay, fake_devices, workdir, cleanup):
    prometheus = need("prometheus")
    promtool = need("promtool")
    relay.add_device("scraped-1")
    relay.add_device("scraped-2")
    relay.wait_metric("relay_devices", lambda v: v == 2, timeout=5)

    target = hostport(relay.host, relay.metrics_port)
    conf = workdir / "prometheus.yml"
    conf.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: relay\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n")
    check = subprocess.run([promtool, "check", "config", str(conf)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr

    port = free_port("127.0.0.1", "tcp")
    tsdb = workdir / "tsdb"
    tsdb.mkdir()
    prom = Proc([prometheus, f"--config.file={conf}", f"--storage.tsdb.path={tsdb}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], workdir, "prometheus")
    cleanup.append(lambda: prom.stop(timeout=15))
    assert wait_tcp("127.0.0.1", port, 30, prom.p), f"prometheus did not listen\n{prom.describe()}"
    base = f"http://127.0.0.1:{port}"

    wait_query_value(base, 'up{job="relay"}', 1, prom)
    wait_query_value(base, 'relay_devices{job="relay"}', 2, prom)

    # a change on the relay reaches Prometheus at the next scrapes
    dev = relay.fake_device("scraped-3")
    fake_devices.append(dev)
    dev.notify_a()
    relay.wait_metric("relay_devices_alive", lambda v: v >= 1, timeout=5)
    wait_query_value(base, 'relay_devices{job="relay"}', 3, prom)
    wait_query_value(base, 'relay_devices_alive{job="relay"}', 1, prom)
    wait_query_value(base, 'relay_notify_total{job="relay",kind="a"}', 1, prom)

    rc = prom.stop(timeout=15)
    assert rc == 0, f"prometheus exited with {rc} on SIGTERM\n{prom.describe()}"
    assert relay.alive()

