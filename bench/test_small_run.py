"""The small relay-bench run: every phase reports, the JSON parses; a tiny `--threads 1,2` run
puts each figure beside the first count's. Figures are printed, never asserted as timings (they vary from machine to machine and run to run).

Runs the built binary: $RELAY_BENCH_BIN, or .build/debug/relay-bench from the repo root.
Build it first, e.g. `swift build --scratch-path .build-bench --product relay-bench` and
RELAY_BENCH_BIN=.build-bench/debug/relay-bench (the bench builds `relay` next to itself
when it is missing).
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("RELAY_BENCH_BIN", ROOT / ".build" / "debug" / "relay-bench"))
PHASES = ["registration", "steady", "memory", "wakes", "datapath"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: build relay-bench first or set RELAY_BENCH_BIN")
    out = tmp_path_factory.mktemp("bench") / "small.json"
    proc = subprocess.run(
        [str(BIN), "--devices", "10000", "--duration", "5", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_table_has_machine_command_and_every_phase(small_run):
    stdout, _ = small_run
    assert "command: " in stdout
    for key in ("nproc", "model_name", "kernel"):
        assert f"machine.{key}:" in stdout
    for phase in PHASES:
        assert f"[{phase}]" in stdout, phase


def test_json_has_every_phase(small_run):
    _, report = small_run
    assert report["machine"]["nproc"]
    assert "relay-bench" in report["command"]
    for phase in PHASES:
        assert phase in report["phases"], phase
        section = report["phases"][phase]
        assert section["skipped"] or section["figures"], phase


def test_figures_are_printed(small_run):
    stdout, report = small_run
    phases = report["phases"]
    reg = phases["registration"]["figures"]
    assert reg["registered"] == 10000
    assert reg["relay_notify_a"] > 0  # a loaded machine may drop a few: reported, not asserted
    for key in ("seconds", "datagrams_per_s", "relay_dropped", "kernel_rcvbuf_errors"):
        assert key in reg, key
    steady = phases["steady"]["figures"]
    for key in ("relay_ingest_rate", "bare_ingest_rate", "ingest_ratio", "relay_cpu_ns_per_datagram"):
        assert key in steady, key
    mem = phases["memory"]["figures"]
    assert "bytes_per_device" in mem
    wakes = phases["wakes"]["figures"]
    for level in (1, 8, 32):
        for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "per_s"):
            assert f"c{level}_{key}" in wakes
    assert wakes["offline_requests"] > 0 and wakes["unknown_requests"] > 0
    for level in (1, 8, 32):
        assert wakes[f"c{level}_relay_cpu_us"] > 0
    if "nginx_conn_requests" in wakes:  # the per-connection baseline, when nginx is installed
        assert wakes["nginx_conn_requests"] > 0 and wakes["nginx_conn_relay_cpu_us"] > 0
        assert wakes["wake_cpu_ratio"] > 0
    data = phases["datapath"]
    if not data["skipped"]:
        figures = data["figures"]
        # One server behind every proxy: the web device answered directly and through the relay.
        for target in ("direct", "relay", "nginx", "agent", "origin"):
            assert figures[f"small_rps_{target}"] > 0, target
            assert figures[f"bulk_mibps_{target}"] > 0, target
        assert figures["small_cpu_us_relay"] > 0 and figures["bulk_cpu_ms_per_mib_relay"] > 0
        assert "small_ratio_relay_nginx" in figures
        if "small_rps_haproxy" in figures:
            assert figures["small_rps_haproxy_splice"] > 0 and "bulk_ratio_relay_haproxy_splice" in figures
        assert not any("non-2xx" in n for n in data.get("notes", [])), data.get("notes")
    assert phases["relay"]["figures"]["exit_status"] == 0


# ---------------------------------------------------------------- --threads: the same run at each count


@pytest.fixture(scope="module")
def threads_run(tmp_path_factory):
    """A tiny `--threads 1,2` run (about 25 s): two whole runs, then the side-by-side table."""
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: build relay-bench first or set RELAY_BENCH_BIN")
    out = tmp_path_factory.mktemp("bench") / "threads.json"
    proc = subprocess.run(
        [str(BIN), "--devices", "2000", "--duration", "2", "--threads", "1,2", "--senders", "2",
         "--phases", "steady,wakes", "--concurrency", "1,8", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_threads_run_has_one_run_per_count(threads_run):
    stdout, report = threads_run
    assert report["threads"] == [1, 2]
    assert [run["threads"] for run in report["runs"]] == [1, 2]
    assert stdout.count("=== loop threads: ") == 2
    for run, n in zip(report["runs"], [1, 2]):
        end = run["phases"]["relay"]["figures"]
        assert end["threads_asked"] == n and end["threads_reported"] >= 1, end
        assert end["exit_status"] == 0
        assert run["phases"]["steady"]["figures"]["relay_received"] > 0
    # the top level is the first run's, as a single run writes it
    assert report["config"]["threads"] == "1" and "steady" in report["phases"]


def test_threads_run_prints_each_figure_beside_the_first(threads_run):
    stdout, report = threads_run
    assert "[scaling]" in stdout
    header = next(line for line in stdout.splitlines() if "threads=1" in line)
    assert "threads=2" in header and "2/1" in header, header
    rows = {row["key"]: row for row in report["scaling"]}
    for key in ("steady.relay_ingest_rate", "steady.relay_cpu_ns_per_datagram", "steady.relay_cores",
                "steady.relay_datagram_balance", "wakes.c1_per_s", "wakes.c8_per_s", "wakes.c8_p99_ms",
                "wakes.c8_relay_cpu_us", "wakes.c8_cores", "wakes.c8_wake_balance", "wakes.wake_balance",
                "relay.cores_whole_run", "relay.threads_reported"):
        assert key in rows, key
        row = rows[key]
        assert len(row["values"]) == 2 and len(row["ratio_to_first"]) == 2, row
        if row["values"][0]:
            assert abs(row["ratio_to_first"][0] - 1) < 1e-9, row
    for key in ("steady.relay_ingest_rate", "wakes.c8_per_s"):
        assert len(rows[key]["efficiency"]) == 2, rows[key]
    # max / mean over the loops is at least 1 (1: one loop, or a core without per-thread metrics)
    for key in ("steady.relay_datagram_balance", "wakes.wake_balance"):
        assert all(v is None or v >= 1 - 1e-9 for v in rows[key]["values"]), rows[key]


@pytest.mark.parametrize("value", ["0", "65", "1,abc", "1,1", ""])
def test_bad_threads_list_is_refused(value):
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: build relay-bench first or set RELAY_BENCH_BIN")
    proc = subprocess.run([str(BIN), "--threads", value], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "--threads" in proc.stderr, proc.stderr
