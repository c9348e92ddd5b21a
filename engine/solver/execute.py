"""Executing one vertex: dispatch by op type.

Sources resolve to results here; `ExecOp` runs in `exec_op`, `FileOp` in `file_op`,
and a merge splices layer chains. Each executor prepares a writable root over its
base snapshot, does its work, and commits — or aborts on any error, so a failed or
cancelled step leaves no layer and no mount behind.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from engine.errors import ContextError, ImageNotFoundError
from engine.graph.ops import ExecOp, FileOp, GitSource, HttpSource, ImageSource, LocalSource, MergeOp, ScratchSource
from engine.graph.vertex import Vertex
from engine.solver.context import Engine
from engine.solver.results import EMPTY, OutputSink, Result
from engine.solver.session import BuildSession

if TYPE_CHECKING:
    from engine.fs.selection import ContextFilter

__all__ = ["EMPTY", "Result", "context_filters", "run_vertex", "source_result"]


def source_result(engine: Engine, vertex: Vertex) -> Result:
    op = vertex.op
    match op:
        case ScratchSource():
            return EMPTY
        case LocalSource(path=path):
            if not os.path.isdir(path):
                raise ContextError(f"build context {path} is not a directory")
            return Result(None, context_path=path)
        case ImageSource(ref=ref, manifest_digest=digest):
            rows = engine.index.images_by_manifest(digest)
            for row in rows:
                if row.snapshot is not None:
                    return Result(row.snapshot, row.created)
            raise ImageNotFoundError(f"image {ref} ({digest}) is not unpacked in the local store")
        case HttpSource() | GitSource():
            from engine.solver.sources import RemoteSources

            return Result(RemoteSources(engine).snapshot(op))
    raise TypeError(f"not a source op: {op!r}")


def run_vertex(
    engine: Engine,
    vertex: Vertex,
    inputs: list[Result],
    *,
    name: str,
    on_output: OutputSink,
    cancel: threading.Event,
    session: BuildSession,
) -> int | None:
    """Execute a non-source vertex; returns the new snapshot id."""
    op = vertex.op
    match op:
        case ExecOp():
            from engine.solver.exec_op import run_exec

            return run_exec(
                engine,
                op,
                inputs,
                name=name,
                on_output=on_output,
                cancel=cancel,
                session=session,
                context_filters=context_filters(vertex),
            )
        case FileOp():
            from engine.solver.file_op import run_file

            return run_file(engine, op, inputs, context_filters(vertex))
        case MergeOp():
            return _run_merge(engine, inputs)
    raise TypeError(f"cannot execute {op!r}")


def _run_merge(engine: Engine, inputs: list[Result]) -> int | None:
    """Stack the inputs' layer chains without copying: new snapshot rows, shared layers."""
    current: int | None = None
    for result in inputs:
        for row in engine.index.chain(result.snapshot):
            current = engine.index.splice_snapshot(current, row.layer.id)
    return current


def context_filters(vertex: Vertex) -> "dict[int, ContextFilter]":
    """`.dockerignore` filters of the vertex's local-context inputs, by input index.

    A context's exclude patterns live on its `LocalSource`; copies from it must not
    see what they exclude (`engine.fs.selection.ContextFilter`).
    """
    filters: dict[int, ContextFilter] = {}
    for index, child in enumerate(vertex.inputs):
        op = child.op
        if isinstance(op, LocalSource) and op.exclude_patterns:
            from engine.fs.selection import ContextFilter

            label = getattr(op.exclude_patterns, "source", "") or ".dockerignore"
            filters[index] = ContextFilter(op.exclude_patterns, label)
    return filters
