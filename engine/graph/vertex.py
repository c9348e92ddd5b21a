"""Vertices: an op plus its input vertices, identified by a Merkle digest.

The digest is xxh3-128 over a canonical serialization of the op and the digests of
its inputs, so equal definitions are equal vertices: a builder interns them and the
solver runs each once per build however many stages or targets share it.
xxh3 is fine here because a digest only identifies vertices inside one build; cache
keys that persist or travel are sha256 (`engine.solver.keys`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import xxhash

from engine.errors import GraphError
from engine.graph.ops import ExecOp, FileOp, MergeOp, Op, VertexMeta, canonical


def op_bytes(op: Op) -> bytes:
    return json.dumps(canonical(op), separators=(",", ":"), sort_keys=False).encode()


def vertex_digest(op: Op, inputs: Iterable["Vertex"]) -> str:
    h = xxhash.xxh3_128()
    h.update(op_bytes(op))
    for child in inputs:
        h.update(b"\0")
        h.update(child.digest.encode())
    return "xxh3:" + h.hexdigest()


@dataclass(frozen=True, eq=False)
class Vertex:
    """One node of the graph. Equality and hashing go by digest."""

    op: Op
    inputs: tuple["Vertex", ...] = ()
    digest: str = field(default="")

    def __post_init__(self) -> None:
        _check_input_indexes(self.op, len(self.inputs))
        if not self.digest:
            object.__setattr__(self, "digest", vertex_digest(self.op, self.inputs))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vertex) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return f"Vertex({type(self.op).__name__}, {self.digest[5:17]})"


def _check_input_indexes(op: Op, count: int) -> None:
    used: list[int] = []
    match op:
        case ExecOp(mounts=mounts):
            used = [m.input for m in mounts]
        case FileOp(base=base, actions=actions):
            used = [base] + [a.source for a in actions if hasattr(a, "source")]
        case MergeOp():
            if count < 1:
                raise GraphError("a merge needs at least one input")
    for index in used:
        if index >= count:
            raise GraphError(f"{type(op).__name__} refers to input {index} of {count}")


class GraphBuilder:
    """Interns vertices by digest and collects their metadata.

    Several metadata entries may point at one vertex (the same RUN in two stages);
    the first becomes the vertex's display name.
    """

    def __init__(self) -> None:
        self._vertices: dict[str, Vertex] = {}
        self.meta: dict[str, list[VertexMeta]] = {}

    def add(self, op: Op, inputs: Iterable[Vertex] = (), meta: VertexMeta | None = None) -> Vertex:
        vertex = Vertex(op, tuple(inputs))
        vertex = self._vertices.setdefault(vertex.digest, vertex)
        if meta is not None:
            self.meta.setdefault(vertex.digest, []).append(meta)
        return vertex

    def name_of(self, vertex: Vertex) -> str:
        metas = self.meta.get(vertex.digest)
        return metas[0].name if metas else type(vertex.op).__name__


def walk(targets: Iterable[Vertex]) -> Iterator[Vertex]:
    """Every vertex reachable from `targets`, inputs before the vertices using them."""
    seen: set[str] = set()
    order: list[Vertex] = []
    stack: list[tuple[Vertex, bool]] = [(t, False) for t in reversed(list(targets))]
    while stack:
        vertex, expanded = stack.pop()
        if expanded:
            order.append(vertex)
            continue
        if vertex.digest in seen:
            continue
        seen.add(vertex.digest)
        stack.append((vertex, True))
        for child in reversed(vertex.inputs):
            if child.digest not in seen:
                stack.append((child, False))
    return iter(order)
