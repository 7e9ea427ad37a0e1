"""The Prometheus endpoint exposes every documented series, starting from zero."""

import os
import re
import time

import pytest
import requests

import relayproto as rp

from conftest import parse_metrics

SERIES = [
    ("relay_notify_total", {"kind": "a"}), ("relay_notify_total", {"kind": "b"}),
    *[("relay_datagrams_dropped_total", {"kind": k, "reason": r})
      for k in ["period_request", "a", "b", "leave", "other"]
      for r in ["malformed", "unknown_device", "bad_auth", "replay", "stale_epoch", "old_version"]],
    ("relay_notify_acks_total", {}), ("relay_device_leaves_total", {}), ("relay_anchor_flaps_total", {}),
    ("relay_rejects_sent_total", {}), ("relay_events_lost_total", {}),
    ("relay_period_requests_total", {}), ("relay_address_changes_total", {}),
    ("relay_connection_requests_sent_total", {}),
    *[("relay_wakes_total", {"outcome": o}) for o in ["started", "bound", "timeout", "offline", "refused"]],
    *[("relay_requests_refused_total", {"reason": r})
      for r in ["offline", "unknown", "unauthorized", "forbidden", "bad_request", "capacity"]],
    ("relay_callbacks_rejected_total", {}), ("relay_sessions_active", {}), ("relay_sessions_reused_total", {}), ("relay_spliced_bodies_total", {}),
    ("relay_relayed_bytes_total", {"direction": "to_device"}), ("relay_relayed_bytes_total", {"direction": "to_terminal"}),
    ("relay_devices", {}), ("relay_devices_alive", {}),
    ("relay_registry_capacity", {}), ("relay_registry_full_total", {}), ("relay_max_access_period_seconds", {}),
    ("relay_udp_receive_buffer_bytes", {}),
    *[("relay_wake_duration_seconds_bucket", {"le": le}) for le in ["0.00025", "0.005", "2.5", "+Inf"]],
    ("relay_wake_duration_seconds_count", {}), ("relay_wake_duration_seconds_sum", {}),
    *[("relay_terminal_responses_total", {"origin": "relay", "code": c})
      for c in ["200", "302", "308", "400", "401", "403", "404", "408", "431", "502", "503", "504", "other"]],
    *[("relay_terminal_responses_total", {"origin": "device", "code": c})
      for c in ["1xx", "2xx", "3xx", "4xx", "5xx", "other"]],
    ("relay_terminal_connections", {}), ("relay_draining", {}),
    *[("relay_limit_rejections_total", {"limit": k})
      for k in ["source_connections", "source_rate", "device_sessions", "device_wakes", "idle_timeout",
                "callback_source"]],
    ("relay_accept_paused_total", {}), ("relay_store_up", {}), ("relay_admin_unauthorized_total", {}),
    ("relay_limit_tracked_keys", {"scope": "source"}),
    ("relay_limit_tracked_keys", {"scope": "device"}), ("relay_limit_tracked_keys", {"scope": "callback_source"}),
    ("process_cpu_seconds_total", {}), ("process_resident_memory_bytes", {}), ("process_open_fds", {}),
    ("process_max_fds", {}), ("process_start_time_seconds", {}), ("process_virtual_memory_bytes", {}),
]
# Gauges and process figures that are not zero on a fresh relay.
NONZERO_OK = {"relay_threads", "relay_store_up",
              "relay_devices", "relay_devices_alive", "relay_registry_capacity", "relay_max_access_period_seconds",
              "relay_udp_receive_buffer_bytes",
              "relay_terminal_connections", "relay_limit_tracked_keys"}


def test_parse_metrics_helper():
    m = parse_metrics('# HELP x y\n# TYPE a counter\na{k="v",j="w"} 3\nb 4.5\nc{} 1e3\n\n')
    assert m("a", k="v", j="w") == 3 and m("b") == 4.5 and m("c") == 1000 and m("missing") == 0


