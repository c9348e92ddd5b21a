"""The benchmark suite runs end to end (Shipyard only, tiny sizes) and checks its own preconditions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.cases import CASES, CaseResult, RunFigure, ToolResult, check_steps
from benchmarks.report import plain_table, verdict
from benchmarks.tools import BuildResult, StepReport, parse_buildah, parse_buildkit_plain
from tests.helpers import REPO, require_root

SMOKE_CASES = ("B1", "B2", "B4", "B5")


def test_quick_run_reports_every_case_with_its_precondition_held(tmp_path: Path) -> None:
    require_root()
    out = tmp_path / "results.json"
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--no-anchors", "--cases", ",".join(SMOKE_CASES)]
    proc = subprocess.run(
        [*cmd, "--workdir", str(tmp_path / "work"), "--json", str(out), "--plain"],
        cwd=REPO, capture_output=True, text=True, timeout=50,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    data = json.loads(out.read_text())
    assert data["quick"] is True and data["runs"] == 1
    assert [c["id"] for c in data["cases"]] == list(SMOKE_CASES)
    for case in data["cases"]:
        shipyard = case["tools"]["shipyard"]
        assert isinstance(case["figure_s"], float) and case["figure_s"] > 0, case
        assert shipyard["problems"] == [] and shipyard["error"] == "", case
        assert case["preconditions_held"] is True
        assert len(shipyard["runs_s"]) == 1
        assert case["tools"]["buildkit"]["skipped"] == "--no-anchors"
    # B1 is judged on its own time; the ratio targets need BuildKit, which was not run.
    assert {c["id"]: c["result"] for c in data["cases"]}["B2"] == "n/a"
    assert "B4" in proc.stdout and "Shipyard" in proc.stdout
    # The state roots are gone; the generated contexts stay for the next invocation.
    work = tmp_path / "work"
    assert not list(work.glob("state-*"))
    assert (work / "contexts").is_dir()


BUILDKIT_REBUILD = """\
#1 [internal] load build definition from Dockerfile
#1 DONE 0.0s

#4 [s2 1/2] FROM docker.io/library/busybox:local
#4 DONE 0.0s

#5 [s1 2/2] RUN sleep 1 && echo 1 > /out
#5 CACHED

#6 [stage-2 2/3] COPY --from=s1 /out /o1
#6 0.101 [not a name] output line
#6 DONE 0.1s

#9 exporting to image
#9 DONE 0.0s
"""

BUILDAH_INTERLEAVED = """\
[1/2] STEP 1/3: FROM busybox:local AS build
[2/2] STEP 1/4: FROM busybox:local
[2/2] STEP 2/4: COPY --from=build /count /count
[1/2] STEP 2/3: COPY src/ /src/
--> Using cache 62d17918c478
--> 62d17918c47
[1/2] STEP 3/3: RUN find /src -type f | wc -l > /count
--> Using cache 3d9df5b28b1a
--> Using cache 5d121df95a17
[2/2] STEP 3/4: COPY src/ /app/
--> Using cache e0ffdfc27713
[2/2] STEP 4/4: CMD ["cat", "/count"]
--> Using cache f386edcbcd27
[2/2] COMMIT x
"""


def test_buildkit_plain_output_gives_each_step_and_whether_it_was_cached() -> None:
    steps = parse_buildkit_plain(BUILDKIT_REBUILD)
    assert steps == (
        StepReport("[s2 1/2] FROM docker.io/library/busybox:local", False),
        StepReport("[s1 2/2] RUN sleep 1 && echo 1 > /out", True),
        StepReport("[stage-2 2/3] COPY --from=s1 /out /o1", False),
    )


def test_buildah_interleaved_stages_count_every_cache_hit() -> None:
    steps = parse_buildah(BUILDAH_INTERLEAVED)
    assert len(steps) == 7
    assert [s.cached for s in steps if "FROM" not in s.name] == [True] * 5


def _case(case_id: str):  # type: ignore[no-untyped-def]
    return next(c for c in CASES if c.id == case_id)


def test_a_run_that_breaks_its_precondition_is_invalid_not_a_number() -> None:
    cold, cached, miss = _case("B4"), _case("B2"), _case("B3")
    run = (StepReport("[1/2] FROM busybox", True), StepReport("[2/2] RUN echo 1 >> /log", True))
    assert "from a cache" in check_steps(cold, BuildResult(1.0, run))
    assert check_steps(cached, BuildResult(1.0, run)) == ""
    copy_hit = (StepReport("[build 2/4] COPY . /src", True), StepReport("[build 3/4] RUN x", False))
    assert "was cached" in check_steps(miss, BuildResult(1.0, copy_hit))
    assert check_steps(miss, BuildResult(1.0, copy_hit, exact_steps=False)) == ""
    assert "no build steps" in check_steps(cached, BuildResult(1.0, ()))

    bad = ToolResult("shipyard", "Shipyard", (RunFigure(0.2), RunFigure(0.1, "1 step(s) were not cached: 'RUN x'")))
    bk = ToolResult("buildkit", "BuildKit", (RunFigure(1.0),))
    res = CaseResult(cached, "tiny", "", (bad, bk))
    v = verdict(res)
    assert v.figure is None and v.result == "INVALID" and "not cached" in v.why
    assert "INVALID" in plain_table([res])

    good = ToolResult("shipyard", "Shipyard", (RunFigure(0.2), RunFigure(0.4), RunFigure(0.3)))
    v = verdict(CaseResult(cached, "tiny", "", (good, bk)))
    assert v.figure == 0.3 and v.ratio == 0.3 and v.result == "PASS"
