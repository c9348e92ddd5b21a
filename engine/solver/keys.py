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
    GitSource,
    HttpSource,
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
        case HttpSource():
            # BuildKit's formatCacheKey: the content, its name, mode and Last-Modified — not the URL.
            return json.dumps(["http", op.filename, op.perm, op.digest or op.checksum, op.last_modified])
        case GitSource():
            # BuildKit's shaToCacheKey: the commit, `.git` kept or not, the subdir — not the remote.
            return json.dumps(["git", op.commit or op.ref, op.keep_git_dir, op.subdir])
    return json.dumps(canonical(op), separators=(",", ":"))


def copy_sources_by_input(op: FileOp) -> dict[int, list[CopyAction]]:
    out: dict[int, list[CopyAction]] = {}
    for action in op.actions:
        if isinstance(action, CopyAction):
            out.setdefault(action.source, []).append(action)
    return out


def bind_sources_by_input(op: ExecOp) -> dict[int, list[CopyAction]]:
    """The paths a RUN's bind mounts read, per input, for inputs nothing else uses.

    Like BuildKit, a bind mount keys on the content it shows (so a rebuilt stage with
    the same files still hits); an input that is also the root or seeds a cache
    mount keys on its definition only.
    """
    binds: dict[int, list[str]] = {}
    other: set[int] = set()
    for mount in op.mounts:
        if mount.input < 0:
            continue
        if mount.type == "bind" and mount.target != "/":
            binds.setdefault(mount.input, []).append(mount.selector)
        else:
            other.add(mount.input)
    return {
        index: [CopyAction(index, tuple(dict.fromkeys(selectors)), "/", allow_wildcard=False)]
        for index, selectors in binds.items()
        if index not in other
    }


def selector_of(actions: list[CopyAction]) -> str:
    """The paths (and the rules for reading them) that a copy takes from one input."""
    return json.dumps(
        [[list(a.src), a.follow_symlinks, a.allow_wildcard, list(a.include_patterns), list(a.exclude_patterns)] for a in actions],
        separators=(",", ":"),
    )


def _visible_part(source: LocalSource, actions: list[CopyAction]) -> str:
    """With `.dockerignore` patterns: which top-level entries each copy source selects.

    A copy of an excluded path must fail, and one whose wildcard now matches fewer
    entries must miss, even when the content digest (taken over the paths as named)
    did not change. Costs a selection (stats only); raises "not found (excluded by …)".
    """
    if not source.exclude_patterns or not actions:
        return ""
    from engine.fs.selection import ContextFilter, select_sources

    label = getattr(source.exclude_patterns, "source", "") or ".dockerignore"
    flt = ContextFilter(source.exclude_patterns, label)
    names = [
        [sel.rel for sel in select_sources(source.path, src, allow_wildcard=a.allow_wildcard, follow_symlinks=a.follow_symlinks, context_filter=flt)]
        for a in actions
        for src in a.src
    ]
    return "|visible:" + hashlib.sha256(json.dumps(names).encode()).hexdigest()


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
                parts.append((f"input {index} content", local_digest(child, actions) + _visible_part(child.op, actions)))
            else:
                sel = selector_of(copies[index]) if index in copies else ""
                parts.append((f"input {index}", f"{input_keys[index]}{'|' + sel if sel else ''}"))
    elif isinstance(op, ExecOp):
        for index, child in enumerate(vertex.inputs):
            if isinstance(child.op, LocalSource):
                selectors = tuple(dict.fromkeys(m.selector for m in op.mounts if m.input == index))
                read = CopyAction(index, selectors, "/", allow_wildcard=False)
                parts.append((f"input {index} content", local_digest(child, [read])))
            else:
                parts.append((f"input {index}", str(input_keys[index])))
    elif isinstance(op, MergeOp):
        parts = [(f"input {i}", str(k)) for i, k in enumerate(input_keys)]
    return KeyParts(_op_payload(op), tuple(parts))


def content_parts(definition: KeyParts, vertex: Vertex, checksum: Callable[[int, list[CopyAction]], str]) -> KeyParts | None:
    """The content-based variant of a copy's key, or None when it has no stage sources."""
    op = vertex.op
    if isinstance(op, FileOp):
        copies = copy_sources_by_input(op)
    elif isinstance(op, ExecOp):
        copies = bind_sources_by_input(op)
    else:
        return None
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


def source_key(op: Op) -> str:
    """The cache key of a source op that has one (what `definition_parts` gives it)."""
    return KeyParts(_op_payload(op), ()).key()
