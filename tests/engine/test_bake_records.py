"""Target keys, skip records and the words `--explain` uses, without running a build."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cache.checksum import ContextHashers
from cache.index import CacheIndex
from engine.bake.explain import changed_files, definition_difference, files_map
from engine.bake.keys import (
    Selection,
    TargetDefinition,
    canonical_json,
    selections_hold,
    target_key,
    with_digests,
)
from engine.bake.records import (
    OutputStamp,
    RecordStore,
    StepRecord,
    TargetRecord,
    missing_output,
    write_dir_stamp,
)
from engine.solver.keys import KeyParts
from frontends.yaml.model import StepSpec, TargetSpec


def definition(**kw) -> TargetDefinition:  # type: ignore[no-untyped-def]
    spec = TargetSpec("api", "/ctx", args=kw.pop("args", (("A", "1"),)), tags=("api:dev",))
    return TargetDefinition(canonical_json(spec), kw.pop("source", "FROM base\n"), (), kw.pop("upstream", (("base", "sha256:b1"),)))


def test_the_key_covers_definition_dockerfile_upstream_and_graph_and_the_memo_the_engine() -> None:
    d = definition()
    key = target_key(d.parts("sha256:v"))
    assert [label for label, _ in d.parts("sha256:v")] == ["definition", "dockerfile", "ignore", "upstream base", "graph"]
    assert target_key(definition().parts("sha256:v")) == key
    assert target_key(definition(args=(("A", "2"),)).parts("sha256:v")) != key
    assert target_key(definition(source="FROM base\nRUN x\n").parts("sha256:v")) != key
    assert target_key(definition(upstream=(("base", "sha256:b2"),)).parts("sha256:v")) != key
    assert target_key(d.parts("sha256:w")) != key
    assert d.memo_key("engine-1") != d.memo_key("engine-2")


def test_records_round_trip_and_an_unreadable_record_is_no_record(tmp_path: Path) -> None:
    index = CacheIndex(tmp_path / "index.db")
    store = RecordStore(index, "scope")
    record = TargetRecord(
        name="api",
        key="sha256:k",
        memo="sha256:m",
        parts=(("definition", "sha256:d"),),
        canonical='{"context":"/ctx"}',
        source="FROM base\n",
        vertex_key="sha256:v",
        snapshot=3,
        image=("sha256:man", "sha256:cfg"),
        selections=(Selection("/ctx", ("/app.py",), True, True, (), "sha256:s"),),
        images=(("name", "docker.io/library/busybox:local", "sha256:b"),),
        outputs=(OutputStamp("image", "docker.io/library/api:dev", "sha256:man"),),
        steps=(StepRecord("[api 2/3] COPY app.py /app/", "sha256:c", KeyParts("{}", (("input 0", "x"),))), StepRecord("[api 1/3] FROM b", "k", None, True)),
        metadata={"containerimage.digest": "sha256:man"},
    )
    store.save(record)
    assert store.load("api") == record
    assert store.load("web") is None
    index.set_memo("bake:scope:web", "{not json")
    assert store.load("web") is None
    store.save_files("api", {"/ctx": {"app.py": "d1"}})
    assert store.load_files("api") == {"/ctx": {"app.py": "d1"}}
    assert record.steps[0].text == "COPY app.py /app/"


def test_outputs_must_still_exist(tmp_path: Path) -> None:
    index = CacheIndex(tmp_path / "index.db")
    out_dir, out_file = tmp_path / "out", tmp_path / "image.tar"
    out_dir.mkdir()
    write_dir_stamp(str(out_dir), "sha256:k")
    out_file.write_bytes(b"tar")
    st = os.stat(out_file)
    index.put_image("docker.io/library/api:dev", "sha256:man", "sha256:cfg", None)
    record = TargetRecord(
        "api", "sha256:k", "m", (), "{}", "", "sha256:v", None, ("sha256:man", "sha256:cfg"),
        outputs=(
            OutputStamp("image", "docker.io/library/api:dev", "sha256:man"),
            OutputStamp("dir", str(out_dir), "sha256:k"),
            OutputStamp("file", str(out_file), f"{st.st_size}:{st.st_mtime_ns}"),
        ),
    )  # fmt: skip
    assert missing_output(record, index) == ""
    out_file.write_bytes(b"other")
    assert missing_output(record, index) == f"output {out_file} changed since it was written"
    out_file.write_bytes(b"tar")
    os.utime(out_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    write_dir_stamp(str(out_dir), "sha256:other")
    assert missing_output(record, index) == f"output {out_dir} was written by another build"
    (out_dir / ".shipyard-bake-stamp").unlink()
    assert missing_output(record, index) == f"output {out_dir} is missing"
    index.put_image("docker.io/library/api:dev", "sha256:new", "sha256:cfg2", None)
    assert missing_output(record, index) == "image docker.io/library/api:dev now names another image"
    index.delete_image("docker.io/library/api:dev")
    assert missing_output(record, index) == "image docker.io/library/api:dev is no longer in the image store"
    nothing_named = TargetRecord("base", "k", "m", (), "{}", "", "sha256:v", 7, None)
    assert missing_output(nothing_named, index) == "its result is no longer in the build cache"
    index.record(["sha256:v"], None, "test")
    assert missing_output(nothing_named, index) == "its result is no longer in the build cache"  # another snapshot


def test_selections_and_per_file_digests_name_the_changed_file(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "src" / "pkg").mkdir(parents=True)
    (ctx / "src" / "pkg" / "a.py").write_text("a\n")
    (ctx / "src" / "b.py").write_text("b\n")
    (ctx / "README").write_text("readme\n")
    index = CacheIndex(tmp_path / "index.db")
    hashers = ContextHashers(index)
    (sel,) = with_digests([Selection(str(ctx), ("/src",), True, True, ())], hashers)
    before = files_map([sel], hashers, index)
    assert set(before[str(ctx)]) == {"src/pkg/a.py", "src/b.py"}
    (ctx / "README").write_text("edited, but not read\n")
    assert selections_hold([sel], ContextHashers(index))
    (ctx / "src" / "pkg" / "a.py").write_text("A!\n")
    fresh = ContextHashers(index)
    assert not selections_hold([sel], fresh)
    after = files_map([sel], fresh, index)
    assert changed_files(before, after, [sel]) == [str(ctx / "src" / "pkg" / "a.py")]
    (ctx / "src" / "b.py").unlink()
    gone = files_map([sel], ContextHashers(index), index)
    assert changed_files(after, gone, [sel]) == [str(ctx / "src" / "b.py")]


def test_definition_differences_in_words() -> None:
    def canon(**kw) -> str:  # type: ignore[no-untyped-def]
        return json.dumps(TargetSpec("t", "/ctx", **kw).to_canonical(), sort_keys=True)

    assert definition_difference(canon(args=(("A", "1"),)), canon(args=(("A", "2"),))) == "arg A changed"
    assert definition_difference(canon(), canon(args=(("B", "1"),))) == "arg B added"
    assert definition_difference(canon(labels=(("l", "1"),)), canon()) == "label l removed"
    assert definition_difference(canon(tags=("a",)), canon(tags=("b",))) == "tags changed"
    steps = (StepSpec("from", "busybox"), StepSpec("run", "true"))
    assert definition_difference(canon(steps=steps), canon(steps=(steps[0], StepSpec("run", "false")))) == "step 2 (run) changed"
