"""`shipyard build`: Dockerfile → graph → solve → image store / outputs → report.

Two paths. The normal one parses, lowers, solves and exports. Before it, the
whole-build memo (`engine.buildmemo`) is consulted: when every input of the last
identical build is provably unchanged, the result is reported straight away. Module
imports here stay light because the memo path must not pay for the frontend.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from typing import Any, Callable

from engine.commands.common import isolate_mounts, state_root
from engine.errors import BuildStepError, UsageError

log = logging.getLogger("shipyard.build")


class _Renderer:
    """A progress renderer and how to close it (once)."""

    def __init__(self, handle: Callable[[Any], None], close: Callable[[], None]) -> None:
        self.handle = handle
        self._close = close
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()


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
        return args.file, args.file
    return os.path.join(args.context, "Dockerfile"), "Dockerfile"


class _BuildRun:
    """One `shipyard build` invocation: its inputs, its state handles, its reporting."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.time()
        if not os.path.isdir(args.context):
            raise UsageError(f"build context {args.context!r} is not a directory")
        self.outputs = []
        if args.output:
            from engine.outputs import parse_output

            self.outputs = [parse_output(o) for o in args.output]
        if getattr(args, "push", False):  # --push: buildx's shorthand for --output type=registry
            from engine.outputs import parse_output

            self.outputs.append(parse_output("type=registry"))
        if any(o.type in ("registry", "image") for o in self.outputs):
            from engine.exporters import check_push_names

            check_push_names(self.outputs, tuple(args.tag))
        self.build_args = parse_build_args(args.build_arg)
        path, self.filename = _dockerfile_path(args)
        try:
            self.text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        except FileNotFoundError:
            raise UsageError(f"Dockerfile not found: {path}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{path}: the Dockerfile is not UTF-8 text") from None
        from frontends.dockerfile.dockerignore import load_ignore

        self.ignore = load_ignore(args.context, None if path == "-" else os.path.abspath(path))
        self.wants_image = bool(args.tag or self.outputs or args.metadata_file or args.quiet)
        self.call = "check" if args.check else args.call
        self.named_contexts = _parse_named_contexts(args.build_context)
        self.remote_cache = None  # --cache-from / --cache-to (cache.remote)
        if getattr(args, "cache_from", None) or getattr(args, "cache_to", None):
            from cache.remote.session import RemoteCacheSession

            self.remote_cache = RemoteCacheSession.from_flags(args.cache_from, args.cache_to)
            self.wants_image = self.wants_image or bool(args.cache_to)
        from engine.solver.session import parse_allow_flags

        self.entitlements = parse_allow_flags(getattr(args, "allow", []))
        if args.platform and args.platform not in HOST_PLATFORMS:
            raise UsageError(f"--platform {args.platform}: only the host platform ({HOST_PLATFORMS[0]}) can be built here")

    def run(self) -> int:
        from cache.index import CacheIndex
        from engine.debuglog import DebugLog
        from engine.progress.events import EventBus
        from engine.state import StateDir

        state = StateDir(state_root(self.args)).ensure()
        index = CacheIndex(state.index_db)
        debug = DebugLog(state.logs)
        self.bus = EventBus()
        self.renderer = pick_renderer("quiet" if self.args.quiet else self.args.progress)
        if self.renderer is not None:
            self.bus.subscribe(self.renderer.handle)
        self.bus.subscribe(_debug_subscriber(debug))
        log.info("build %s (context %s, root %s)", self.filename, os.path.abspath(self.args.context), state.root)
        try:
            if self.call != "build":
                return self._call()
            memo_key = None
            if not self.args.no_cache and not self.outputs and not self.args.no_cache_filter and not getattr(self.args, "cache_to", None):
                from engine.buildmemo import memo_key as make_key
                from engine.buildmemo import verified_memo

                memo_key = make_key(
                    dockerfile=self.text,
                    filename=self.filename,
                    context=self.args.context,
                    target=self.args.target or "",
                    build_args={
                        **self.build_args,
                        **{f"context:{k}": v for k, v in self.named_contexts.items()},
                        **{f"allow:{e}": "1" for e in self.entitlements},  # a refused build is never a memo hit
                        **({f"ignore:{self.ignore.name}": "\n".join(self.ignore.patterns)} if self.ignore.patterns else {}),
                    },
                )
                memo = verified_memo(index, memo_key, self.hashers(index))
                if memo is not None and (memo["image"] or not self.wants_image):
                    return self._from_memo(index, memo)
            return self._full_build(state.root, index, memo_key, debug)
        finally:
            if self.renderer is not None:
                self.renderer.close()
            index.close()
            index.leases.release()  # the build is done with every snapshot and blob it held
            debug.finish()

    def hashers(self, index):  # type: ignore[no-untyped-def]
        """Context hashers shared by the memo check and the solver (one walk per selection)."""
        if getattr(self, "_hashers", None) is None:
            from cache.checksum import ContextHashers
            from frontends.dockerfile.dockerignore import exclude_factory

            self._hashers = ContextHashers(index, exclude_factory=exclude_factory(self.ignore.name))
        return self._hashers

    def _call(self) -> int:
        """`--call=outline|targets|check` (and `--check`): inspect instead of building.

        Nothing is built and no base image has to exist; one that is in the local store
        lends its ENV and SHELL to the checks (BuildKit resolves it; here a missing one
        just contributes no variables).
        """
        from engine.images import ImageStore
        from engine.solver.context import Engine
        from frontends.dockerfile.inspect import run_call
        from frontends.dockerfile.parser import parse_dockerfile

        if self.renderer is not None:
            self.renderer.close()
        dockerfile = parse_dockerfile(self.text, self.filename)
        engine = Engine.open(state_root(self.args))
        try:
            return run_call(
                self.call,
                dockerfile,
                self.build_args,
                self.args.target or "",
                source=self.text,
                resolver=ImageStore(engine),
                exclude_patterns=self.ignore.patterns,
            )
        finally:
            engine.close()

    # ------------------------------------------------------------------ the memo path

    def _from_memo(self, index, memo: dict[str, Any]) -> int:  # type: ignore[no-untyped-def]
        from engine.progress.events import BuildMessage, BuildPlanned, VertexCached

        if memo.get("warnings"):  # the checks' warnings, shown again on every build as BuildKit does
            from frontends.dockerfile.checks import CheckWarning

            self.warnings = [CheckWarning(**w) for w in memo["warnings"]]
            for warning in self.warnings:
                self.bus.publish(BuildMessage(f"WARNING: {warning.line()}"))
        seen: set[str] = set()
        unique = [s for s in memo["steps"] if not (s["cache_key"] in seen or seen.add(s["cache_key"]))]
        self.bus.publish(BuildPlanned(len(unique)))
        for step in unique:
            self.bus.publish(VertexCached(step["cache_key"], step["name"]))
        manifest, config = memo["image"] or ("", "")
        if self.args.tag:
            from engine.reference import parse_reference

            for name in self.args.tag:
                normalized = str(parse_reference(name))
                index.put_image(normalized, manifest, config, memo["snapshot"])
                self.bus.publish(BuildMessage(f"naming to {normalized} done"))
        steps = [dict(name=s["name"], cached=True, duration_s=0.0, cache_key=s["cache_key"]) for s in memo["steps"]]
        summary = _summary_line(steps, time.time() - self.started)
        self.bus.publish(BuildMessage(summary))
        log.info("%s (whole-build memo)", summary)
        self._finish(manifest, config, steps)
        return 0

    # ------------------------------------------------------------------ the normal path

    def _full_build(self, root, index, memo_key: str | None, debug) -> int:  # type: ignore[no-untyped-def]
        from engine.buildmemo import Recorder
        from engine.images import ImageStore
        from engine.layers import LayerBlobs
        from engine.progress.events import BuildPlanned
        from engine.solver.context import Engine
        from frontends.dockerfile.lowering import BuildParams, lower_dockerfile
        from frontends.dockerfile.parser import parse_dockerfile

        isolate_mounts()
        engine = Engine.open(root, runtime=self.args.runtime, index=index)
        recorder = Recorder()
        dockerfile = parse_dockerfile(self.text, self.filename)
        self.warnings = self._checks(dockerfile, engine)
        store = ImageStore(engine, on_resolve=recorder.image, events=self.bus, pull=True)
        params = BuildParams(
            context_path=os.path.abspath(self.args.context),
            target=self.args.target or "",
            build_args=self.build_args,
            named_contexts=self.named_contexts,
            exclude_patterns=self.ignore.patterns,
        )
        from engine.solver.sources import BuildResolver, RemoteSources, remote_sources_pinned

        lowered = lower_dockerfile(dockerfile, params, BuildResolver(store, RemoteSources(engine)))
        if not remote_sources_pinned(lowered.target):
            recorder.memoizable = False  # an unpinned URL or branch may change with nothing local changing
        self.bus.publish(BuildPlanned(len({s.vertex for s in lowered.steps})))
        from cache.gc import LayerSizer, collect_after_build

        blobs = LayerBlobs(engine)
        sizer = LayerSizer(engine.state.layers)  # GC's sizes, taken while later steps run
        try:
            code = self._solve_and_export(engine, index, memo_key, recorder, store, lowered, blobs, sizer)
            collect_after_build(engine.state, index, sizer)
        finally:
            blobs.close()
            sizer.close()
        return code

    def _solve_and_export(self, engine, index, memo_key, recorder, store, lowered, blobs, sizer) -> int:  # type: ignore[no-untyped-def]
        from engine.graph.ops import SOURCE_OPS
        from engine.progress.events import BuildMessage
        from engine.solver.sigterm import cancel_on_sigterm
        from engine.solver.solver import Solver

        from engine.graph.vertex import walk
        from engine.solver.session import BuildSession, check_entitlements, parse_secret_flag, parse_ssh_flag

        session = BuildSession(
            secrets={s.id: s for s in map(parse_secret_flag, self.args.secret)},
            ssh=dict(map(parse_ssh_flag, self.args.ssh)),
            entitlements=self.entitlements,
        )
        check_entitlements(walk([lowered.target]), lowered.meta, self.entitlements)
        no_cache_stages = {s.lower() for s in self.args.no_cache_filter}
        uncached = {s.vertex for s in lowered.steps if s.stage.lower() in no_cache_stages and s.keyword != "FROM"}

        def on_snapshot(sid: int) -> None:
            layer = engine.index.snapshot(sid).layer
            sizer.submit(layer.id, layer.dir)
            if self.wants_image:
                blobs.prefetch(layer)

        remote = self.remote_cache.open_imports(engine, self.bus) if self.remote_cache else None
        solver = Solver(
            engine,
            self.bus,
            lowered.meta,
            no_cache=self.args.no_cache,
            max_parallel=max(1, self.args.max_parallelism),
            on_selection=recorder.selection,
            hashers=self.hashers(index),
            on_snapshot=on_snapshot,
            session=session,
            no_cache_vertices=uncached,
            remote=remote,
        )
        with cancel_on_sigterm(solver):
            try:
                outcome = solver.solve([lowered.target])
            except BuildStepError as exc:
                self._print_failure(exc)
                raise
        result = outcome.results[lowered.target.digest]
        digest = config_digest = ""
        image: tuple[str, str] | None = None
        if self.wants_image:
            from engine.exporters import export
            from engine.images import assemble_image

            built = assemble_image(engine, blobs, lowered.image, result.snapshot)
            if self.remote_cache is not None:
                built = self.remote_cache.inline(engine, blobs, built, outcome, lowered.target)
            digest, config_digest = built.manifest_digest, built.config_digest
            image = (digest, config_digest)
            for name in store.put(self.args.tag, built):
                self.bus.publish(BuildMessage(f"naming to {name} done"))
            for spec in self.outputs:
                exported = export(engine, blobs, built, spec, tuple(self.args.tag), events=self.bus)
                self.bus.publish(BuildMessage(f"exporting to {spec.type}{' ' + spec.dest if spec.dest else ''} done"))
                if exported:
                    digest = exported
        if self.remote_cache is not None:
            self.remote_cache.export(engine, blobs, outcome, lowered.target, self.bus)
        steps = _step_entries(lowered, outcome)
        if memo_key is not None and recorder.memoizable:
            target_state = outcome.states[lowered.target.digest]
            recorder.record(
                index,
                memo_key,
                step_keys=[s.key for s in outcome.states.values() if s.key and not isinstance(s.vertex.op, SOURCE_OPS)],
                target_key=target_state.key or "",
                snapshot=result.snapshot,
                image=image,
                steps=[{"name": s["name"], "cache_key": s["cache_key"]} for s in steps],
                warnings=[dataclasses.asdict(w) for w in getattr(self, "warnings", [])],
            )
        summary = _summary_line(steps, time.time() - self.started)
        self.bus.publish(BuildMessage(summary))
        log.info(summary)
        self._finish(digest, config_digest, steps)
        return 0

    # ------------------------------------------------------------------ reporting

    def _checks(self, dockerfile, engine=None):  # type: ignore[no-untyped-def]
        """Run the build checks; each warning goes to the progress output and the metadata.

        With `error=true` in the check options (`# check=` or BUILDKIT_DOCKERFILE_CHECK)
        a warning fails the build before anything runs, as in BuildKit. `engine` lets the
        checks read base images' ENV and SHELL from the local store.
        """
        from engine.progress.events import BuildMessage
        from frontends.dockerfile.checks import CheckError, check_config, failure_message, run_checks

        resolver = None
        if engine is not None:
            from engine.images import ImageStore

            resolver = ImageStore(engine)
        config = check_config(dockerfile, self.build_args)
        warnings = run_checks(
            dockerfile,
            self.build_args,
            self.args.target or "",
            source=self.text,
            resolver=resolver,
            config=config,
            exclude_patterns=self.ignore.patterns,
        )
        for warning in warnings:
            self.bus.publish(BuildMessage(f"WARN: {warning.line()}"))
        failure = failure_message(warnings, config)
        if failure:
            raise CheckError(failure)
        return warnings

    def _finish(self, digest: str, config_digest: str, steps: list[dict[str, Any]]) -> None:
        if self.renderer is not None:
            self.renderer.close()
        if self.args.metadata_file:
            data: dict[str, Any] = {
                "containerimage.digest": digest,
                "containerimage.config.digest": config_digest,
                "shipyard.steps": steps,
            }
            warnings = getattr(self, "warnings", [])
            if warnings:
                data["shipyard.warnings"] = [
                    {"rule": w.rule, "message": w.message, "location": w.location, "url": w.url} for w in warnings
                ]
            tmp = f"{self.args.metadata_file}.tmp"
            with open(tmp, "w") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
            os.replace(tmp, self.args.metadata_file)
        if self.args.quiet:
            print(config_digest)

    def _print_failure(self, exc: BuildStepError) -> None:
        """BuildKit's failure block: the step and the tail of its output; the CLI adds the error line."""
        if self.renderer is not None:
            self.renderer.close()
        lines = ["------", f" > {exc.step}:", *exc.output_tail, "------"]
        print("\n".join(lines), file=sys.stderr)


