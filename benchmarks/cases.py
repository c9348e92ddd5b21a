"""The benchmark cases B1–B6: their generated inputs, how each is run, and what must hold.

Each case says what a run measures (a cold build, a no-op rebuild, a rebuild after an
edit) and what the tool's own step report must show for the figure to count: a "cold"
run that hit a cache, or a "no-op" rebuild that re-ran a step, measures something else,
so such a run makes the case INVALID instead of producing a number.

Contexts are generated deterministically (seeded) once per size class under the work
directory and reused by later invocations; a `.done` marker next to each makes an
interrupted generation start over. Cases that edit a context restore it afterwards.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import random
import shutil
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from benchmarks.tools import BenchmarkError, BuildResult, BuildSpec, Tool, instruction, is_from

GENERATOR_VERSION = 1  # bump when a generator changes: contexts on disk are then regenerated


@dataclass(frozen=True)
class Sizes:
    """How big each case is; FULL is the suite, QUICK a smoke test that runs in seconds."""

    b1_stages: int
    b1_sleep_s: float
    b2_files: int
    b2_bytes: int
    b4_steps: int
    b5_src_files: int
    b5_src_bytes: int
    b5_docs_files: int
    b6_files: int
    b6_file_bytes: int
    b7_targets: int = 30
    b7_files: int = 10_000


FULL = Sizes(8, 1.0, 10_000, 100_000_000, 50, 1_000, 10_000_000, 200, 100, 10_000_000)
QUICK = Sizes(3, 0.2, 200, 1_000_000, 8, 40, 200_000, 10, 4, 250_000, b7_targets=4, b7_files=300)


class Expect(enum.Enum):
    EXECUTED = "every step executed (cold)"
    CACHED = "every step cached"
    MISS = "the edited COPY re-ran"


@dataclass(frozen=True)
class Target:
    kind: Literal["seconds", "ratio"]
    value: float

    def describe(self) -> str:
        return f"≤ {self.value:g} s" if self.kind == "seconds" else f"≤ {self.value:g}×"


@dataclass(frozen=True)
class Workload:
    """What a case's runs build, plus the edit made before each timed run (if any)."""

    context: Path
    dockerfile: Path
    size: str  # e.g. "10,000 files, 100.0 MB"
    detail: str = ""  # e.g. which file the runs edit
    edit: Callable[[int], None] | None = None
    restore: Callable[[], None] | None = None


@dataclass(frozen=True)
class Case:
    id: str
    title: str
    mode: Literal["cold", "rebuild"]
    expect: Expect
    target: Target
    reference_buildkit_s: float  # BuildKit's median on the reference machine class, for context only
    prepare: Callable[[Path, Sizes], Workload]
    miss_step: str = ""  # Expect.MISS: the instruction that must have re-run
    runner: Callable[..., "CaseResult"] | None = None  # a case that runs itself (B7: bake, not build)


@dataclass(frozen=True)
class RunFigure:
    seconds: float
    problem: str = ""  # why this run does not count ("" = its precondition held)


@dataclass(frozen=True)
class ToolResult:
    tool: str
    label: str
    runs: tuple[RunFigure, ...] = ()
    error: str = ""  # the tool failed outright (build error, missing base)
    skipped: str = ""  # not measured (not installed, --no-anchors)

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.problem for r in self.runs if r.problem))

    @property
    def median(self) -> float | None:
        """The median, only when every run ran and met the case's precondition."""
        if self.error or self.skipped or not self.runs or self.problems:
            return None
        return statistics.median(r.seconds for r in self.runs)


@dataclass(frozen=True)
class CaseResult:
    case: Case
    size: str
    detail: str
    tools: tuple[ToolResult, ...]
    notes: tuple[str, ...] = field(default=())

    def tool(self, name: str) -> ToolResult | None:
        return next((t for t in self.tools if t.tool == name), None)


# ---------------------------------------------------------------------------- generators


def _generated(parent: Path, name: str, spec: Mapping[str, object], make: Callable[[Path], object]) -> Path:
    """Make `parent/name-<spec hash>` once; later calls reuse it."""
    record = {**spec, "generator": GENERATOR_VERSION}
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:10]
    dest = parent / f"{name}-{key}"
    marker = parent / f"{dest.name}.done"
    if marker.exists() and dest.is_dir():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    make(dest)
    os.sync()
    marker.write_text(json.dumps(record, sort_keys=True) + "\n")
    return dest


