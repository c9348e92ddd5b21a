"""Per target: prove its key, decide skip or build, and lower what must be built.

Targets are planned in dependency order, so a target's upstream keys are known when
its own key is computed. A target whose record's memo matches (same definition, same
upstream keys, same engine) and whose recorded facts still hold (the context
selections hash the same, the base images name the same manifests) keeps its
recorded key without being lowered: a no-op bake parses no Dockerfile and resolves
no image. Any other target is lowered into the shared graph and its key computed from
the vertex keys (`engine.bake.keys.VertexKeys`, the solver's own key function).

A target builds when its key changed, or when its key is the same but its outputs
are gone (an image removed, an output directory wiped); with `--affected`, only when
its key changed (its dependents' keys change with it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.bake.graph import TargetGraph
from engine.bake.keys import (
    Selection,
    TargetDefinition,
    VertexKeys,
    canonical_json,
    memoizable,
    selections_hold,
    selections_of,
    target_key,
    with_digests,
)
from engine.bake.records import RecordStore, TargetRecord, images_hold, missing_output
from frontends.yaml.model import BakeFile, TargetSpec

if TYPE_CHECKING:
    from cache.checksum import ContextHashers
    from engine.graph.vertex import Vertex
    from engine.progress.events import EventBus
    from engine.solver.context import Engine
    from frontends.yaml.lowering import LoweredTarget


@dataclass
class TargetPlan:
    name: str
    spec: TargetSpec
    definition: TargetDefinition
    record: TargetRecord | None
    key: str = ""
    parts: tuple[tuple[str, str], ...] = ()
    vertex_key: str = ""
    proven: bool = False
    """The key came from the record's memo (the target was not lowered to get it)."""
    changed: bool = True
    missing: str = ""
    """Why the recorded outputs no longer stand ("" when they do, or when the key changed)."""
    build: bool = True
    forced: str = ""
    """Why the target builds whatever its key says (`--no-cache`)."""
    images: list[tuple[str, str, str]] = field(default_factory=list)
    """Base images resolved while lowering (facts for the record)."""
    memo_ok: bool = True
    """False when a base image was resolved in a way a record cannot re-check."""


