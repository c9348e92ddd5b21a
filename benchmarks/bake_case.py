"""B7: `shipyard bake` over a generated monorepo — 30 targets on a shared base, 10,000 files.

Each timed round first edits one file of one service (a different service each
round), bakes, and checks that exactly that target was rebuilt; then bakes again with
nothing changed, which is the figure (target: under 1 s for all 30 targets), and
checks that every target was skipped on its unchanged key. A round where either
check fails does not count. The first bake (everything built cold) is a warm-up.

`docker buildx bake` runs the same monorepo (as bake JSON) in the same rounds when
buildx is installed; this machine's docker has no buildx, which the report says.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.tools import DOCKER, BenchmarkError, ShipyardTool, _check, _timed

if TYPE_CHECKING:
    from benchmarks.cases import Case, CaseResult, Sizes, Tool

BASE_FILES = 100


@dataclass(frozen=True)
class Monorepo:
    root: Path
    targets: tuple[str, ...]
    files: int
    edit_files: tuple[Path, ...]
    """One source file per service, the one a round edits."""


def _generate(dest: Path, targets: int, files: int) -> None:
    rng = random.Random(7)
    (dest / "base" / "lib").mkdir(parents=True)
    for i in range(BASE_FILES):
        (dest / "base" / "lib" / f"mod{i:03d}.py").write_bytes(rng.randbytes(512).hex().encode() + b"\n")
    per_service = (files - BASE_FILES) // targets - 1  # minus its Dockerfile
    extra = (files - BASE_FILES) - targets * (per_service + 1)
    names = [f"svc{i:02d}" for i in range(targets)]
    for n, name in enumerate(names):
        src = dest / "services" / name / "src"
        for i in range(per_service + (1 if n < extra else 0)):
            path = src / f"pkg{i % 8}" / f"file{i:04d}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"# {name} {i}\n".encode() + rng.randbytes(256).hex().encode() + b"\n")
        (dest / "services" / name / "Dockerfile").write_text(
            "FROM base\nCOPY src/ /app/src/\nRUN find /app/src -type f | wc -l > /app/count\n"
        )
    base_steps = [
        {"from": "busybox:local"},
        {"copy": {"src": ["lib/"], "dest": "/opt/lib/"}},
        {"run": "ls /opt/lib | wc -l > /opt/lib.count"},
    ]
    build = {
        "version": 1,
        "groups": {"default": names},
        "targets": {
            "base": {"context": "base", "steps": base_steps},
            **{
                name: {
                    "context": f"services/{name}",
                    "dockerfile": "Dockerfile",
                    "contexts": {"base": "target:base"},
                    "tags": [f"bench/{name}:latest"],
                }
                for name in names
            },
        },
    }
    (dest / "build.yaml").write_text(json.dumps(build, indent=2) + "\n")  # JSON is YAML
    bake = {
        "group": {"default": {"targets": names}},
        "target": {
            "base": {
                "context": "base",
                "dockerfile-inline": "FROM busybox:local\nCOPY lib/ /opt/lib/\nRUN ls /opt/lib | wc -l > /opt/lib.count\n",
            },
            **{name: {"context": f"services/{name}", "contexts": {"base": "target:base"}, "tags": [f"bench/{name}:latest"]} for name in names},
        },
    }
    (dest / "docker-bake.json").write_text(json.dumps(bake, indent=2) + "\n")


def prepare_monorepo(workdir: Path, sizes: Sizes) -> Monorepo:
    from benchmarks.cases import _generated

    spec = {"targets": sizes.b7_targets, "files": sizes.b7_files, "seed": 7}
    root = _generated(workdir / "contexts", "b7", spec, lambda d: _generate(d, sizes.b7_targets, sizes.b7_files))
    names = tuple(f"svc{i:02d}" for i in range(sizes.b7_targets))
    edits = tuple(min((root / "services" / n / "src" / "pkg0").iterdir()) for n in names)
    count = sum(len(files) for _, _, files in os.walk(root)) - 2  # build.yaml and docker-bake.json are not inputs
    return Monorepo(root, names, count, edits)


class _Bake:
    """`shipyard bake` in the monorepo, with its metadata read back."""

    def __init__(self, tool: ShipyardTool, repo: Monorepo) -> None:
        self.tool = tool
        self.repo = repo
        self.meta = tool.meta.with_name("b7-bake-metadata.json")

    def run(self) -> tuple[float, dict]:  # type: ignore[type-arg]
        self.meta.unlink(missing_ok=True)
        cmd = [*self.tool.command, "--root", str(self.tool.root), "bake", "--progress", "plain", "--metadata-file", str(self.meta)]
        seconds, proc = _timed([*cmd, "--runtime", self.tool.runtime], env=self.tool.env, cwd=self.repo.root)
        _check(proc, "shipyard bake")
        try:
            return seconds, json.loads(self.meta.read_text())
        except (OSError, ValueError) as exc:
            raise BenchmarkError(f"shipyard bake wrote no usable --metadata-file: {exc}") from None


def built_targets(metadata: dict) -> set[str]:  # type: ignore[type-arg]
    return {name for name, data in metadata.items() if not data.get("shipyard.skipped")}


def buildx_unavailable() -> str | None:
    if not os.access(DOCKER, os.X_OK):
        return f"{DOCKER} is not installed"
    proc = subprocess.run([DOCKER, "buildx", "version"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return "docker buildx is not installed here (`docker buildx version` failed): no bake to compare with"
    return None


def _buildx_bake(repo: Monorepo) -> float:
    cmd = [DOCKER, "buildx", "bake", "--progress", "plain", "-f", "docker-bake.json", "--set", "*.output=type=cacheonly"]
    seconds, proc = _timed(cmd, cwd=repo.root)
    _check(proc, "docker buildx bake")
    return seconds


def _editor(path: Path) -> tuple[Callable[[int], None], Callable[[], None]]:
    original = path.read_bytes()

    def edit(run: int) -> None:
        token = f"# edit {run} {time.time_ns()}\n".encode()
        path.write_bytes((token + original)[: len(original)])

    return edit, lambda: path.write_bytes(original)


def run_b7(
    case: Case,
    tools: list[Tool],
    skipped: dict[str, tuple[str, str]],
    workdir: Path,
    sizes: Sizes,
    runs: int,
    say: Callable[[str], None],
    verbose: bool,
) -> CaseResult:
    from benchmarks.cases import CaseResult, RunFigure, ToolResult

    t0 = time.perf_counter()
    repo = prepare_monorepo(workdir, sizes)
    size = f"{len(repo.targets)} targets + shared base, {repo.files:,} files"
    say(f"{case.id}: {case.title} [{size}] (inputs ready in {time.perf_counter() - t0:.1f}s)")
    shipyard = next((t for t in tools if isinstance(t, ShipyardTool)), None)
    results: list[ToolResult] = []
    edit_times: list[float] = []
    cold = 0.0
    if shipyard is not None:
        figures: list[RunFigure] = []
        error = ""
        try:
            shipyard.reset()
            bake = _Bake(shipyard, repo)
            cold, meta = bake.run()
            if built_targets(meta) != {"base", *repo.targets}:
                raise BenchmarkError(f"the cold bake did not build every target: {sorted(built_targets(meta))}")
            say(f"  cold bake of {len(repo.targets) + 1} targets: {cold:.2f}s (not counted)")
            for run in range(runs):
                target = repo.targets[run % len(repo.targets)]
                edit, restore = _editor(repo.edit_files[run % len(repo.targets)])
                try:
                    edit(run)
                    os.sync()
                    seconds, meta = bake.run()
                finally:
                    restore()
                problem = ""
                rebuilt = built_targets(meta)
                if rebuilt != {target}:
                    problem = f"editing one file of {target} rebuilt {sorted(rebuilt) or 'nothing'}"
                edit_times.append(seconds)
                bake.run()  # the restore is an edit too: rebuild it (not timed)
                os.sync()
                seconds, meta = bake.run()
                rebuilt = built_targets(meta)
                if rebuilt and not problem:
                    problem = f"the no-op bake rebuilt {sorted(rebuilt)}"
                figures.append(RunFigure(seconds, problem))
                if verbose or problem:
                    flag = f"PRECONDITION FAILED: {problem}" if problem else "ok"
                    say(f"  run {run + 1}/{runs} edit {target}: {edit_times[-1]:.3f}s, no-op: {seconds:.3f}s  {flag}")
        except BenchmarkError as exc:
            error = str(exc)
            say(f"  {shipyard.label}: ERROR {exc}")
        finally:
            shipyard.meta.with_name("b7-bake-metadata.json").unlink(missing_ok=True)
        results.append(ToolResult(shipyard.name, shipyard.label, tuple(figures), error=error))
    buildx_why = "--no-anchors" if skipped.get("buildkit", ("", ""))[1] == "--no-anchors" else buildx_unavailable()
    if buildx_why is None:
        try:
            _buildx_bake(repo)  # warm-up
            times = tuple(RunFigure(_buildx_bake(repo)) for _ in range(runs))
            results.append(ToolResult("buildkit", "BuildKit", times))
        except BenchmarkError as exc:
            results.append(ToolResult("buildkit", "BuildKit", error=str(exc)))
    else:
        if buildx_why != "--no-anchors":
            say(f"  BuildKit is not measured: {buildx_why}")
        results.append(ToolResult("buildkit", "BuildKit", skipped=buildx_why))
    results.append(ToolResult("buildah", "buildah", skipped="buildah has no bake (many-target) mode"))
    edits = f"{statistics.median(edit_times):.2f}s" if edit_times else "n/a"
    detail = (
        f"figure: no-op bake of all {len(repo.targets)} targets; each round first edits one file of one service "
        f"(rebuilding exactly that target: median {edits}); cold bake {cold:.2f}s"
    )
    return CaseResult(case, size, detail, tuple(results))

