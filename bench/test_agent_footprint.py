"""A small run of bench/agent_footprint.py: it starts, measures every client, prints its
table and stops what it started. Figures are printed, never asserted (timings vary)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_footprint_bench_small_run(tmp_path):
    relay = os.environ.get("RELAY_BIN") or str(REPO / ".build/debug/relay")
    agent = os.environ.get("RELAY_AGENT_BIN") or str(REPO / ".build-agent/relay-agent")
    for b in (relay, agent):
        if not Path(b).exists():
            pytest.skip(f"{b} not built")
    if shutil.which("curl") is None:
        pytest.skip("curl missing")
    out = tmp_path / "fp.json"
    r = subprocess.run([sys.executable, str(REPO / "bench/agent_footprint.py"), "--relay-bin", relay,
                        "--agent-bin", agent, "--idle", "2", "--mib", "4", "--json", str(out)]
                       + ([] if shutil.which("sshd") or Path("/usr/sbin/sshd").exists() else ["--no-ssh"]),
                       capture_output=True, text=True, timeout=170)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "RSS idle" in r.stdout and "CPU per MiB relayed" in r.stdout
    import json
    res = json.loads(out.read_text())["results"]
    assert res["c"]["exit_on_sigterm"] == 0 and res["swift"]["exit_on_sigterm"] == 0
    assert res["c"]["stripped_bytes"] < 200 * 1024  # a size, not a timing
