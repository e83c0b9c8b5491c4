"""A bounded fuzzing run of the converter's entry point (tests/fuzzing.py):
the regression corpus replayed, then mutated seeds for half a minute, each
input in a fork under a memory cap.  0 unexpected exception types, 0
signals, 0 inputs reaching the cap, each input within a few seconds.  The
longer run is documented in tests/README.md with its results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests import fuzzing as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECONDS = float(os.environ.get("EPHEMESH_FUZZ_SECONDS", "35"))
SEED = int(os.environ.get("EPHEMESH_FUZZ_SEED", "12"))


def test_a_bounded_fuzzing_run_finds_nothing(tmp_path):
    out = tmp_path / "fuzz.json"
    proc = subprocess.run([sys.executable, "-m", "tests.fuzzing", "run", "--seconds",
                           str(SECONDS), "--seed", str(SEED), "--cap-mb", "1024", "--json",
                           str(out), "--findings", str(tmp_path / "findings")],
                          cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 90)
    summary = json.loads(out.read_text())
    assert summary["findings"] == [], summary["findings"]
    assert proc.returncode == 0
    assert summary["regressions"] >= 10
    assert summary["regression_outcomes"] == {"refused": summary["regressions"]}
    assert set(summary["outcomes"]) <= {"ok", "refused"}
    assert summary["executions"] >= 150  # the 2 shared cores: usually 600 or more
    assert summary["outcomes"].get("ok", 0) > 10  # mutants that still convert
    assert summary["codes"].get("corrupt_pixel_data", 0) > 20  # and many that reach decoding
    assert summary["max_seconds"] < 5
    assert summary["max_rss_mb"] < 1024


@pytest.mark.parametrize("name,files", F.load_corpus(F.REGRESSIONS),
                         ids=[n for n, _ in F.load_corpus(F.REGRESSIONS)])
def test_every_regression_is_refused_cleanly(name, files):
    """Each input crashed, panicked or ran out of time in the code before."""
    result = F.run_one(files)
    assert (result["outcome"], result["detail"]) == ("refused", "corrupt_pixel_data"), result
    assert result["seconds"] < 5 and "Traceback" not in result["stderr"]


def _abort(*args, **kwargs):
    os.abort()


def _key_error(*args, **kwargs):
    raise KeyError("x")


def _no_memory(*args, **kwargs):
    raise MemoryError


def _slow(*args, **kwargs):
    time.sleep(30)


def _prints_traceback(*args, **kwargs):
    from converter import UnreadableInput

    sys.stderr.write("Traceback (most recent call last):\n")
    sys.stderr.flush()
    raise UnreadableInput("x", code="corrupt_pixel_data")


@pytest.mark.parametrize("convert,outcome,detail", [
    (_abort, "signal", "6"),
    (_key_error, "exception", "KeyError"),
    (_no_memory, "memory", "MemoryError"),
    (_slow, "timeout", ">1s"),
    (_prints_traceback, "traceback", "corrupt_pixel_data"),
])
def test_the_harness_reports_every_kind_of_finding(monkeypatch, convert, outcome, detail):
    import converter

    monkeypatch.setattr(converter, "convert", convert)
    result = F.run_one([b"x"], wall_s=1.0)
    assert (result["outcome"], result["detail"]) == (outcome, detail)


def test_mutations_change_files_in_every_way():
    seeds = F.load_corpus(F.SEEDS)
    data = dict(seeds)["hostile-jpeg2000"][0]
    import random

    rng = random.Random(3)
    sizes = {len(F.mutate(data, rng)) for _ in range(200)}
    assert len(sizes) > 20  # truncations, insertions, deletions, rewritten values
    assert sum(F._blow_up(data, rng) != data for _ in range(50)) > 40
