"""Target keys: everything a target's result depends on, as one sha256.

key(target) = H(its canonical resolved definition (`TargetSpec.to_canonical()`, what
`bake --print` shows), the Dockerfile text it lowers, its `.dockerignore` patterns,
the keys of the targets it reads, and the cache key of its result vertex). The
vertex key already covers the content of every file the target's COPYs select, the
pinned digest of every base image and every step (`engine.solver.keys`), so a changed
file, base image or upstream target always changes the key.

Computing the vertex key needs the lowered graph. The *memo* (`memo_key` plus the
facts a record keeps: context selections with their digests, base images with their
manifests) lets an unchanged target prove its key without lowering: when the memo
matches and every fact still holds, the recorded key is the key (`engine.buildmemo`'s
approach, per target).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import ShipyardError
from engine.graph.ops import CopyAction, ExecOp, FileOp, ImageSource, LocalSource
from engine.solver.keys import KeyParts, copy_sources_by_input, definition_parts

if TYPE_CHECKING:
    from cache.checksum import ContextHashers
    from engine.graph.vertex import Vertex
    from frontends.yaml.model import TargetSpec

KEY_VERSION = "shipyard.bake.v1"


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class Selection:
    """Paths a step reads from a local context, and their content digest when last read."""

    path: str
    sources: tuple[str, ...]
    follow: bool
    wildcard: bool
    excludes: tuple[str, ...]
    digest: str = ""

    def to_json(self) -> list[object]:
        return [self.path, list(self.sources), self.follow, self.wildcard, list(self.excludes), self.digest]

    @classmethod
    def from_json(cls, data: list) -> Selection:  # type: ignore[type-arg]
        path, sources, follow, wildcard, excludes, digest = data
        return cls(path, tuple(sources), bool(follow), bool(wildcard), tuple(excludes), digest)


@dataclass(frozen=True)
class TargetDefinition:
    """The parts of a target's key known before lowering."""

    canonical: str
    """`TargetSpec.to_canonical()` as sorted JSON."""
    source: str
    """The Dockerfile text (rendered steps for inline steps)."""
    ignore: tuple[str, ...]
    upstream: tuple[tuple[str, str], ...]
    """(target, key) of every target it reads."""

    def memo_key(self, engine_fingerprint: str) -> str:
        """What a record's facts are valid for (the engine's code included)."""
        return _sha(json.dumps([KEY_VERSION, engine_fingerprint, self.canonical, self.source, list(self.ignore), self.upstream]))

    def parts(self, vertex_key: str) -> tuple[tuple[str, str], ...]:
        """The labelled ingredients of the target key, in the order `--explain` reports them."""
        return (
            ("definition", _sha(self.canonical)),
            ("dockerfile", _sha(self.source)),
            ("ignore", _sha("\n".join(self.ignore))),
            *((f"upstream {name}", key) for name, key in self.upstream),
            ("graph", vertex_key),
        )


def canonical_json(spec: TargetSpec) -> str:
    return json.dumps(spec.to_canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def target_key(parts: tuple[tuple[str, str], ...]) -> str:
    return _sha(json.dumps([KEY_VERSION, [list(p) for p in parts]], separators=(",", ":")))


class VertexKeys:
    """Cache keys (with their parts) of lowered vertices, computed as the solver will.

    Shared across targets: a vertex that ten targets reach is keyed once. The context
    hashers are the solver's too, so the solve that follows re-reads nothing.
    """

    def __init__(self, hashers: ContextHashers) -> None:
        self.hashers = hashers
        self.parts: dict[str, KeyParts | None] = {}
        self.keys: dict[str, str | None] = {}

    def _local_digest(self, vertex: Vertex, actions: list[CopyAction]) -> str:
        source = vertex.op
        assert isinstance(source, LocalSource)
        hasher = self.hashers.get(source.path, source.exclude_patterns)
        return "|".join(
            hasher.digest_selection(a.src, follow_symlinks=a.follow_symlinks, allow_wildcard=a.allow_wildcard) for a in actions
        )

    def key_of(self, target: Vertex) -> str:
        from engine.graph.vertex import walk

        for vertex in walk([target]):
            if vertex.digest in self.keys:
                continue
            input_keys = [self.keys[i.digest] for i in vertex.inputs]
            parts = definition_parts(vertex, input_keys, self._local_digest)
            self.parts[vertex.digest] = parts
            self.keys[vertex.digest] = parts.key() if parts else None
        return self.keys[target.digest] or ""


def selections_of(vertices: Iterable[Vertex]) -> list[Selection]:
    """Every local-context read of these vertices (what their keys' content parts cover)."""
    out: dict[tuple, Selection] = {}  # type: ignore[type-arg]
    for vertex in vertices:
        op = vertex.op
        if isinstance(op, FileOp):
            copies = copy_sources_by_input(op)
            for index, child in enumerate(vertex.inputs):
                if isinstance(child.op, LocalSource):
                    for a in copies.get(index, []):
                        sel = Selection(child.op.path, a.src, a.follow_symlinks, a.allow_wildcard, tuple(child.op.exclude_patterns))
                        out.setdefault((sel.path, sel.sources, sel.follow, sel.wildcard, sel.excludes), sel)
        elif isinstance(op, ExecOp):
            for index, child in enumerate(vertex.inputs):
                if isinstance(child.op, LocalSource):
                    selectors = tuple(dict.fromkeys(m.selector for m in op.mounts if m.input == index))
                    sel = Selection(child.op.path, selectors, True, False, tuple(child.op.exclude_patterns))
                    out.setdefault((sel.path, sel.sources, sel.follow, sel.wildcard, sel.excludes), sel)
    return list(out.values())


def with_digests(selections: list[Selection], hashers: ContextHashers) -> list[Selection]:
    out = []
    for sel in selections:
        digest = hashers.get(sel.path, sel.excludes).digest_selection(
            sel.sources, follow_symlinks=sel.follow, allow_wildcard=sel.wildcard
        )
        out.append(Selection(sel.path, sel.sources, sel.follow, sel.wildcard, sel.excludes, digest))
    return out


def selections_hold(selections: Iterable[Selection], hashers: ContextHashers) -> bool:
    """Whether every selection still has its recorded digest (stat walks; reads only changed files)."""
    try:
        for sel in selections:
            hasher = hashers.get(sel.path, sel.excludes)
            if hasher.digest_selection(sel.sources, follow_symlinks=sel.follow, allow_wildcard=sel.wildcard) != sel.digest:
                return False
    except (ShipyardError, OSError):  # a vanished path, an unreadable file: lowering will report it properly
        return False
    return True


def memoizable(target: Vertex) -> bool:
    """False when the graph reads something that can change with nothing local changing
    (an unpinned URL or branch, an OCI layout on disk): its record is then never trusted."""
    from engine.graph.vertex import walk
    from engine.solver.sources import remote_sources_pinned

    if not remote_sources_pinned(target):
        return False
    return not any(isinstance(v.op, ImageSource) and v.op.ref.startswith("oci-layout://") for v in walk([target]))
