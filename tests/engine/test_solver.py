"""The solver on graphs built by hand: merges, dedup by key, laziness, errors — no frontend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.errors import BuildStepError, ContextError
from engine.graph.ops import CopyAction, FileOp, LocalSource, MergeOp, MkdirAction, MkfileAction, RmAction, ScratchSource, VertexMeta
from engine.graph.vertex import GraphBuilder, Vertex
from engine.progress.events import EventBus, VertexCached, VertexStarted
from engine.solver.context import Engine
from engine.solver.solver import Solver


@pytest.fixture(params=["overlay", "copy"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    return Engine.open(tmp_path / "state", snapshotter=request.param)


def _solve(engine: Engine, target: Vertex, builder: GraphBuilder | None = None, **kw):  # type: ignore[no-untyped-def]
    events: list = []
    bus = EventBus()
    bus.subscribe(events.append)
    outcome = Solver(engine, bus, builder.meta if builder else {}, **kw).solve([target])
    return outcome, events


def _tree(engine: Engine, snapshot: int | None) -> dict[str, str]:
    out = {}
    with engine.snapshotter.view(snapshot) as root:
        for current, dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(current, name)
                out[os.path.relpath(path, root)] = open(path).read()
    return out


def test_merge_stacks_independent_layers_without_copying(engine: Engine) -> None:
    scratch = Vertex(ScratchSource())
    a = Vertex(FileOp((MkdirAction("/etc"), MkfileAction("/etc/a", b"a"), MkfileAction("/shared", b"from a"))), (scratch,))
    b = Vertex(FileOp((MkfileAction("/b", b"b"), MkfileAction("/shared", b"from b"))), (scratch,))
    merged = Vertex(MergeOp(), (a, b))
    outcome, _ = _solve(engine, merged)
    result = outcome.results[merged.digest]
    assert _tree(engine, result.snapshot) == {"etc/a": "a", "b": "b", "shared": "from b"}
    chain = engine.index.chain(result.snapshot)
    layer_of = lambda v: engine.index.chain(outcome.results[v.digest].snapshot)[-1].layer.id  # noqa: E731
    assert [row.layer.id for row in chain] == [layer_of(a), layer_of(b)]  # the same layers, reused


def test_rm_in_a_later_layer_hides_the_file(engine: Engine) -> None:
    scratch = Vertex(ScratchSource())
    base = Vertex(FileOp((MkfileAction("/keep", b"k"), MkfileAction("/drop", b"d"))), (scratch,))
    top = Vertex(FileOp((RmAction("/drop"),)), (base,))
    outcome, _ = _solve(engine, top)
    assert _tree(engine, outcome.results[top.digest].snapshot) == {"keep": "k"}


def test_second_solve_is_all_cached_and_touches_nothing(engine: Engine, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src" / "x").write_text("x")
    g = GraphBuilder()
    local = g.add(LocalSource("context", str(ctx)))
    base = g.add(FileOp((MkdirAction("/app"),)), [g.add(ScratchSource())], VertexMeta("mkdir"))
    copy = g.add(FileOp((CopyAction(1, ("/src",), "/app/"),)), [base, local], VertexMeta("copy"))
    _solve(engine, copy, g)
    outcome, events = _solve(engine, copy, g)
    assert not [e for e in events if isinstance(e, VertexStarted)]
    assert {e.name for e in events if isinstance(e, VertexCached)} >= {"mkdir", "copy"}
    assert _tree(engine, outcome.results[copy.digest].snapshot) == {"app/x": "x"}


def test_missing_copy_source_names_the_step(engine: Engine, tmp_path: Path) -> None:
    g = GraphBuilder()
    local = g.add(LocalSource("context", str(tmp_path)))
    copy = g.add(
        FileOp((CopyAction(1, ("/nope",), "/x"),)),
        [g.add(ScratchSource()), local],
        VertexMeta("[2/2] COPY nope /x", "Dockerfile:2"),
    )
    with pytest.raises((BuildStepError, ContextError)) as info:
        _solve(engine, copy, g)
    message = str(info.value)
    assert "Dockerfile:2" in message and '"/nope": not found' in message