def test_all_documented_series_present_and_zero(relay):
    text = relay.metrics_text()
    m = parse_metrics(text)
    for name, labels in SERIES:
        key = (name, tuple(sorted(labels.items())))
        assert key in m, f"{name}{labels} missing from /metrics:\n{text}"
        health_poll = name == "relay_terminal_responses_total" and labels.get("origin") == "relay" and \
            labels.get("code") in ("200", "503")  # the fixture polled /healthz until ready
        if name not in NONZERO_OK and not name.startswith("process_") and not health_poll:
            assert m[key] == 0, f"{name}{labels} = {m[key]} on a fresh relay"


def test_devices_gauge_counts_store(relay):
    before = relay.metrics()("relay_devices")
    relay.add_device("m1")
    relay.add_device("m2")
    relay.wait_metric("relay_devices", lambda v: v == before + 2, timeout=3)


def test_metrics_content_type(relay):
    r = requests.get(f"http://127.0.0.1:{relay.metrics_port}/metrics", timeout=5)
    assert r.status_code == 200
    assert r.headers.get("Content-Type", "").startswith("text/plain")


def test_every_family_has_help_and_type(relay):
    text = relay.metrics_text()
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    helped = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}
    assert families == helped
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{")[0].split()[0]
            base = name[:-len("_bucket")] if name.endswith("_bucket") else \
                name[:-len("_count")] if name.endswith("_count") else name[:-len("_sum")] if name.endswith("_sum") else name
            assert name in families or base in families, f"{name} has no # TYPE"
    # no device IDs as labels: nothing but the fixed label names appears
    labels = set(re.findall(r'([a-z_]+)="', text))
    # (`thread`: the loop thread of the relay_thread_* families, 0..N-1)
    assert labels <= {"kind", "reason", "outcome", "direction", "le", "origin", "code", "limit", "scope", "leg",
                      "thread"}, labels


PER_THREAD = ["relay_thread_datagrams_received_total", "relay_thread_wakes_started_total",
              "relay_thread_terminal_connections"]


def test_loop_threads_are_reported(relay, fake_devices):
    """relay_threads is the relay's loop count and each per-thread family has one series per
    loop, summing to its relay-wide family. A core that reports no loops counts as one and
    has nothing more to check."""
    m = relay.metrics()
    if ("relay_threads", ()) not in m:
        assert not any(n in m.names() for n in PER_THREAD), "per-thread series without relay_threads"
        pytest.skip("this core reports no loop threads (relay_threads absent): one loop")
    assert m("relay_threads") == relay.threads, (m("relay_threads"), relay.threads)
    relay.add_device("loops1")
    dev = relay.fake_device("loops1")
    fake_devices.append(dev)
    dev.notify_a()
    relay.wait_metric("relay_notify_total", lambda v: v >= 1, timeout=5, kind="a")
    m = relay.metrics()
    for name in PER_THREAD:
        threads = sorted(int(dict(ls)["thread"]) for (n, ls) in m if n == name)
        assert threads == list(range(relay.threads)), (name, threads)
    total = m("relay_thread_datagrams_received_total")  # the sum over the thread label
    assert total == m("relay_datagrams_received_total") and total >= 2, total  # PERIOD_REQUEST and NOTIFY_A


def test_process_metrics_are_this_process(relay):
    m = relay.metrics()
    pid = relay.proc.p.pid
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    assert abs(m("process_open_fds") - fds) <= 4, (m("process_open_fds"), fds)
    with open(f"/proc/{pid}/status") as f:
        rss_kib = int(next(line for line in f if line.startswith("VmRSS:")).split()[1])
    assert 0.5 < m("process_resident_memory_bytes") / (rss_kib * 1024) < 2
    assert abs(m("process_start_time_seconds") - time.time()) < 600
    assert m("process_max_fds") >= fds


def test_refusals_and_answers_by_status(relay):
    before = relay.metrics()
    assert requests.get(relay.url("/d/No_Such/"), timeout=5).status_code == 404  # not a device ID
    assert requests.get(relay.url("/healthz"), timeout=5).status_code == 200
    assert requests.get(relay.url("/d/nosuch"), allow_redirects=False, timeout=5).status_code == 308
    relay.wait_delta(before, "relay_terminal_responses_total", origin="relay", code="404")
    relay.wait_delta(before, "relay_terminal_responses_total", origin="relay", code="200")
    relay.wait_delta(before, "relay_terminal_responses_total", origin="relay", code="308")
    m = relay.metrics()
    assert m("relay_requests_refused_total", reason="unknown") == before("relay_requests_refused_total", reason="unknown") + 1


def test_wake_latency_histogram_and_device_statuses(relay, recording_server, agent_factory):
    srv = recording_server()
    agent_factory(relay, "hist1", srv.port)
    before = relay.metrics()
    r = requests.get(relay.dev_url("hist1", "/x"), headers=relay.auth("hist1"), timeout=(5, 30))
    assert r.status_code == 200
    relay.wait_delta(before, "relay_wake_duration_seconds_count")
    relay.wait_delta(before, "relay_terminal_responses_total", origin="device", code="2xx")
    m = relay.metrics()
    assert m("relay_wake_duration_seconds_count") == m("relay_wakes_total", outcome="bound")
    assert m("relay_wake_duration_seconds_bucket", le="+Inf") == m("relay_wake_duration_seconds_count")
    assert 0 < m("relay_wake_duration_seconds_sum") - before("relay_wake_duration_seconds_sum") < 5
    # cumulative buckets never decrease
    les = sorted(((float(dict(k[1])["le"]), v) for k, v in m.items() if k[0] == "relay_wake_duration_seconds_bucket"))
    assert all(a[1] <= b[1] for a, b in zip(les, les[1:]))


def test_dropped_datagrams_carry_their_kind(relay, fake_devices):
    dev = relay.fake_device("kind1")
    fake_devices.append(dev)
    sock = dev.add_socket()  # a NOTIFY_B from a new address is verified (from the anchor it is not)
    before = relay.metrics()
    dev.notify("B", sock=sock, key=rp.derive_key(os.urandom(32)))
    relay.wait_delta(before, "relay_datagrams_dropped_total", kind="b", reason="bad_auth")
    assert relay.metrics()("relay_datagrams_dropped_total", kind="a", reason="bad_auth") == \
        before("relay_datagrams_dropped_total", kind="a", reason="bad_auth")


def test_udp_receive_buffer_grant_is_reported(relay):
    """The relay asks 8 MiB per UDP socket; net.core.rmem_max may cap the grant. The gauge
    shows what the kernel gave, and a capped grant is logged once at start with the fix."""
    asked = 8 << 20
    with open("/proc/sys/net/core/rmem_max") as f:
        rmem_max = int(f.read())
    m = parse_metrics(relay.metrics_text())
    assert m("relay_udp_receive_buffer_bytes") == min(asked, rmem_max)
    logged = "udp.receive_buffer.capped" in relay.proc.stderr() + relay.proc.stdout()
    assert logged == (rmem_max < asked)


def test_metrics_port_holds_no_silent_or_surplus_connection(relay_factory):
    """A scraper that never sends its request is closed at the header timeout, and at most
    32 scrape connections are open at once (the port needs no trust to be exposed)."""
    relay = relay_factory("--header-timeout", "1s")
    import socket
    silent = [socket.create_connection((relay.host, relay.metrics_port), timeout=5) for _ in range(40)]
    try:
        closed = 0
        for s in silent:
            s.settimeout(3)
            try:
                closed += s.recv(1) == b""
            except ConnectionResetError:
                closed += 1
            except socket.timeout:
                pass
        assert closed == 40, f"only {closed} of 40 silent scrape connections were closed"
        assert "relay_notify_total" in relay.metrics_text()
    finally:
        for s in silent:
            s.close()
