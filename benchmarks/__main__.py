"""`python -m benchmarks`: run the cases, write the JSON record, print the table.

    python -m benchmarks [--cases B1,B4] [--runs N] [--no-anchors] [--json out.json]
                         [--workdir DIR] [--quick] [-v] [--shipyard-runtime auto|runc|builtin]
                         [--anchor-network host|default] [--buildah-jobs N] [--plain]

Exit status: 0 when every case produced its figures (PASS or MISS alike: a miss is a
measurement), 1 when a case was INVALID (a precondition failed) or a build failed,
2 for a usage problem.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.cases import FULL, QUICK, CaseResult, run_case, select
from benchmarks.report import render, to_json, verdict, write_json
from benchmarks.tools import REPO, BuildahTool, BuildKitTool, ShipyardTool, Tool

RESULTS = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description="Shipyard vs BuildKit vs buildah on cases B1–B6.")
    p.add_argument("--cases", help="comma-separated case ids (default: all)")
    p.add_argument("--runs", type=int, help="timed runs per case and tool (default 5; 1 with --quick)")
    p.add_argument("--no-anchors", action="store_true", help="measure Shipyard only (no docker BuildKit, no buildah)")
    p.add_argument("--json", type=Path, help="write the results here (default: benchmarks/results/<timestamp>.json)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/shipyard-bench"), help="contexts and state (default /tmp/shipyard-bench)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and 1 run: a smoke test, not a measurement")
    p.add_argument("-v", "--verbose", action="store_true", help="print every run's figure")
    p.add_argument("--shipyard-runtime", choices=("auto", "runc", "builtin"), default="auto")
    p.add_argument(
        "--anchor-network", choices=("host", "default"), default="host",
        help="network for BuildKit's and buildah's RUN steps (default host, as Shipyard's RUN uses)",
    )  # fmt: skip
    p.add_argument("--buildah-jobs", type=int, default=8, help="buildah --jobs (stages in parallel; default 8)")
    p.add_argument(
        "--settle", type=float, help="seconds to wait after sync before each timed build (default 1; 0 with --quick)"
    )
    p.add_argument("--plain", action="store_true", help="plain-text table even when rich is installed")
    return p


def _git_revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout
        return f"{head}{'+dirty' if dirty.strip() else ''}"
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)
    try:
        cases = select(args.cases)
    except ValueError as exc:
        say(f"error: {exc}")
        return 2
    if os.geteuid() != 0:
        say("error: the benchmarks need root (Shipyard's RUN steps use namespaces, overlayfs and runc)")
        return 2
    runs = args.runs if args.runs is not None else (1 if args.quick else 5)
    if runs < 1:
        say("error: --runs must be at least 1")
        return 2
    sizes = QUICK if args.quick else FULL
    settle = args.settle if args.settle is not None else (0.0 if args.quick else 1.0)
    workdir = args.workdir.resolve()
    statedir = workdir / f"state-{os.getpid()}"  # per invocation: contexts are shared, state never is

    shipyard = ShipyardTool(statedir, args.shipyard_runtime)
    if why := shipyard.unavailable():
        say(f"error: Shipyard cannot run: {why}")
        return 2
    tools: list[Tool] = [shipyard]
    skipped: dict[str, tuple[str, str]] = {}
    anchors: list[Tool] = [BuildKitTool(), BuildahTool(statedir, args.buildah_jobs)]
    for tool in anchors:
        why = "--no-anchors" if args.no_anchors else tool.unavailable()
        if why:
            skipped[tool.name] = (tool.label, why)
            if not args.no_anchors:
                say(f"{tool.label} is not measured: {why}")
        else:
            tools.append(tool)

    started = dt.datetime.now(dt.UTC)
    say(f"benchmarks: {', '.join(c.id for c in cases)}; {runs} run(s) each; tools: {', '.join(t.label for t in tools)}")
    results: list[CaseResult] = []
    t0 = time.perf_counter()
    try:
        for case in cases:
            results.append(
                run_case(case, tools, skipped, workdir, sizes, runs, args.anchor_network == "host", say, args.verbose, settle)
            )
    except KeyboardInterrupt:
        say("interrupted: reporting the cases that finished")
    finally:
        for tool in tools:
            tool.close()
        try:
            statedir.rmdir()
        except OSError:
            pass

    meta = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - t0, 1),
        "revision": _git_revision(),
        "quick": args.quick,
        "runs": runs,
        "shipyard_runtime": args.shipyard_runtime,
        "anchor_network": args.anchor_network,
        "settle_s": settle,
        "tools": {t.name: t.settings() for t in tools},
        "skipped": {name: why for name, (_, why) in skipped.items()},
    }
    out = args.json or RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    write_json(to_json(results, meta), out)

    caption = (
        f"Medians of {runs} run(s). Ratio = Shipyard / BuildKit in the same run. "
        f"Shipyard --runtime {args.shipyard_runtime}; BuildKit and buildah with "
        f"{'host networking (--network=host)' if args.anchor_network == 'host' else 'their default networking'}; "
        f"buildah --layers --jobs {args.buildah_jobs}."
        + (" QUICK MODE: sizes reduced, targets are not meaningful." if args.quick else "")
        + f" JSON: {out}"
    )
    print()
    render(results, caption, force_plain=args.plain)
    bad = [r.case.id for r in results if verdict(r).result in ("INVALID", "ERROR")]
    bad += [r.case.id for r in results if any(t.error or t.problems for t in r.tools)]
    return 1 if bad or len(results) < len(cases) else 0


if __name__ == "__main__":
    sys.exit(main())