class Planner:
    def __init__(
        self,
        bake: BakeFile,
        graph: TargetGraph,
        engine: Engine,
        hashers: ContextHashers,
        records: RecordStore,
        *,
        cwd: str,
        no_cache: bool = False,
        affected: bool = False,
        push: bool = False,
        bus: EventBus | None = None,
        engine_fingerprint: str | None = None,
    ) -> None:
        self.bake = bake
        self.graph = graph
        self.engine = engine
        self.hashers = hashers
        self.records = records
        self.cwd = cwd
        self.no_cache = no_cache
        self.affected = affected
        self.push = push
        self.bus = bus
        self.vertex_keys = VertexKeys(hashers)
        self.plans: dict[str, TargetPlan] = {}
        self.lowered: dict[str, LoweredTarget] = {}
        self._resolver = None
        self._sink: TargetPlan | None = None
        if engine_fingerprint is None:
            from engine.buildmemo import engine_fingerprint as fingerprint

            engine_fingerprint = fingerprint()
        self._fingerprint = engine_fingerprint

    # ------------------------------------------------------------------ planning

    def plan(self) -> dict[str, TargetPlan]:
        for name in self.graph.order:
            self._plan(name)
        return self.plans

    def _definition(self, spec: TargetSpec) -> TargetDefinition:
        from frontends.yaml.lowering import dockerfile_text, ignore_file_of

        upstream = tuple((ref, self.plans[ref].key) for ref in self.graph.references.get(spec.name, ()))
        return TargetDefinition(
            canonical_json(spec),
            dockerfile_text(spec, self.cwd),
            tuple(ignore_file_of(spec, self.cwd).patterns),
            upstream,
        )

    def _plan(self, name: str) -> TargetPlan:
        spec = self.bake.targets[name]
        definition = self._definition(spec)
        record = self.records.load(name)
        plan = TargetPlan(name, spec, definition, record)
        self.plans[name] = plan
        if self._proven(plan):
            assert record is not None
            plan.key, plan.parts, plan.vertex_key, plan.proven = record.key, record.parts, record.vertex_key, True
        else:
            lowered = self.lower(name)
            plan.vertex_key = self.vertex_keys.key_of(lowered.vertex)
            plan.parts = definition.parts(plan.vertex_key)
            plan.key = target_key(plan.parts)
        plan.changed = record is None or record.key != plan.key
        if not plan.changed:
            assert record is not None
            plan.missing = missing_output(record, self.engine.index) or self._unpushed(spec, record)
        if self.no_cache:
            plan.build, plan.forced = True, "--no-cache"
        elif spec.no_cache:
            plan.build, plan.forced = True, "no_cache: true"
        elif self.affected:
            plan.build = plan.changed
        else:
            plan.build = plan.changed or bool(plan.missing)
        return plan

    def _unpushed(self, spec: TargetSpec, record: TargetRecord) -> str:
        """With `--push`, an image target whose tags were not pushed by the recorded build."""
        if not self.push or spec.result or not spec.tags:
            return ""
        from engine.reference import parse_reference

        pushed = {s.ref for s in record.outputs if s.kind == "registry"}
        for tag in spec.tags:
            name = str(parse_reference(tag))
            if name not in pushed:
                return f"{name} has not been pushed"
        return ""

    def _proven(self, plan: TargetPlan) -> bool:
        record = plan.record
        return bool(
            not self.no_cache
            and record is not None
            and record.memoizable
            and record.memo == plan.definition.memo_key(self._fingerprint)
            and images_hold(record.images, self.engine.index)
            and selections_hold(record.selections, self.hashers)
        )

    def memo_key(self, plan: TargetPlan) -> str:
        return plan.definition.memo_key(self._fingerprint)

    # ------------------------------------------------------------------ lowering

    def _resolver_for_build(self):  # type: ignore[no-untyped-def]
        if self._resolver is None:
            from engine.images import ImageStore
            from engine.solver.sources import BuildResolver, RemoteSources

            store = ImageStore(self.engine, on_resolve=self._on_resolve, events=self.bus, pull=True)
            self._resolver = BuildResolver(store, RemoteSources(self.engine))
        return self._resolver

    def _on_resolve(self, ref: str, normalized: str, manifest: str, by_name: bool) -> None:
        plan = self._sink
        if plan is None:
            return
        if by_name:
            plan.images.append(("name", normalized, manifest))
        elif "@sha256:" in ref:
            plan.images.append(("digest", ref, manifest))
        else:
            plan.memo_ok = False  # an image ID, or a tag tracked in a registry: re-resolved every time

    def lower(self, name: str) -> LoweredTarget:
        """Lower `name` (and, first, every target it reads) into the shared graph."""
        found = self.lowered.get(name)
        if found is not None:
            return found
        from frontends.yaml.lowering import lower_target

        upstream = {ref: self.lower(ref) for ref in self.graph.references.get(name, ())}
        plan = self.plans.get(name)
        previous, self._sink = self._sink, plan
        try:
            lowered = lower_target(self.bake.targets[name], self._resolver_for_build(), upstream, cwd=self.cwd)
        finally:
            self._sink = previous
        self.lowered[name] = lowered
        return lowered

    def vertex_name(self, vertex: Vertex) -> str:
        for lowered in self.lowered.values():
            metas = lowered.meta.get(vertex.digest)
            if metas:
                return metas[0].name
        return ""

    def own_vertices(self, name: str) -> list[Vertex]:
        """The vertices of `name`'s graph that no target it reads already has."""
        from engine.graph.vertex import walk

        lowered = self.lower(name)
        upstream = [self.lower(ref).vertex for ref in self.graph.references.get(name, ())]
        theirs = {v.digest for v in walk(upstream)} if upstream else set()
        return [v for v in walk([lowered.vertex]) if v.digest not in theirs]

    def facts(self, name: str) -> tuple[list[Selection], bool]:
        """The context selections (with digests) a record of `name` must re-check, and
        whether a record may be trusted at all."""
        plan = self.plans[name]
        lowered = self.lower(name)
        selections = with_digests(selections_of(self.own_vertices(name)), self.hashers)
        return selections, plan.memo_ok and memoizable(lowered.vertex)


def shown_path(path: str, cwd: str) -> str:
    rel = os.path.relpath(path, cwd)
    return path if rel.startswith("..") else rel
