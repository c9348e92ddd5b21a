"""Cache keys: what a step's result depends on, and nothing else.

key(vertex) = sha256(op fields that matter, [one part per input]). An input part is
the input's own key — or, for a copy source that is a local context, the content
digest of exactly the selected paths. Keys are sha256 because they persist and may
travel (remote caches); vertex digests (xxh3) never leave a build.

Each key keeps its parts (`KeyParts`), so a miss can be explained: the part that
differs from the last build of the same step names what changed.

A second, content-based key exists for copies from another stage: once the source
stage's result is known, its selected paths are checksummed and the copy keys on that
content, so a rebuilt stage that produced the same files still hits (BuildKit's
"slow" cache key).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Callable

from engine.graph.ops import (
    CopyAction,
    ExecOp,
    FileOp,
    ImageSource,
    LocalSource,
    MergeOp,
    Op,
    ScratchSource,
    canonical,
)
from engine.graph.vertex import Vertex

KEY_VERSION = "shipyard.v1"


@dataclass(frozen=True)
class KeyParts:
    """The ingredients of one key, labelled, for explaining a miss."""

    op: str
    inputs: tuple[tuple[str, str], ...]

    def key(self) -> str:
        payload = json.dumps([KEY_VERSION, self.op, [list(p) for p in self.inputs]], separators=(",", ":"))
        return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


def _op_payload(op: Op) -> str:
    """The op's fields that affect its result (proxy settings and paths of contexts do not)."""
    match op:
        case ExecOp():
            op = replace(op, proxy_env=())
        case ImageSource():
            return json.dumps(["image", op.manifest_digest, op.platform])
    return json.dumps(canonical(op), separators=(",", ":"))


def copy_sources_by_input(op: FileOp) -> dict[int, list[CopyAction]]:
    out: dict[int, list[CopyAction]] = {}
    for action in op.actions:
        if isinstance(action, CopyAction):
            out.setdefault(action.source, []).append(action)
    return out


def selector_of(actions: list[CopyAction]) -> str:
    """The paths (and the rules for reading them) that a copy takes from one input."""
    return json.dumps(
        [[list(a.src), a.follow_symlinks, a.allow_wildcard, list(a.include_patterns), list(a.exclude_patterns)] for a in actions],
        separators=(",", ":"),
    )


ContentDigest = Callable[[Vertex, list[CopyAction]], str]
"""Digest of what `actions` select from a local-context vertex."""


def definition_parts(vertex: Vertex, input_keys: list[str | None], local_digest: ContentDigest) -> KeyParts | None:
    """Key parts from the definition; None for vertices that have no key (local contexts)."""
    op = vertex.op
    if isinstance(op, LocalSource):
        return None
    if isinstance(op, ScratchSource):
        return KeyParts("scratch", ())
    parts: list[tuple[str, str]] = []
    if isinstance(op, FileOp):
        copies = copy_sources_by_input(op)
        for index, child in enumerate(vertex.inputs):
            if isinstance(child.op, LocalSource):
                actions = copies.get(index, [])
                parts.append((f"input {index} content", local_digest(child, actions)))
            else:
                sel = selector_of(copies[index]) if index in copies else ""
                parts.append((f"input {index}", f"{input_keys[index]}{'|' + sel if sel else ''}"))
    elif isinstance(op, ExecOp):
        for index, child in enumerate(vertex.inputs):
            if isinstance(child.op, LocalSource):
                selectors = [m.selector for m in op.mounts if m.input == index]
                parts.append((f"input {index} content", local_digest(child, [CopyAction(index, tuple(selectors), "/")])))
            else:
                parts.append((f"input {index}", str(input_keys[index])))
    elif isinstance(op, MergeOp):
        parts = [(f"input {i}", str(k)) for i, k in enumerate(input_keys)]
    return KeyParts(_op_payload(op), tuple(parts))


def content_parts(definition: KeyParts, vertex: Vertex, checksum: Callable[[int, list[CopyAction]], str]) -> KeyParts | None:
    """The content-based variant of a copy's key, or None when it has no stage sources."""
    op = vertex.op
    if not isinstance(op, FileOp):
        return None
    copies = copy_sources_by_input(op)
    stage_inputs = [i for i in copies if not isinstance(vertex.inputs[i].op, (LocalSource, ScratchSource))]
    if not stage_inputs:
        return None
    parts = list(definition.inputs)
    for i, (label, _) in enumerate(parts):
        index = int(label.split()[1])
        if index in stage_inputs:
            parts[i] = (f"input {index} content", checksum(index, copies[index]))
    return KeyParts(definition.op, tuple(parts))


def explain(previous: KeyParts | None, current: KeyParts) -> str:
    """One line saying which ingredient of a key changed since the previous build."""
    if previous is None:
        return "no previous build of this step"
    if previous.op != current.op:
        return "the instruction or its settings changed"
    before = dict(previous.inputs)
    for label, value in current.inputs:
        if before.get(label) != value:
            if label.endswith("content"):
                return f"the files it reads changed ({label})"
            return f"an earlier step changed ({label})"
    return "the result was no longer in the cache"