def _sizes(rng: random.Random, count: int, total: int) -> list[int]:
    """`count` log-normally varied sizes (a few large files, many small) adding up to `total`."""
    raw = [rng.lognormvariate(0.0, 1.0) for _ in range(count)]
    scale = total / sum(raw)
    sizes = [int(x * scale) for x in raw]
    sizes[0] += total - sum(sizes)
    return sizes


_EXTS = ("py", "txt", "json", "c", "h", "bin", "md")


def make_tree(root: Path, files: int, total_bytes: int, seed: int) -> list[Path]:
    """A source-tree-like directory: nested package/module/sub dirs, varied file sizes."""
    rng = random.Random(seed)
    paths = []
    for i, size in enumerate(_sizes(rng, files, total_bytes)):
        rel = Path(f"pkg{i % 10:02d}", f"mod{(i // 10) % 10:02d}")
        if i % 3 == 0:
            rel = rel / f"sub{(i // 100) % 5}"
        path = root / rel / f"file{i:05d}.{_EXTS[i % len(_EXTS)]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        paths.append(path)
    return paths


def _dockerfile(workdir: Path, case_id: str, text: str) -> Path:
    path = workdir / "dockerfiles" / f"{case_id}.Dockerfile"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def _empty_context(workdir: Path) -> Path:
    path = workdir / "contexts" / "empty"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _mb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _sleep(seconds: float) -> str:
    return f"{seconds:g}"


# ---------------------------------------------------------------------------- the cases


def prepare_b1(workdir: Path, sizes: Sizes) -> Workload:
    lines = []
    for i in range(1, sizes.b1_stages + 1):
        lines += [f"FROM busybox:local AS s{i}", f"RUN sleep {_sleep(sizes.b1_sleep_s)} && echo {i} > /out", ""]
    lines.append("FROM busybox:local")
    lines += [f"COPY --from=s{i} /out /out{i}" for i in range(1, sizes.b1_stages + 1)]
    text = "\n".join(lines) + "\n"
    return Workload(
        _empty_context(workdir), _dockerfile(workdir, "B1", text), f"{sizes.b1_stages} stages, sleep {sizes.b1_sleep_s:g} s"
    )


B2_DOCKERFILE = """\
FROM busybox:local AS base
RUN mkdir -p /app && echo base > /app/base.txt
ENV APP_HOME=/app
WORKDIR /app

FROM base AS build
COPY . /src
RUN find /src -type f | wc -l > /app/count
RUN du -sk /src | cut -f1 > /app/size_kb

FROM base
COPY --from=build /app/count /app/count
COPY --from=build /app/size_kb /app/size_kb
COPY --from=build /src/pkg00/mod00 /app/assets
RUN cat /app/count /app/size_kb > /app/summary
LABEL org.opencontainers.image.title=shipyard-bench-b2
CMD ["cat", "/app/summary"]
"""


