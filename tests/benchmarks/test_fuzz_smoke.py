"""`python -m benchmarks.fuzz` runs every target for its time budget and reports what it tried and found."""

from __future__ import annotations

import re
import subprocess
import sys

from benchmarks.fuzz import Target, fuzz, render
from tests.helpers import REPO


def test_a_short_run_tries_inputs_on_every_target_and_finds_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.fuzz", "--seconds", "2", "--target", "all", "--seed", "7"],
        cwd=REPO, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {
        m[1]: (int(m[2]), float(m[3]), int(m[4]))
        for m in re.finditer(r"^(\w+)\s+(\d+)\s+([\d.]+)\s+\d+\s+(\d+)$", proc.stdout, re.MULTILINE)
    }
    assert set(rows) == {"dockerfile", "yaml", "archive"}, proc.stdout
    for target, (inputs, seconds, failures) in rows.items():
        assert inputs > 0 and failures == 0, (target, proc.stdout)
        assert 1.9 <= seconds < 30, (target, proc.stdout)
    assert "seed 7" in proc.stdout


def test_a_failure_is_shrunk_reported_once_and_the_run_goes_on() -> None:
    from hypothesis import strategies as st

    def check(value: int) -> None:
        if value > 1000:
            raise ValueError(f"{value} is too big")

    result = fuzz(Target("numbers", st.integers(), check), 1.0, seed=3)
    assert result.inputs > 50 and result.rounds > 1  # went on after the first failing round
    assert len(result.failures) == 1  # the same line, found again in later rounds, is one failure
    failure = result.failures[0]
    assert failure.example == "1001" and failure.error == "ValueError: 1001 is too big"
    assert "test_fuzz_smoke.py" in failure.where and "in check" in failure.where
    text = render([result], 3)
    assert "FAILURE in numbers at" in text and "minimal input: 1001" in text


def test_usage_errors_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.fuzz", "--seconds", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "--seconds" in proc.stderr
