"""Vertex digests and cache keys: what changes them and what must not."""

from __future__ import annotations

import pytest

from engine.errors import GraphError
from engine.graph.ops import CopyAction, ExecOp, FileOp, ImageSource, LocalSource, MergeOp, MkdirAction, ScratchSource
from engine.graph.vertex import GraphBuilder, Vertex, walk
from engine.solver.keys import KeyParts, content_parts, definition_parts, explain

IMAGE = ImageSource("docker.io/library/busybox:local", "sha256:" + "a" * 64)


def _run(cmd: str, base: Vertex, **kw) -> Vertex:
    return Vertex(ExecOp(args=("/bin/sh", "-c", cmd), **kw), (base,))


def test_equal_definitions_are_one_vertex_and_digest_is_stable() -> None:
    base = Vertex(IMAGE)
    a = _run("echo hi", base)
    b = _run("echo hi", Vertex(IMAGE))
    assert a == b and a.digest == b.digest and hash(a) == hash(b)
    assert a.digest.startswith("xxh3:") and len(a.digest) == 5 + 32
    assert a.digest == _run("echo hi", base).digest  # recomputed, same value
    assert _run("echo ho", base).digest != a.digest
    assert _run("echo hi", base, env=("A=1",)).digest != a.digest


def test_digest_covers_inputs_merkle_style() -> None:
    other_base = Vertex(ImageSource("docker.io/library/busybox:local", "sha256:" + "b" * 64))
    assert _run("echo hi", Vertex(IMAGE)).digest != _run("echo hi", other_base).digest


def test_builder_interns_vertices_and_keeps_every_name() -> None:
    g = GraphBuilder()
    from engine.graph.ops import VertexMeta

    base = g.add(IMAGE)
    first = g.add(ExecOp(args=("true",)), [base], VertexMeta("[a 2/2] RUN true"))
    second = g.add(ExecOp(args=("true",)), [base], VertexMeta("[b 2/2] RUN true"))
    assert first is second
    assert [m.name for m in g.meta[first.digest]] == ["[a 2/2] RUN true", "[b 2/2] RUN true"]
    assert g.name_of(first) == "[a 2/2] RUN true"


def test_walk_gives_inputs_first_and_each_vertex_once() -> None:
    base = Vertex(IMAGE)
    left, right = _run("l", base), _run("r", base)
    top = Vertex(MergeOp(), (left, right))
    order = list(walk([top]))
    assert order.index(base) < order.index(left) < order.index(top)
    assert order.index(right) < order.index(top)
    assert len(order) == 4


def test_bad_input_index_is_a_graph_error() -> None:
    with pytest.raises(GraphError):
        Vertex(FileOp((CopyAction(source=3, src=("/a",), dest="/b"),)), (Vertex(ScratchSource()),))


def _keys(vertex: Vertex, local: str = "sha256:ctx") -> dict[str, str | None]:
    keys: dict[str, str | None] = {}
    for v in walk([vertex]):
        parts = definition_parts(v, [keys[i.digest] for i in v.inputs], lambda _v, _a: local)
        keys[v.digest] = parts.key() if parts else None
    return keys


def test_copy_from_context_keys_on_selected_content_not_on_the_context_path() -> None:
    base = Vertex(IMAGE)
    copy = lambda ctx: Vertex(FileOp((CopyAction(1, ("/app",), "/app/"),)), (base, Vertex(LocalSource("context", ctx))))
    one, two = copy("/home/a/project"), copy("/srv/ci/checkout")
    assert one.digest != two.digest  # different vertices ...
    assert _keys(one)[one.digest] == _keys(two)[two.digest]  # ... same cache key
    assert _keys(one, "sha256:other")[one.digest] != _keys(one)[one.digest]


def test_proxy_env_never_changes_a_key() -> None:
    base = Vertex(IMAGE)
    plain = _run("wget x", base)
    proxied = _run("wget x", base, proxy_env=("HTTP_PROXY=http://proxy:3128",))
    assert plain.digest != proxied.digest
    assert _keys(plain)[plain.digest] == _keys(proxied)[proxied.digest]


def test_image_source_keys_on_manifest_digest_not_the_name() -> None:
    a = Vertex(ImageSource("docker.io/library/busybox:local", "sha256:" + "a" * 64))
    b = Vertex(ImageSource("docker.io/library/busybox@sha256:" + "a" * 64, "sha256:" + "a" * 64))
    assert _keys(a)[a.digest] == _keys(b)[b.digest]


def test_content_key_of_a_copy_from_another_stage() -> None:
    base = Vertex(IMAGE)
    builder = _run("make", base)
    copy = Vertex(FileOp((CopyAction(1, ("/out/app",), "/app"),)), (base, builder))
    keys = _keys(copy)
    parts = definition_parts(copy, [keys[base.digest], keys[builder.digest]], lambda _v, _a: "")
    assert parts is not None
    same = content_parts(parts, copy, lambda index, actions: "sha256:bytes-of-app")
    again = content_parts(parts, copy, lambda index, actions: "sha256:bytes-of-app")
    other = content_parts(parts, copy, lambda index, actions: "sha256:changed")
    assert same is not None and again is not None and other is not None
    assert same.key() == again.key() != other.key()
    assert same.key() != parts.key()
    assert content_parts(parts, _run("x", base), lambda i, a: "") is None


def test_explain_names_what_changed() -> None:
    before = KeyParts("op", (("input 0", "k1"), ("input 1 content", "c1")))
    assert explain(None, before) == "no previous build of this step"
    assert "instruction" in explain(before, KeyParts("op2", before.inputs))
    assert "files it reads" in explain(before, KeyParts("op", (("input 0", "k1"), ("input 1 content", "c2"))))
    assert "earlier step" in explain(before, KeyParts("op", (("input 0", "k2"), ("input 1 content", "c1"))))


def test_mkdir_mode_is_part_of_the_key() -> None:
    base = Vertex(IMAGE)
    a = Vertex(FileOp((MkdirAction("/app", 0o755),)), (base,))
    b = Vertex(FileOp((MkdirAction("/app", 0o700),)), (base,))
    assert _keys(a)[a.digest] != _keys(b)[b.digest]
