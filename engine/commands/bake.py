"""`shipyard bake`: build the targets of a build file (`build.yaml`) as one graph.

The command loads the file (`frontends.yaml.loader`), then either prints it
(`--print`, `--list`), explains what would build and why (`--explain`), or runs the
bake (`engine.bake.executor`) and writes `--metadata-file`: a JSON object keyed by
target, each value what `build --metadata-file` writes, plus `shipyard.skipped`
for a target whose key was unchanged and whose outputs still existed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from engine.errors import BuildStepError, UsageError


def add_bake_commands(sub: Any, progress_modes: tuple[str, ...], runtimes: tuple[str, ...]) -> None:
    """The `bake` and `graph` subcommands."""
    bake = sub.add_parser("bake", help="build the targets of a build file (build.yaml) as one graph")
    bake.add_argument("targets", nargs="*", metavar="TARGET|GROUP", help="what to build (default: the default group)")
    _file_flags(bake)
    bake.add_argument("--print", action="store_true", dest="print_resolved", help="print the resolved targets as JSON")
    bake.add_argument("--list", choices=("targets", "groups", "variables"), help="list the file's targets, groups or variables")
    bake.add_argument("--progress", choices=progress_modes, default="auto")
    bake.add_argument("--metadata-file", help="write per-target metadata (digests, steps, skipped) as JSON")
    bake.add_argument("--no-cache", action="store_true", help="build every target, running every step")
    bake.add_argument("--push", action="store_true", help="push every image target to its tags")
    bake.add_argument(
        "--allow", action="append", default=[], metavar="ENTITLEMENT", help="grant network.host or security.insecure to targets that request it"
    )
    bake.add_argument("--affected", action="store_true", help="build only targets whose key changed (and their dependents)")
    bake.add_argument("--explain", action="store_true", help="print, per target and step, HIT/MISS and why (builds nothing)")
    bake.add_argument("--runtime", choices=runtimes, default=os.environ.get("SHIPYARD_RUNTIME", "auto"))
    bake.add_argument("--max-parallelism", type=int, default=32, help="steps running at once (default 32)")

    graph = sub.add_parser("graph", help="print the dependency graph of a build file's targets")
    graph.add_argument("targets", nargs="*", metavar="TARGET|GROUP", help="only these and their dependencies (default: all)")
    _file_flags(graph)
    graph.add_argument("--format", choices=("text", "dot", "json"), default="text")


def _file_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", action="append", default=[], help="build file (default: build.yaml or shipyard.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="TARGET.KEY=VALUE", help="override a target's key (globs allowed)")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="set a variable")


def parse_vars(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--var {item!r}: want NAME=VALUE")
        out[name] = value
    return out


def load_file(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from frontends.yaml.loader import load_bake

    return load_bake(list(args.file), cwd=os.getcwd(), variables=parse_vars(args.var), sets=list(args.set))


def run_bake_command(args: argparse.Namespace) -> int:
    bake = load_file(args)
    if args.print_resolved or args.list:
        from frontends.yaml import loader

        if args.list:
            text = loader.list_entries(bake, args.list)
        else:
            text = loader.print_resolved(bake, list(args.targets))
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0
    from engine.solver.session import parse_allow_flags

    allow = parse_allow_flags(args.allow)
    from engine.commands.common import isolate_mounts, state_root

    root = state_root(args)  # first: for a non-root user it enters the rootless namespace
    if not args.explain:
        isolate_mounts()  # before any thread: the overlays this bake mounts die with it
    from cache.index import CacheIndex
    from engine.bake.executor import BakeOptions, open_engine, run_bake
    from engine.commands.build import pick_renderer
    from engine.progress.events import BuildMessage, EventBus
    from engine.state import StateDir

    state = StateDir(root).ensure()
    index = CacheIndex(state.index_db)
    engine = open_engine(state.root, args.runtime, index)
    bus = EventBus()
    renderer = pick_renderer("quiet" if args.explain else args.progress)
    if renderer is not None:
        bus.subscribe(renderer.handle)
    options = BakeOptions(
        names=tuple(args.targets),
        cwd=os.getcwd(),
        no_cache=args.no_cache,
        push=args.push,
        allow=allow,
        affected=args.affected,
        explain=args.explain,
        runtime=args.runtime,
        max_parallel=args.max_parallelism,
    )
    try:
        try:
            result = run_bake(bake, options, engine, bus)
        except BuildStepError as exc:
            if renderer is not None:
                renderer.close()
            print("\n".join(["------", f" > {exc.step}:", *exc.output_tail, "------"]), file=sys.stderr)
            raise
        if args.explain:
            sys.stdout.write(result.explanation)
            return 0
        bus.publish(BuildMessage(result.summary()))
        if renderer is not None:
            renderer.close()
        if args.metadata_file:
            write_metadata(args.metadata_file, result.metadata())
        if any(t.built for t in result.targets):
            from cache.gc import collect_after_build

            collect_after_build(engine.state, index)
        return 0
    finally:
        if renderer is not None:
            renderer.close()
        engine.close()
        leases = getattr(index, "leases", None)
        if leases is not None:
            leases.release()  # the bake is done with every snapshot and blob it held


def write_metadata(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