HOST_PLATFORMS = ("linux/amd64", "linux/x86_64", "amd64")


def _parse_named_contexts(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"--build-context {item!r}: want NAME=DIR|docker-image://REF|oci-layout://PATH")
        out[name] = value
    return out


def run_build(args: argparse.Namespace) -> int:
    return _BuildRun(args).run()


def _debug_subscriber(debug):  # type: ignore[no-untyped-def]
    logger = logging.getLogger("shipyard.solver")
    attached = False

    def handle(event: Any) -> None:
        nonlocal attached
        kind = type(event).__name__
        if kind == "VertexStarted":
            if not attached:
                attached = True
                debug.attach_later()
            logger.info("start %s", event.name)
        elif kind == "VertexCached":
            logger.debug("cached %s", event.name)
        elif kind == "VertexCompleted":
            logger.info("done %s in %.3fs%s", event.name, event.duration, f" error: {event.error}" if event.error else "")

    return handle


def _step_entries(lowered, outcome) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
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
        if state is not None and not state.executed:
            # where the result came from: this state dir, an imported cache, or nowhere
            # (a later step's cache hit made it unnecessary)
            entries[-1]["cache_source"] = state.cache_source or ("state" if state.result is not None else "skipped")
    return entries


def _summary_line(steps: list[dict[str, Any]], wall: float) -> str:
    executed = sum(1 for s in steps if not s["cached"])
    return f"Build finished in {wall:.2f}s: {len(steps)} steps, {len(steps) - executed} cached, {executed} executed"
