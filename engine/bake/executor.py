"""Run a bake: plan, one solve for every target that builds, then per-target exports.

Every target that builds is lowered into one graph (vertices dedupe by digest, so a
stage ten targets share is one vertex) and the solver runs them all in a single
`solve`: shared work runs once, independent targets run in parallel, and a target's
`target:` contexts are simply inputs of its vertices, so they are done first. Then,
target by target: the image (store tags, outputs, pushes), result trees, cache
exports, and the record the next bake checks to skip it.

Nothing runs before every check has passed: platforms, entitlements requested in the
file but not granted with `--allow`, push names, secrets.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.bake.graph import TargetGraph, target_graph
from engine.bake.planner import Planner, TargetPlan
from engine.bake.records import (
    OutputStamp,
    RecordStore,
    StepRecord,
    TargetRecord,
    file_stamp,
    scope_of,
    write_dir_stamp,
)
from engine.errors import ShipyardError, UsageError
from frontends.yaml.model import BakeFile, TargetSpec

if TYPE_CHECKING:
    from cache.index import CacheIndex
    from engine.graph.vertex import Vertex
    from engine.layers import LayerBlobs
    from engine.outputs import OutputSpec as EngineOutput
    from engine.progress.events import EventBus
    from engine.solver.context import Engine
    from engine.solver.solver import SolveOutcome

HOST_PLATFORMS = ("linux/amd64", "linux/x86_64", "amd64")
IMAGE_OUTPUTS = ("image", "registry", "oci", "docker")
FILE_OUTPUTS = ("local", "tar")


class EntitlementNotGranted(ShipyardError):
    """A target asks for a privilege the command line did not grant."""

    exit_code = 1


@dataclass(frozen=True)
class BakeOptions:
    names: tuple[str, ...] = ()
    cwd: str = ""
    no_cache: bool = False
    push: bool = False
    allow: frozenset[str] = frozenset()
    affected: bool = False
    explain: bool = False
    runtime: str = "auto"
    max_parallel: int = 32


@dataclass(frozen=True)
class TargetResult:
    name: str
    built: bool
    reason: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BakeResult:
    targets: tuple[TargetResult, ...]
    explanation: str = ""
    seconds: float = 0.0

    def metadata(self) -> dict[str, dict[str, Any]]:
        return {t.name: t.metadata for t in self.targets}

    def summary(self) -> str:
        built = sum(1 for t in self.targets if t.built)
        return (
            f"Bake finished in {self.seconds:.2f}s: {len(self.targets)} targets, "
            f"{built} built, {len(self.targets) - built} skipped"
        )


# --------------------------------------------------------------------------- checks before anything runs


def _outputs(spec: TargetSpec, push: bool) -> list[EngineOutput]:
    from engine.outputs import OutputSpec as EngineOutput

    out = []
    for o in spec.outputs:
        attrs = dict(o.attrs)
        dest = attrs.pop("dest", "")
        if o.type not in IMAGE_OUTPUTS + FILE_OUTPUTS:
            raise UsageError(f"{_where(spec)}target {spec.name}: unknown output type {o.type!r}")
        if o.type in ("oci", "docker", "local", "tar") and not dest:
            raise UsageError(f"{_where(spec)}target {spec.name}: output type={o.type} needs dest")
        if spec.result and o.type in IMAGE_OUTPUTS:
            raise UsageError(f"{_where(spec)}target {spec.name}: a result: target has no image for a type={o.type} output")
        if o.type in ("oci", "docker", "local", "tar"):
            dest = os.path.abspath(dest)
        out.append(EngineOutput(o.type, dest, attrs))
    if push and not spec.result and spec.tags:
        out.append(EngineOutput("registry", "", {}))
    return out


def _where(spec: TargetSpec) -> str:
    return f"{spec.location}: " if spec.location else ""


def preflight(bake: BakeFile, graph: TargetGraph, options: BakeOptions) -> None:
    """Refuse, before anything is lowered or run, what cannot or may not be built."""
    from engine.solver.session import ENTITLEMENTS

    refused: list[str] = []
    for name in graph.order:
        spec = bake.targets[name]
        for platform in spec.platforms:
            if platform not in HOST_PLATFORMS:
                raise UsageError(
                    f"{_where(spec)}target {name}: platform {platform} cannot be built here "
                    f"(no emulation; the host platform is {HOST_PLATFORMS[0]})"
                )
        for entitlement in spec.entitlements:
            if entitlement not in ENTITLEMENTS:
                raise UsageError(f"{_where(spec)}target {name}: unknown entitlement {entitlement!r} (want {' or '.join(ENTITLEMENTS)})")
            if entitlement not in options.allow:
                refused.append(f"target {name} requests {entitlement}")
        if spec.network not in ("", "default", "none", "host"):
            raise UsageError(f"{_where(spec)}target {name}: network must be default, none or host")
        if spec.network and spec.network != "default" and not spec.steps:
            raise UsageError(f"{_where(spec)}target {name}: network: applies to inline steps; use RUN --network in a Dockerfile")
        outputs = _outputs(spec, options.push)
        if options.push and not spec.result and not spec.tags and not any(o.type in ("registry", "image") for o in outputs):
            raise UsageError(f"{_where(spec)}target {name}: --push needs tags (or an output with name=)")
        if any(o.type in ("registry", "image") for o in outputs):
            from engine.exporters import check_push_names

            check_push_names(outputs, spec.tags)
    if refused:
        grants = " ".join(f"--allow {e}" for e in sorted({r.rsplit(' ', 1)[1] for r in refused}))
        raise EntitlementNotGranted(f"{'; '.join(refused)}, which the command line did not grant (pass {grants})")


def _check_run_entitlements(planner: Planner, name: str, allow: frozenset[str]) -> frozenset[str]:
    """What `name`'s RUNs may use: entitlements both requested and granted (else an error)."""
    from engine.graph.ops import ExecOp
    from engine.solver.session import needed_entitlements

    spec = planner.bake.targets[name]
    effective = frozenset(spec.entitlements) & allow
    lowered = planner.lower(name)
    for vertex in planner.own_vertices(name):
        if not isinstance(vertex.op, ExecOp):
            continue
        for entitlement, flag in needed_entitlements(vertex.op):
            if entitlement in effective:
                continue
            metas = lowered.meta.get(vertex.digest) or ()
            where = f"{metas[0].location}: " if metas and metas[0].location else _where(spec)
            if entitlement in spec.entitlements:
                hint = f"pass --allow {entitlement}"
            else:
                hint = f"add {entitlement} to the target's entitlements and pass --allow {entitlement}"
            raise EntitlementNotGranted(f'{where}target {name}: RUN {flag} needs the "{entitlement}" entitlement ({hint})')
    return effective


