"""`system check` on a hand-built state directory: every kind of damage found, and repaired."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cache.content_store import HashingWriter
from cache.fsck import DANGLING, ERROR, check, repair
from engine.fs.layertar import write_layer_tar
from tests.cache.gc_store import HandStore


@pytest.fixture
def hs(tmp_path: Path) -> HandStore:
    return HandStore(tmp_path / "state")


def _with_diff_id(hs: HandStore, snapshot: int) -> str:
    layer = hs.index.snapshot(snapshot).layer
    hasher = HashingWriter()
    write_layer_tar(str(hs.state.layers / layer.dir / "fs"), hasher, whiteouts="overlay")
    hs.index.set_layer_diff(layer.id, hasher.digest, hasher.size)
    return hasher.digest


def _kinds(report, severity: str) -> set[str]:  # type: ignore[no-untyped-def]
    return {f.kind for f in report.findings if f.severity == severity}


def test_a_healthy_store_checks_clean(hs: HandStore) -> None:
    base = hs.layer(None)
    top = hs.layer(base)
    _with_diff_id(hs, base)
    _with_diff_id(hs, top)
    hs.record("k", top)
    hs.image("docker.io/library/app:latest", top)
    hs.drop_holds()
    report = check(hs.state, hs.index)
    assert report.findings == []
    assert report.counts["layers"] == 2 and report.counts["images"] == 1


def test_a_corrupt_blob_is_found_and_what_uses_it_removed(hs: HandStore) -> None:
    snap = hs.layer(None)
    manifest, _config = hs.image("docker.io/library/app:latest", snap)
    other = hs.store.put_bytes(b"unrelated and fine")
    (hs.state.blobs / manifest.split(":")[1]).write_bytes(b"bit rot")
    hs.drop_holds()

    report = check(hs.state, hs.index)
    assert _kinds(report, ERROR) == {"blob", "image"}
    assert any(manifest in f.subject for f in report.errors)

    repair(hs.state, hs.index)
    assert hs.index.get_image("docker.io/library/app:latest") is None
    assert not (hs.state.blobs / manifest.split(":")[1]).exists()
    assert (hs.state.blobs / other.split(":")[1]).exists() is False  # unreferenced: garbage, collected too
    assert check(hs.state, hs.index).findings == []


def test_a_changed_or_missing_layer_is_removed_with_everything_built_on_it(hs: HandStore) -> None:
    base = hs.layer(None)
    mid = hs.layer(base)
    top = hs.layer(mid)
    for snap in (base, mid, top):
        _with_diff_id(hs, snap)
    hs.record("k-base", base)
    hs.record("k-top", top)
    hs.image("docker.io/library/app:latest", top)
    survivor = hs.layer(base)
    hs.record("k-survivor", survivor)
    (hs.layer_dir(mid) / "fs" / "data").write_bytes(b"tampered")
    hs.drop_holds()

    report = check(hs.state, hs.index)
    assert [f.kind for f in report.errors] == ["layer"]
    assert "content changed" in report.errors[0].message

    repair(hs.state, hs.index)
    assert hs.keys() == {"k-base", "k-survivor"}
    assert hs.index.get_image("docker.io/library/app:latest") is None
    assert len(hs.index.chain(survivor)) == 2
    assert check(hs.state, hs.index).findings == []


def test_a_missing_layer_directory_is_an_error(hs: HandStore) -> None:
    snap = hs.layer(None)
    hs.record("k", snap)
    import shutil

    shutil.rmtree(hs.layer_dir(snap))
    hs.drop_holds()
    report = check(hs.state, hs.index, verify_content=False)
    assert [f.kind for f in report.errors] == ["layer"] and "missing" in report.errors[0].message
    repair(hs.state, hs.index)
    assert hs.keys() == set() and check(hs.state, hs.index).findings == []


def test_crash_leftovers_are_dangling_not_errors(hs: HandStore) -> None:
    orphan = hs.state.layers / "0123456789abcdef" / "fs"
    orphan.mkdir(parents=True)
    (hs.state.tmp / "blob-abc").write_bytes(b"half")
    hs.layer(None)  # a committed snapshot whose step never recorded its key
    (hs.state.root / "leases").mkdir(exist_ok=True)
    (hs.state.root / "leases" / "999999-dead.lease").write_text("s 1\n")
    hs.drop_holds()

    report = check(hs.state, hs.index)
    assert report.errors == []
    assert _kinds(report, DANGLING) == {"layer directory", "temp", "snapshot", "lease"}

    repair(hs.state, hs.index)
    assert check(hs.state, hs.index).findings == []
    assert os.listdir(hs.state.layers) == [] and os.listdir(hs.state.tmp) == []


def test_a_memo_that_would_name_a_vanished_image_is_an_error(hs: HandStore) -> None:
    snap = hs.layer(None)
    hs.record("k", snap)
    gone = "sha256:" + "cd" * 32
    hs.index.set_memo("memo:x", json.dumps({"step_keys": ["k"], "snapshot": snap, "image": [gone, gone]}))
    hs.drop_holds()
    report = check(hs.state, hs.index)
    assert [f.kind for f in report.errors] == ["memo"]
    repair(hs.state, hs.index)
    assert hs.index.get_memo("memo:x") is None and hs.keys() == {"k"}


def test_a_damaged_index_is_moved_aside_on_open_or_by_repair(hs: HandStore) -> None:
    hs.record("k", hs.layer(None))
    hs.index.close()
    size = hs.state.index_db.stat().st_size
    with open(hs.state.index_db, "r+b") as f:  # keep the header page, ruin every other one
        f.seek(4096)
        f.write(os.urandom(max(size, 64 * 1024) - 4096))
    from cache.index import CacheIndex

    index = CacheIndex(hs.state.index_db)
    moved = [p for p in hs.state.root.iterdir() if p.name.startswith("index.db.corrupt-")]
    if not moved:  # it opened: the check must see the damage, and a repair moves it aside
        report = check(hs.state, index)
        assert report.index_corrupt and report.errors
        assert repair(hs.state, index).index_corrupt
        moved = [p for p in hs.state.root.iterdir() if p.name.startswith("index.db.corrupt-")]
    assert moved
    fresh = CacheIndex(hs.state.index_db)
    assert fresh.lookup(["k"]) == {}
    assert check(hs.state, fresh).errors == []


def test_an_index_overwritten_with_garbage_starts_cold(hs: HandStore, caplog: pytest.LogCaptureFixture) -> None:
    hs.record("k", hs.layer(None))
    hs.index.close()
    hs.state.index_db.write_bytes(os.urandom(64 * 1024))
    for suffix in ("-wal", "-shm"):
        Path(f"{hs.state.index_db}{suffix}").unlink(missing_ok=True)
    from cache.index import CacheIndex

    with caplog.at_level("WARNING", logger="shipyard.cache"):
        index = CacheIndex(hs.state.index_db)
    assert "corrupt" in caplog.text
    assert index.lookup(["k"]) == {}
    assert any(p.name.startswith("index.db.corrupt-") for p in hs.state.root.iterdir())
    # What the old index described is now unreferenced: a check calls it leftovers, a repair removes it.
    report = check(hs.state, index)
    assert report.errors == [] and "layer directory" in _kinds(report, DANGLING)
