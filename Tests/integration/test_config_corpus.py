"""The config fuzz target's seed corpus, replayed by the plain build of `fuzz-config`
(`make fuzz` runs the same code under libFuzzer): every seed loads to a configuration or to
one error on one line."""

import subprocess
from pathlib import Path

import pytest

from conftest import relay_bin

CORPUS = Path(__file__).resolve().parents[1] / "fuzz" / "corpus" / "fuzz_config"


def test_config_seed_corpus_replays_clean():
    replayer = relay_bin().parent / "fuzz-config"
    if not replayer.exists():
        pytest.skip(f"{replayer} not built")
    seeds = sorted(CORPUS.iterdir())
    assert len(seeds) >= 5
    r = subprocess.run([replayer, *seeds], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"{len(seeds)} inputs replayed, no finding" in r.stdout