def _session(planner: Planner, names: list[str], entitlements: frozenset[str]):  # type: ignore[no-untyped-def]
    from engine.solver.session import BuildSession, parse_secret_flag, parse_ssh_flag

    secrets: dict[str, Any] = {}
    ssh: dict[str, tuple[str, ...]] = {}
    for name in names:
        spec = planner.bake.targets[name]
        for secret in spec.secrets:
            text = ",".join([f"id={secret.id}"] + ([f"src={secret.src}"] if secret.src else []) + ([f"env={secret.env}"] if secret.env else []))
            source = parse_secret_flag(text)
            if secret.id in secrets and secrets[secret.id] != source:
                raise UsageError(f"{_where(spec)}target {name}: secret {secret.id!r} is defined differently by another target")
            secrets[secret.id] = source
        for item in spec.ssh:
            ssh_id, paths = parse_ssh_flag(item)
            if ssh_id in ssh and ssh[ssh_id] != paths:
                raise UsageError(f"{_where(spec)}target {name}: ssh {ssh_id!r} is defined differently by another target")
            ssh[ssh_id] = paths
    return BuildSession(secrets=secrets, ssh=ssh, entitlements=entitlements)


# --------------------------------------------------------------------------- the run


class _Bake:
    def __init__(self, bake: BakeFile, options: BakeOptions, engine: Engine, bus: EventBus) -> None:
        from cache.checksum import ContextHashers
        from frontends.dockerfile.dockerignore import exclude_factory

        self.bake = bake
        self.options = options
        self.engine = engine
        self.bus = bus
        self.cwd = options.cwd or os.getcwd()
        self.hashers = ContextHashers(engine.index, exclude_factory=exclude_factory())
        self.records = RecordStore(engine.index, scope_of(bake.files))

    def say(self, text: str) -> None:
        from engine.progress.events import BuildMessage

        self.bus.publish(BuildMessage(text))

    def run(self) -> BakeResult:
        started = time.time()
        graph = target_graph(self.bake, list(self.options.names))
        preflight(self.bake, graph, self.options)
        planner = Planner(
            self.bake, graph, self.engine, self.hashers, self.records,
            cwd=self.cwd, no_cache=self.options.no_cache, affected=self.options.affected, push=self.options.push,
            bus=self.bus,
        )  # fmt: skip
        try:
            plans = planner.plan()
            from engine.bake.explain import Explainer

            explainer = Explainer(planner)
            if self.options.explain:
                return BakeResult((), explainer.render(graph.order), time.time() - started)
            builds = [n for n in graph.order if plans[n].build]
            reasons = {n: explainer.reason(plans[n]) for n in graph.order}
            for name in graph.order:
                self.say(f"[{name}] {'building' if plans[name].build else 'skipped'}: {reasons[name]}")
            self._blobs: LayerBlobs | None = None
            try:
                outcome = self._solve(planner, builds) if builds else None
                results = []
                for name in graph.order:
                    plan = plans[name]
                    if plan.build:
                        assert outcome is not None and self._blobs is not None
                        metadata = self._finish_target(planner, plan, outcome, self._blobs)
                        results.append(TargetResult(name, True, reasons[name], metadata))
                    else:
                        results.append(TargetResult(name, False, reasons[name], self._skipped(planner, plan)))
            finally:
                if self._blobs is not None:
                    self._blobs.close()
            return BakeResult(tuple(results), "", time.time() - started)
        finally:
            self.hashers.flush()

    # ------------------------------------------------------------------ solving

    def _solve(self, planner: Planner, builds: list[str]) -> SolveOutcome:
        from engine.graph.ops import SOURCE_OPS
        from engine.layers import LayerBlobs
        from engine.progress.events import BuildPlanned
        from engine.solver.sigterm import cancel_on_sigterm
        from engine.solver.solver import Solver

        entitlements: set[str] = set()
        for name in builds:
            planner.lower(name)
        for name in planner.graph.order:
            if name in planner.lowered:
                entitlements |= _check_run_entitlements(planner, name, self.options.allow)
        session = _session(planner, builds, frozenset(entitlements))
        meta: dict[str, list[Any]] = {}
        uncached: set[str] = set()
        for name in planner.graph.order:
            lowered = planner.lowered.get(name)
            if lowered is None:
                continue
            for digest, metas in lowered.meta.items():
                meta.setdefault(digest, []).extend(metas)
            if planner.plans[name].build:
                uncached |= lowered.no_cache_vertices
        for name in builds:
            if planner.bake.targets[name].no_cache:  # this target's own steps run, whatever the cache has
                uncached |= {v.digest for v in planner.own_vertices(name) if not isinstance(v.op, SOURCE_OPS)}
        steps = {s.vertex for n in builds for s in planner.lowered[n].steps}
        self.bus.publish(BuildPlanned(len(steps)))
        self._blobs = LayerBlobs(self.engine)
        blobs = self._blobs
        imports = self._imports(planner, builds)
        solver = Solver(
            self.engine,
            self.bus,
            meta,
            no_cache=self.options.no_cache,
            max_parallel=max(1, self.options.max_parallel),
            hashers=self.hashers,
            on_snapshot=lambda sid: blobs.prefetch(self.engine.index.snapshot(sid).layer),
            session=session,
            no_cache_vertices=uncached,
            remote=imports.open_imports(self.engine, self.bus) if imports is not None else None,
        )
        try:
            outcome: SolveOutcome | None = None
            with cancel_on_sigterm(solver):
                for wave in build_waves(planner.graph, builds):
                    done = solver.solve([planner.lowered[n].vertex for n in wave])
                    outcome = done if outcome is None else _merged(outcome, done)
            assert outcome is not None
            return outcome
        finally:
            if imports is not None:
                imports.close()

    def _imports(self, planner: Planner, builds: list[str]):  # type: ignore[no-untyped-def]
        sources = list(dict.fromkeys(c for n in builds for c in planner.bake.targets[n].cache_from))
        if not sources:
            return None
        from cache.remote.session import RemoteCacheSession

        return RemoteCacheSession.from_flags(sources, ())

    # ------------------------------------------------------------------ per target, after the solve

    def _finish_target(self, planner: Planner, plan: TargetPlan, outcome: SolveOutcome, blobs: LayerBlobs) -> dict[str, Any]:
        from engine.progress.events import BuildMessage

        name, spec = plan.name, plan.spec
        lowered = planner.lower(name)
        result = outcome.results.get(lowered.vertex.digest)
        snapshot = result.snapshot if result is not None else None
        stamps: list[OutputStamp] = []
        digest = config_digest = ""
        image: tuple[str, str] | None = None
        outputs = _outputs(spec, self.options.push)
        if not lowered.is_result:
            from engine.images import ImageStore, assemble_image

            store = ImageStore(self.engine)
            built = assemble_image(self.engine, blobs, lowered.image, snapshot)
            inline = [c for c in spec.cache_to if "type=inline" in c.replace(" ", "")]
            if inline:
                from cache.remote.session import RemoteCacheSession

                session = RemoteCacheSession.from_flags((), inline)
                assert session is not None
                try:
                    built = session.inline(self.engine, blobs, built, _sub_outcome(outcome, lowered.vertex), lowered.vertex)
                finally:
                    session.close()
            digest, config_digest = built.manifest_digest, built.config_digest
            image = (digest, config_digest)
            for stored in store.put(list(spec.tags), built):
                stamps.append(OutputStamp("image", stored, digest))
                self.bus.publish(BuildMessage(f"[{name}] naming to {stored} done"))
            for out in outputs:
                stamps.extend(self._export_image(store, blobs, built, spec, out))
        for out in outputs:
            if out.type in FILE_OUTPUTS:
                stamps.append(self._export_files(snapshot, out, plan.key))
                self.bus.publish(BuildMessage(f"[{name}] exporting to {out.type} {out.dest} done"))
        exports = [c for c in spec.cache_to if "type=inline" not in c.replace(" ", "")]
        if exports:
            from cache.remote.session import RemoteCacheSession

            session = RemoteCacheSession.from_flags((), exports)
            assert session is not None
            session.export(self.engine, blobs, _sub_outcome(outcome, lowered.vertex), lowered.vertex, self.bus)
        steps = self._steps(planner, name, outcome)
        metadata: dict[str, Any] = {
            "containerimage.digest": digest,
            "containerimage.config.digest": config_digest,
            "shipyard.steps": steps,
            "shipyard.target.key": plan.key,
        }
        if lowered.is_result:
            metadata["shipyard.result"] = "/" + spec.result.strip("/")
        self._record(planner, plan, outcome, snapshot, image, tuple(stamps), metadata)
        return metadata

    def _export_image(self, store, blobs, built, spec: TargetSpec, out: EngineOutput) -> list[OutputStamp]:  # type: ignore[no-untyped-def]
        from engine.exporters import export
        from engine.progress.events import BuildMessage

        if out.type in FILE_OUTPUTS:
            return []
        names = tuple(spec.tags)
        if out.type == "image" and not out.flag("push", False):
            named = [n.strip() for n in out.attrs.get("name", "").split(",") if n.strip()]
            return [OutputStamp("image", n, built.manifest_digest) for n in store.put(named, built)]
        pushed = export(self.engine, blobs, built, out, names, events=self.bus)
        self.bus.publish(BuildMessage(f"[{spec.name}] exporting to {out.type}{' ' + out.dest if out.dest else ''} done"))
        if out.type in ("registry", "image"):
            from engine.reference import parse_reference

            targets = [n.strip() for n in out.attrs.get("name", "").split(",") if n.strip()] or list(names)
            return [OutputStamp("registry", str(parse_reference(n)), pushed) for n in targets]
        if os.path.isdir(out.dest):
            write_dir_stamp(out.dest, built.manifest_digest)
            return [OutputStamp("dir", out.dest, built.manifest_digest)]
        return [OutputStamp("file", out.dest, file_stamp(out.dest))]

    def _export_files(self, snapshot: int | None, out: EngineOutput, key: str) -> OutputStamp:
        subpath = out.attrs.get("from", "") or "/"
        if out.type == "local":
            export_tree(self.engine, snapshot, out.dest, subpath)
            write_dir_stamp(out.dest, key)
            return OutputStamp("dir", out.dest, key)
        export_tar(self.engine, snapshot, out.dest, subpath)
        return OutputStamp("file", out.dest, file_stamp(out.dest))

    def _steps(self, planner: Planner, name: str, outcome: SolveOutcome) -> list[dict[str, Any]]:
        """`shipyard.steps` of one target; a step shared with an earlier target counts once.

        A vertex several targets share ran once: it is reported executed only in the
        first target (in build order) that has it, and elsewhere as cached from that
        target (`cache_source: target:NAME`).
        """
        owner = self._owners(planner)
        entries = []
        for step in planner.lower(name).steps:
            state = outcome.states.get(step.vertex)
            first = owner.get(step.vertex, name)
            executed = bool(state is not None and state.executed and first == name)
            entry: dict[str, Any] = {
                "name": step.name,
                "cached": not executed,
                "duration_s": round(state.duration if state and executed else 0.0, 6),
                "cache_key": (state.key or "") if state else "",
            }
            if not executed:
                if state is not None and state.executed:
                    entry["cache_source"] = f"target:{first}"
                elif state is not None:
                    entry["cache_source"] = state.cache_source or ("state" if state.result is not None else "skipped")
                else:
                    entry["cache_source"] = "skipped"
            entries.append(entry)
        return entries

    def _owners(self, planner: Planner) -> dict[str, str]:
        if getattr(self, "_owner_map", None) is None:
            owners: dict[str, str] = {}
            for name in planner.graph.order:
                lowered = planner.lowered.get(name)
                if lowered is not None and planner.plans[name].build:
                    for step in lowered.steps:
                        owners.setdefault(step.vertex, name)
            self._owner_map = owners
        return self._owner_map

    def _record(self, planner, plan, outcome, snapshot, image, stamps, metadata) -> None:  # type: ignore[no-untyped-def]
        from engine.bake.explain import files_map

        name = plan.name
        lowered = planner.lower(name)
        selections, trusted = planner.facts(name)
        from engine.graph.ops import SOURCE_OPS
        from engine.graph.vertex import walk

        graph = {v.digest: v for v in walk([lowered.vertex])}
        steps = []
        for step in lowered.steps:
            state = outcome.states.get(step.vertex)
            key = (state.key or "") if state is not None else (planner.vertex_keys.keys.get(step.vertex) or "")
            parts = state.parts if state is not None else planner.vertex_keys.parts.get(step.vertex)
            vertex = graph.get(step.vertex)
            steps.append(StepRecord(step.name, key, parts, vertex is not None and isinstance(vertex.op, SOURCE_OPS)))
        record = TargetRecord(
            name=name,
            key=plan.key,
            memo=planner.memo_key(plan),
            parts=plan.parts,
            canonical=plan.definition.canonical,
            source=plan.definition.source,
            vertex_key=plan.vertex_key,
            snapshot=snapshot,
            image=image,
            selections=tuple(selections),
            images=tuple(plan.images),
            memoizable=trusted,
            outputs=stamps,
            steps=tuple(steps),
            metadata=metadata,
        )
        self.records.save(record)
        self.records.save_files(name, files_map(selections, self.hashers, self.engine.index))

    def _skipped(self, planner: Planner, plan: TargetPlan) -> dict[str, Any]:
        record = plan.record
        assert record is not None
        if not plan.proven and plan.name in planner.lowered:
            # proven the long way (lowered): refresh the facts so the next bake proves it fast
            selections, trusted = planner.facts(plan.name)
            record = dataclasses.replace(
                record, memo=planner.memo_key(plan), selections=tuple(selections), images=tuple(plan.images), memoizable=trusted
            )
            self.records.save(record)
        metadata = dict(record.metadata)
        metadata["shipyard.steps"] = [
            {"name": s["name"], "cached": True, "duration_s": 0.0, "cache_key": s.get("cache_key", ""), "cache_source": "target-key"}
            for s in record.metadata.get("shipyard.steps", [])
        ]
        metadata["shipyard.skipped"] = True
        return metadata


