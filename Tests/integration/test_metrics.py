"""The Prometheus endpoint exposes every documented series, starting from zero."""

import requests

from conftest import parse_metrics

SERIES = [
    ("relay_notify_total", {"kind": "a"}), ("relay_notify_total", {"kind": "b"}),
    *[("relay_datagrams_dropped_total", {"reason": r})
      for r in ["malformed", "unknown_device", "bad_auth", "replay", "stale_epoch"]],
    ("relay_period_requests_total", {}), ("relay_address_changes_total", {}),
    ("relay_connection_requests_sent_total", {}),
    *[("relay_wakes_total", {"outcome": o}) for o in ["started", "bound", "timeout"]],
    *[("relay_requests_refused_total", {"reason": r})
      for r in ["offline", "unknown", "unauthorized", "forbidden", "bad_request", "capacity"]],
    ("relay_callbacks_rejected_total", {}), ("relay_sessions_active", {}), ("relay_sessions_reused_total", {}),
    ("relay_relayed_bytes_total", {"direction": "to_device"}), ("relay_relayed_bytes_total", {"direction": "to_terminal"}),
    ("relay_devices", {}), ("relay_devices_alive", {}),
]


def test_parse_metrics_helper():
    m = parse_metrics('# HELP x y\n# TYPE a counter\na{k="v",j="w"} 3\nb 4.5\nc{} 1e3\n\n')
    assert m("a", k="v", j="w") == 3 and m("b") == 4.5 and m("c") == 1000 and m("missing") == 0


def test_all_documented_series_present_and_zero(relay):
    text = relay.metrics_text()
    m = parse_metrics(text)
    for name, labels in SERIES:
        key = (name, tuple(sorted(labels.items())))
        assert key in m, f"{name}{labels} missing from /metrics:\n{text}"
        if name not in ("relay_devices", "relay_devices_alive"):
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
