"""`shipyard build`: Dockerfile → graph → solve → image store / outputs → report."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable

from engine.commands.common import isolate_mounts, state_root
from engine.errors import BuildStepError, ShipyardError, UsageError
from engine.progress.events import BuildMessage, BuildPlanned, Event, EventBus

log = logging.getLogger("shipyard.build")


@dataclass
class _Renderer:
    handle: Callable[[Event], None]
    close: Callable[[], None]


def pick_renderer(mode: str) -> _Renderer | None:
    if mode == "quiet":
        return None
    if mode == "auto":
        mode = "tty" if sys.stderr.isatty() and os.environ.get("TERM") != "dumb" else "plain"
    if mode == "tty":
        from engine.progress.tty import TtyRenderer

        tty = TtyRenderer(sys.stderr)
        return _Renderer(tty, tty.close)
    if mode == "json":
        from engine.progress.jsonl import JsonRenderer

        return _Renderer(JsonRenderer(sys.stderr), lambda: None)
    from engine.progress.plain import PlainRenderer

    return _Renderer(PlainRenderer(sys.stderr), lambda: None)


def parse_build_args(values: list[str]) -> dict[str, str]:
    """`KEY=VALUE`, or `KEY` alone to take the value from the environment (docker's rule)."""
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"--build-arg {item!r}: empty name")
        if sep:
            out[key] = value
        elif key in os.environ:
            out[key] = os.environ[key]
    return out


def _dockerfile_path(args: argparse.Namespace) -> tuple[str, str]:
    """(path to read, name to show in errors)."""
    if args.file:
        return args.file, args.file if args.file == "-" else os.path.relpath(args.file) if not os.path.isabs(args.file) else args.file
    return os.path.join(args.context, "Dockerfile"), "Dockerfile"


def run_build(args: argparse.Namespace) -> int:
    started = time.time()
    if not os.path.isdir(args.context):
        raise UsageError(f"build context {args.context!r} is not a directory")
    from engine.outputs import parse_output

    outputs = [parse_output(o) for o in args.output]
    build_args = parse_build_args(args.build_arg)
    path, shown_name = _dockerfile_path(args)
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except FileNotFoundError:
        raise UsageError(f"Dockerfile not found: {path}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: the Dockerfile is not UTF-8 text") from None

    isolate_mounts()
    from engine.debuglog import DebugLog
    from engine.solver.context import Engine

    engine = Engine.open(state_root(args), runtime=args.runtime)
    debug = DebugLog(engine.state.logs)
    try:
        return _build(args, engine, debug, text, shown_name, build_args, outputs, started)
    finally:
        engine.close()
        debug.finish()


def _build(args, engine, debug, text, shown_name, build_args, outputs, started) -> int:  # type: ignore[no-untyped-def]
    from engine.images import ImageStore
    from engine.solver.solver import Solver
    from frontends.dockerfile.lowering import BuildParams, lower_dockerfile
    from frontends.dockerfile.parser import parse_dockerfile

    log.info("build %s (context %s, root %s)", shown_name, os.path.abspath(args.context), engine.state.root)
    dockerfile = parse_dockerfile(text, shown_name)
    store = ImageStore(engine)
    params = BuildParams(
        context_path=os.path.abspath(args.context),
        target=args.target or "",
        build_args=build_args,
    )
    lowered = lower_dockerfile(dockerfile, params, store)

    bus = EventBus()
    renderer = pick_renderer("quiet" if args.quiet else args.progress)
    if renderer is not None:
        bus.subscribe(renderer.handle)
    bus.subscribe(_debug_subscriber(debug))
    bus.publish(BuildPlanned(len({s.vertex for s in lowered.steps})))
    solver = Solver(engine, bus, lowered.meta, no_cache=args.no_cache, max_parallel=max(1, args.max_parallelism))
    previous = signal.signal(signal.SIGTERM, lambda *_: solver.cancel())
    try:
        try:
            outcome = solver.solve([lowered.target])
        except BuildStepError as exc:
            _print_failure(exc, renderer)
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        digest = ""
        config_digest = ""
        result = outcome.results[lowered.target.digest]
        wants_image = args.tag or outputs or args.metadata_file or args.quiet
        if wants_image:
            from engine.exporters import export
            from engine.images import assemble_image
            from engine.layers import LayerBlobs

            blobs = LayerBlobs(engine)
            built = assemble_image(engine, blobs, lowered.image, result.snapshot)
            digest, config_digest = built.manifest_digest, built.config_digest
            if args.tag:
                for name in store.put(args.tag, built):
                    bus.publish(BuildMessage(f"naming to {name} done"))
            for spec in outputs:
                exported = export(engine, blobs, built, spec, tuple(args.tag))
                bus.publish(BuildMessage(f"exporting to {spec.type} {spec.dest} done"))
                if exported:
                    digest = exported
        summary = _summary(lowered, outcome, time.time() - started)
        bus.publish(BuildMessage(summary))
        log.info(summary)
    finally:
        if renderer is not None:
            renderer.close()
    if args.metadata_file:
        _write_metadata(args.metadata_file, lowered, outcome, digest, config_digest)
    if args.quiet:
        print(config_digest)
    return 0


def _debug_subscriber(debug):  # type: ignore[no-untyped-def]
    from engine.progress.events import VertexCached, VertexCompleted, VertexStarted

    logger = logging.getLogger("shipyard.solver")
    attached = False

    def handle(event: Event) -> None:
        nonlocal attached
        match event:
            case VertexStarted(name=name):
                if not attached:
                    attached = True
                    debug.attach_in_background()
                logger.info("start %s", name)
            case VertexCached(name=name):
                logger.debug("cached %s", name)
            case VertexCompleted(name=name, duration=duration, error=error):
                logger.info("done %s in %.3fs%s", name, duration, f" error: {error}" if error else "")

    return handle


def _step_entries(lowered, outcome) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    entries = []
    for step in lowered.steps:
        state = outcome.states.get(step.vertex)
        entries.append(
            {
                "name": step.name,
                "cached": bool(state is None or not state.executed),
                "duration_s": round(state.duration if state else 0.0, 6),
                "cache_key": (state.key or "") if state else "",
            }
        )
    return entries


def _summary(lowered, outcome, wall: float) -> str:  # type: ignore[no-untyped-def]
    entries = _step_entries(lowered, outcome)
    executed = sum(1 for e in entries if not e["cached"])
    return f"Build finished in {wall:.2f}s: {len(entries)} steps, {len(entries) - executed} cached, {executed} executed"


def _write_metadata(path: str, lowered, outcome, digest: str, config_digest: str) -> None:  # type: ignore[no-untyped-def]
    data = {
        "containerimage.digest": digest,
        "containerimage.config.digest": config_digest,
        "shipyard.steps": _step_entries(lowered, outcome),
    }
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _print_failure(exc: BuildStepError, renderer: _Renderer | None) -> None:
    """BuildKit's failure block: the step, the tail of its output; the CLI adds the error line."""
    if renderer is not None:
        renderer.close()
    lines = ["------", f" > {exc.step}:"]
    lines += [f"{line}" for line in exc.output_tail]
    lines.append("------")
    print("\n".join(lines), file=sys.stderr)
