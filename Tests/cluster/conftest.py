"""Fixtures of the cluster test: one three-node site (site.py) for the whole module, built
once and torn down even when a test or the setup fails; figures collected by the tests and
written at the end to <tmp>/cluster-figures.json and stdout."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

TEST_TIMEOUT = 150  # seconds per test (SIGALRM); the whole file stays well under 8 minutes


class TestTimeout(Exception):
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    limit = TEST_TIMEOUT
    m = item.get_closest_marker("timeout")
    if m and m.args:
        limit = int(m.args[0])

    def on_alarm(signum, frame):
        raise TestTimeout(f"{item.nodeid} took longer than {limit}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): per-test limit (SIGALRM)")
    config.addinivalue_line("markers", "mesh: needs the cluster mesh (relay serve --mesh-peer)")


FAILED: list = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        FAILED.append(item.nodeid)


@pytest.fixture(scope="session")
def cluster_dir():
    """The run's directory (logs of every process, configs, data); kept when a test failed."""
    d = Path(tempfile.mkdtemp(prefix="relay-cluster-"))
    d.chmod(0o755)  # PostgreSQL runs as the postgres user under it
    yield d
    if FAILED:
        print(f"\ncluster test failed ({', '.join(FAILED)}): logs kept in {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def figures(cluster_dir):
    """Every measured figure, by name; printed and written when the session ends."""
    figs: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    yield figs
    out = cluster_dir.parent / f"{cluster_dir.name}-figures.json"
    text = json.dumps(figs, indent=2, sort_keys=True)
    out.write_text(text + "\n")
    (cluster_dir / "figures.json").write_text(text + "\n")
    print(f"\ncluster figures ({out}):\n{text}")