def build_waves(graph: TargetGraph, builds: list[str]) -> list[list[str]]:
    """The builds, split only where `needs` orders them: one solve per wave (one in all, without `needs`).

    A `needs` edge carries no data, so no vertex orders it: the target that needs
    another goes in a later wave, solved after the earlier one succeeded (its shared
    vertices are cache hits by then). Data edges stay inside a wave.
    """
    wave: dict[str, int] = {}
    for name in graph.order:
        if name not in builds:
            continue
        level = 0
        for dep in graph.needs.get(name, ()):
            if dep in wave:
                level = max(level, wave[dep] + 1)
        for dep in graph.references.get(name, ()):
            if dep in wave:
                level = max(level, wave[dep])
        wave[name] = level
    out: list[list[str]] = [[] for _ in range(max(wave.values(), default=-1) + 1)]
    for name in builds:
        out[wave[name]].append(name)
    return out


def _merged(first: SolveOutcome, second: SolveOutcome) -> SolveOutcome:
    """Two waves' outcomes as one; a vertex that ran in the first stays "executed"."""
    from engine.solver.solver import SolveOutcome

    states = dict(first.states)
    for digest, state in second.states.items():
        if digest not in states or not states[digest].executed:
            states[digest] = state
    return SolveOutcome(states, {**first.results, **second.results})