def _b2_context(workdir: Path, sizes: Sizes) -> tuple[Path, Path]:
    """B2's context and the one file B3 edits (mid-tree, outside pkg00/mod00, ≥ 256 bytes)."""
    spec = {"files": sizes.b2_files, "bytes": sizes.b2_bytes, "seed": 2}
    ctx = _generated(workdir / "contexts", "b2", spec, lambda d: make_tree(d, sizes.b2_files, sizes.b2_bytes, seed=2))
    files = sorted(p for p in ctx.rglob("*") if p.is_file() and not p.is_relative_to(ctx / "pkg00" / "mod00"))
    target = next(p for p in files[len(files) // 2 :] + files if p.stat().st_size >= 256)
    return ctx, target


def prepare_b2(workdir: Path, sizes: Sizes) -> Workload:
    ctx, _ = _b2_context(workdir, sizes)
    return Workload(ctx, _dockerfile(workdir, "B2", B2_DOCKERFILE), f"{sizes.b2_files:,} files, {_mb(sizes.b2_bytes)}")


def _same_size_editor(path: Path) -> tuple[Callable[[int], None], Callable[[], None]]:
    """Rewrite `path` with new bytes of the same length each run (unique per run, never a revert)."""
    original = path.read_bytes()

    def edit(run: int) -> None:
        token = f"shipyard-bench edit run={run} t={time.time_ns()}\n".encode()
        path.write_bytes((token + original)[: len(original)])

    def restore() -> None:
        path.write_bytes(original)

    return edit, restore


def prepare_b3(workdir: Path, sizes: Sizes) -> Workload:
    ctx, target = _b2_context(workdir, sizes)
    edit, restore = _same_size_editor(target)
    size = f"{sizes.b2_files:,} files, {_mb(sizes.b2_bytes)}"
    detail = f"each run rewrites {target.relative_to(ctx)} ({target.stat().st_size:,} bytes) with new bytes of the same size"
    return Workload(ctx, _dockerfile(workdir, "B3", B2_DOCKERFILE), size, detail, edit, restore)


def prepare_b4(workdir: Path, sizes: Sizes) -> Workload:
    lines = ["FROM busybox:local"] + [f"RUN echo {i} >> /log" for i in range(1, sizes.b4_steps + 1)]
    return Workload(_empty_context(workdir), _dockerfile(workdir, "B4", "\n".join(lines) + "\n"), f"{sizes.b4_steps} RUN steps")


B5_DOCKERFILE = """\
FROM busybox:local AS build
COPY src/ /src/
RUN find /src -type f | wc -l > /count

FROM busybox:local
COPY --from=build /count /count
COPY src/ /app/
CMD ["cat", "/count"]
"""


def prepare_b5(workdir: Path, sizes: Sizes) -> Workload:
    spec = {"src": [sizes.b5_src_files, sizes.b5_src_bytes], "docs": sizes.b5_docs_files, "seed": 5}

    def make(root: Path) -> None:
        make_tree(root / "src", sizes.b5_src_files, sizes.b5_src_bytes, seed=5)
        make_tree(root / "docs", sizes.b5_docs_files, sizes.b5_docs_files * 4096, seed=55)
        (root / "docs" / "notes.md").write_text("# Notes\n")

    ctx = _generated(workdir / "contexts", "b5", spec, make)
    notes = ctx / "docs" / "notes.md"
    original = notes.read_bytes()

    def edit(run: int) -> None:
        notes.write_text(f"# Notes\nedited by run {run} at {time.time_ns()}\n")

    def restore() -> None:
        notes.write_bytes(original)

    size = f"src/ {sizes.b5_src_files:,} files, {_mb(sizes.b5_src_bytes)}"
    detail = f"each run edits docs/notes.md; docs/ has {sizes.b5_docs_files:,} more files, not copied"
    return Workload(ctx, _dockerfile(workdir, "B5", B5_DOCKERFILE), size, detail, edit, restore)


def prepare_b6(workdir: Path, sizes: Sizes) -> Workload:
    spec = {"files": sizes.b6_files, "file_bytes": sizes.b6_file_bytes, "seed": 6}

    def make(root: Path) -> None:
        rng = random.Random(6)
        for i in range(sizes.b6_files):
            (root / f"blob{i:03d}.bin").write_bytes(rng.randbytes(sizes.b6_file_bytes))

    ctx = _generated(workdir / "contexts", "b6", spec, make)
    text = "FROM busybox:local\nCOPY . /data\n"
    return Workload(ctx, _dockerfile(workdir, "B6", text), f"{sizes.b6_files} files, {_mb(sizes.b6_files * sizes.b6_file_bytes)}")


def prepare_b7(workdir: Path, sizes: Sizes) -> Workload:
    from benchmarks.bake_case import prepare_monorepo

    repo = prepare_monorepo(workdir, sizes)
    return Workload(repo.root, repo.root / "build.yaml", f"{len(repo.targets)} targets, {repo.files:,} files")


def run_b7(*args, **kwargs) -> "CaseResult":  # type: ignore[no-untyped-def]
    from benchmarks.bake_case import run_b7 as run

    return run(*args, **kwargs)


CASES: tuple[Case, ...] = (
    Case("B1", "cold build, parallel RUN stages", "cold", Expect.EXECUTED, Target("seconds", 1.5), 2.65, prepare_b1),
    Case("B2", "no-op rebuild", "rebuild", Expect.CACHED, Target("ratio", 0.5), 0.57, prepare_b2),
    Case("B3", "rebuild after a one-file edit", "rebuild", Expect.MISS, Target("ratio", 0.5), 4.65, prepare_b3, "COPY . /src"),
    Case("B4", "cold build, chained RUN steps", "cold", Expect.EXECUTED, Target("ratio", 1.0), 5.3, prepare_b4),
    Case("B5", "rebuild, edit outside the COPY", "rebuild", Expect.CACHED, Target("ratio", 1.0), 0.12, prepare_b5),
    Case("B6", "cold build, COPY of a big context", "cold", Expect.EXECUTED, Target("ratio", 0.5), 20.7, prepare_b6),
    Case("B7", "no-op bake, 30-target monorepo", "rebuild", Expect.CACHED, Target("seconds", 1.0), 0.0, prepare_b7, runner=run_b7),
)


# ---------------------------------------------------------------------------- running


def check_steps(case: Case, result: BuildResult) -> str:
    """"" when the tool's step report meets the case's precondition, else what went wrong."""
    work = [s for s in result.steps if not is_from(s.name)]
    if not work:
        return "the tool reported no build steps (could not verify the precondition)"
    if case.expect is Expect.EXECUTED:
        hits = [instruction(s.name) for s in work if s.cached]
        return f"cold build took {len(hits)} step(s) from a cache: {hits[0]!r}" if hits else ""
    if case.expect is Expect.CACHED:
        misses = [instruction(s.name) for s in work if not s.cached]
        return f"{len(misses)} step(s) were not cached: {misses[0]!r}" if misses else ""
    if not result.exact_steps:  # only the count is known: some step must have re-run
        return "" if not all(s.cached for s in work) else "every step was cached: the edit was not seen"
    edited = [s for s in work if instruction(s.name).startswith(case.miss_step)]
    if not edited:
        return f"no {case.miss_step!r} step in the tool's report"
    return f"{case.miss_step!r} was cached: the edit was not seen" if any(s.cached for s in edited) else ""


def run_case(
    case: Case,
    tools: list[Tool],
    skipped: dict[str, tuple[str, str]],
    workdir: Path,
    sizes: Sizes,
    runs: int,
    host_network: bool,
    say: Callable[[str], None],
    verbose: bool,
    settle_s: float = 0.0,
) -> CaseResult:
    """Run `runs` timed rounds of `case`; each round runs every tool once, in rotating order."""
    if case.runner is not None:
        return case.runner(case, tools, skipped, workdir, sizes, runs, say, verbose)
    t0 = time.perf_counter()
    workload = case.prepare(workdir, sizes)
    say(f"{case.id}: {case.title} [{workload.size}] (inputs ready in {time.perf_counter() - t0:.1f}s)")
    if workload.detail:
        say(f"  {workload.detail}")
    spec = BuildSpec(workload.context, workload.dockerfile, f"shipyard-bench-{case.id.lower()}", host_network)
    figures: dict[str, list[RunFigure]] = {t.name: [] for t in tools}
    errors: dict[str, str] = {}

    def fail(tool: Tool, exc: BenchmarkError) -> None:
        errors[tool.name] = str(exc)
        say(f"  {tool.label}: ERROR {exc}")

    try:
        if case.mode == "rebuild":
            for tool in tools:
                try:
                    tool.reset()
                    warm = tool.build(spec)
                    if verbose:
                        say(f"  {tool.label}: warm-up build {warm.seconds:.2f}s (not counted)")
                except BenchmarkError as exc:
                    fail(tool, exc)
        for run in range(runs):
            if workload.edit is not None:
                workload.edit(run)
            order = tools[run % len(tools) :] + tools[: run % len(tools)] if tools else []
            for tool in order:
                if tool.name in errors:
                    continue
                try:
                    if case.mode == "cold":
                        tool.reset()
                    os.sync()  # the previous build's dirty pages are not this build's cost
                    time.sleep(settle_s)  # nor its daemons' and kernel workers' after-work
                    result: BuildResult = tool.build(spec)
                except BenchmarkError as exc:
                    fail(tool, exc)
                    continue
                figure = RunFigure(result.seconds, check_steps(case, result))
                figures[tool.name].append(figure)
                if verbose or figure.problem:
                    flag = f"PRECONDITION FAILED: {figure.problem}" if figure.problem else "ok"
                    say(f"  run {run + 1}/{runs} {tool.label:<9} {figure.seconds:7.3f}s  {flag}")
    finally:
        if workload.restore is not None:
            workload.restore()
    results = [
        ToolResult(t.name, t.label, tuple(figures[t.name]), error=errors.get(t.name, "")) for t in tools
    ] + [ToolResult(name, label, skipped=why) for name, (label, why) in skipped.items()]
    return CaseResult(case, workload.size, workload.detail, tuple(results))


def select(ids: str | None) -> list[Case]:
    if not ids:
        return list(CASES)
    wanted = [i.strip().upper() for i in ids.split(",") if i.strip()]
    known = {c.id: c for c in CASES}
    unknown = [i for i in wanted if i not in known]
    if unknown:
        raise ValueError(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[i] for i in wanted]
