"""Benchmark B7 runs (tiny sizes) and checks its own preconditions: an edit rebuilds exactly one target."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, require_root


def test_b7_quick_run_holds_its_preconditions_and_reports_buildx(tmp_path: Path) -> None:
    require_root()
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--cases", "B7", "--runs", "2", "--plain",
         "--workdir", str(tmp_path / "work"), "--json", str(out), "-v"],
        cwd=REPO, capture_output=True, text=True, timeout=80, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (case,) = json.loads(out.read_text())["cases"]
    shipyard = case["tools"]["shipyard"]
    assert case["id"] == "B7" and case["preconditions_held"] is True and shipyard["problems"] == []
    assert len(shipyard["runs_s"]) == 2 and case["result"] in ("PASS", "MISS")
    assert "run 1/2 edit svc00:" in proc.stderr and "run 2/2 edit svc01:" in proc.stderr
    assert "rebuilding exactly that target" in case["detail"]
    buildkit = case["tools"]["buildkit"]
    assert buildkit["skipped"].startswith(("docker buildx is not installed", "/usr/bin/docker is not installed")) or buildkit["runs_s"]