def _sub_outcome(outcome: SolveOutcome, target: Vertex) -> SolveOutcome:
    """The part of the one solve that one target's graph covers (for its cache export)."""
    from engine.graph.vertex import walk
    from engine.solver.solver import SolveOutcome

    digests = {v.digest for v in walk([target])}
    return SolveOutcome({d: s for d, s in outcome.states.items() if d in digests}, outcome.results)


def export_tree(engine: Engine, snapshot: int | None, dest: str, subpath: str = "/") -> None:
    """Copy `subpath` of a result (its contents, for a directory) into `dest`."""
    from engine.fs.copy import CopyOptions, copy_into
    from engine.fs.selection import select_sources

    os.makedirs(dest, exist_ok=True)
    with engine.snapshotter.view(snapshot) as root:
        selected = select_sources(root, subpath, allow_wildcard=False, follow_symlinks=True)
        copy_into(root, selected, dest, "/", CopyOptions(preserve_owner=True))


def export_tar(engine: Engine, snapshot: int | None, dest: str, subpath: str = "/") -> None:
    """Write `subpath` of a result as a tar file (sorted entries, numeric owners)."""
    import tarfile

    from engine.fs.safepath import resolve_in_root

    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    tmp = dest + ".tmp"
    with engine.snapshotter.view(snapshot) as root:
        base = resolve_in_root(root, subpath)
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            if os.path.isdir(base):
                for entry in sorted(os.listdir(base)):
                    tar.add(os.path.join(base, entry), arcname=entry, recursive=True)
            else:
                tar.add(base, arcname=os.path.basename(base))
    os.replace(tmp, dest)


def run_bake(bake: BakeFile, options: BakeOptions, engine: Engine, bus: EventBus) -> BakeResult:
    """Plan and build the targets `options.names` names (and what they depend on)."""
    return _Bake(bake, options, engine, bus).run()


def open_engine(root: Path, runtime: str = "auto", index: CacheIndex | None = None) -> Engine:
    from engine.solver.context import Engine

    return Engine.open(root, runtime=runtime, index=index)
