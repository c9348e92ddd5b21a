"""`python -m benchmarks.fuzz`: the CI fuzz properties, run for minutes instead of a few hundred examples.

    python -m benchmarks.fuzz [--seconds N] [--target dockerfile|yaml|archive|all] [--seed S]

Each target (see `benchmarks.fuzz_targets`) gets N seconds. Hypothesis runs its
property in rounds, each with its own seed and as many examples as the measured rate
says fit in the time left; every call of the property counts as one input tried
(shrinking included). A failing round is shrunk by hypothesis and its minimal input
printed with the error; the run then goes on with the next seed.

Exit status: 0 when no input failed, 1 when one did, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
YAML_SEED = REPO / "examples" / "monorepo" / "build.yaml"
TARGETS = ("dockerfile", "yaml", "archive")
MAX_ROUND = 5_000


@dataclass(frozen=True)
class Failure:
    """A distinct failure: where it was raised, what it said, the smallest input found."""

    error: str
    where: str
    example: str
    seed: int


@dataclass(frozen=True)
class TargetResult:
    target: str
    inputs: int
    seconds: float
    rounds: int
    failures: tuple[Failure, ...]


@dataclass(frozen=True)
class Target:
    name: str
    strategy: Any
    check: Callable[[Any], None]


def _targets(names: tuple[str, ...], workdir: Path) -> list[Target]:
    from benchmarks import fuzz_targets as ft

    out = []
    for name in names:
        if name == "dockerfile":
            out.append(Target(name, ft.dockerfile_cases(), ft.check_dockerfile_case))
        elif name == "yaml":
            seed_text = YAML_SEED.read_text()
            yaml_dir = workdir / "yaml"
            yaml_dir.mkdir()
            out.append(
                Target(name, ft.yaml_cases(), lambda case, d=yaml_dir, t=seed_text: ft.check_yaml_case(d, t, case))
            )
        else:
            archive_dir = workdir / "archive"
            archive_dir.mkdir()
            out.append(Target(name, ft.archive_cases(), lambda case, d=archive_dir: ft.check_layers(d, *case)))
    return out


def _where(exc: BaseException) -> str:
    """The innermost frame of the traceback: two failures raised at the same line are one bug."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"


def _short(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def fuzz(target: Target, seconds: float, seed: int) -> TargetResult:
    """Run `target` in hypothesis rounds until `seconds` have passed."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hypothesis_seed

    count = 0
    last_failure: list[tuple[Any, BaseException]] = []

    def prop(value: Any) -> None:
        nonlocal count
        count += 1
        try:
            target.check(value)
        except BaseException as exc:
            last_failure[:] = [(value, exc)]
            raise

    failures: dict[tuple[str, str], Failure] = {}
    started = time.monotonic()
    deadline = started + seconds
    batch, rounds, round_seed = 20, 0, seed
    while time.monotonic() < deadline:
        before_count, before_time = count, time.monotonic()
        test = settings(
            max_examples=batch,
            deadline=None,
            database=None,
            phases=(Phase.generate, Phase.shrink),
            report_multiple_bugs=False,
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
        )(given(target.strategy)(prop))
        last_failure.clear()
        try:
            hypothesis_seed(round_seed)(test)()
        except Exception as exc:  # noqa: BLE001  (the shrunk failure, re-raised by hypothesis: any type)
            value, error = last_failure[0] if last_failure else (None, exc)
            key = (type(error).__name__, _where(error))
            if key not in failures:
                message = f"{type(error).__name__}: {error}".strip()
                failures[key] = Failure(_short(message, 500), key[1], _short(repr(value)), round_seed)
        rounds += 1
        round_seed += 1
        spent = time.monotonic() - before_time
        rate = (count - before_count) / spent if spent > 0 else batch
        batch = max(5, min(MAX_ROUND, int(rate * min(deadline - time.monotonic(), 10.0))))
    return TargetResult(target.name, count, time.monotonic() - started, rounds, tuple(failures.values()))


def render(results: list[TargetResult], seed: int) -> str:
    lines = [f"{'target':<12}{'inputs':>10}{'seconds':>10}{'rounds':>8}{'failures':>10}"]
    for r in results:
        lines.append(f"{r.target:<12}{r.inputs:>10}{r.seconds:>10.1f}{r.rounds:>8}{len(r.failures):>10}")
    lines.append(f"seed {seed} (repeat this run with --seed {seed})")
    for r in results:
        for f in r.failures:
            lines += [
                "",
                f"FAILURE in {r.target} at {f.where} (round seed {f.seed})",
                f"  {f.error}",
                f"  minimal input: {f.example}",
            ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.fuzz", description="Long fuzzing runs of Shipyard's input parsers."
    )
    p.add_argument("--seconds", type=float, default=60.0, help="time per target (default 60)")
    p.add_argument("--target", choices=(*TARGETS, "all"), default="all")
    p.add_argument("--seed", type=int, help="first hypothesis seed (default: random, printed)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.seconds <= 0:
        _parser().error("--seconds must be positive")
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    names = TARGETS if args.target == "all" else (args.target,)
    workdir = Path(tempfile.mkdtemp(prefix="shipyard-fuzz-"))
    try:
        results = []
        for target in _targets(names, workdir):
            results.append(fuzz(target, args.seconds, seed))
            print(f"{target.name}: {results[-1].inputs} inputs, {len(results[-1].failures)} failures", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(render(results, seed))
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
