"""Garbage collection on a hand-built state directory: what each policy removes and keeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cache.gc import PrunePolicy, auto_collect, prune
from cache.gcconfig import GcConfig
from cache.usage import disk_usage
from tests.cache.gc_store import HandStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def hs(tmp_path: Path) -> HandStore:
    return HandStore(tmp_path / "state")


def test_default_prune_keeps_what_images_reference_and_removes_the_rest(hs: HandStore) -> None:
    base = hs.layer(None)
    shared = hs.layer(base)
    hs.record("k-shared", shared)
    hs.image("docker.io/library/app:latest", shared)
    only_cache = hs.layer(base)
    hs.record("k-cache", only_cache)
    garbage = hs.layer(None)  # no record, no image: what a crash between commit and record leaves
    garbage_dir = hs.layer_dir(garbage).name
    cache_dir = hs.layer_dir(only_cache).name
    hs.drop_holds()

    report = prune(hs.state, hs.index, PrunePolicy())

    assert hs.keys() == {"k-shared"}
    assert [r.description for r in report.removed] == ["step"]
    assert garbage_dir not in hs.layer_dirs() and cache_dir not in hs.layer_dirs()
    assert [r.layer.dir for r in hs.index.chain(shared)] == [hs.layer_dir(base).name, hs.layer_dir(shared).name]
    assert report.reclaimed >= 2 * 64 * 1024


def test_prune_all_removes_every_record_but_images_stay_whole(hs: HandStore) -> None:
    base = hs.layer(None)
    top = hs.layer(base)
    hs.record("k-base", base)
    hs.record("k-top", top)
    manifest, config = hs.image("docker.io/library/app:latest", top)
    hs.drop_holds()

    prune(hs.state, hs.index, PrunePolicy(all=True))

    assert hs.keys() == set()
    row = hs.index.get_image("docker.io/library/app:latest")
    assert row is not None and row.snapshot == top
    assert len(hs.index.chain(top)) == 2
    assert hs.store.has(manifest) and hs.store.has(config)
    for snapshot in (base, top):
        assert (hs.layer_dir(snapshot) / "fs" / "data").exists()


def test_until_removes_only_records_unused_for_that_long(hs: HandStore) -> None:
    old = hs.layer(None)
    hs.record("k-old", old)
    time.sleep(0.05)
    boundary = time.time()
    time.sleep(0.05)
    new = hs.layer(None)
    hs.record("k-new", new)
    hs.drop_holds()

    # "now" is an hour after the boundary: k-old is unused for longer than 1h, k-new is not.
    prune(hs.state, hs.index, PrunePolicy(until=3600), now=boundary + 3600)

    assert hs.keys() == {"k-new"}


def test_keep_bytes_removes_least_recently_used_records_until_the_cache_fits(hs: HandStore) -> None:
    snapshots = []
    for i in range(3):
        snapshots.append(hs.layer(None, size=100 * 1024))
        hs.record(f"k{i}", snapshots[-1])
        time.sleep(0.02)
    hs.index.touch_keys(["k0"])  # k0 is now the most recently used
    hs.drop_holds()

    report = prune(hs.state, hs.index, PrunePolicy(keep_bytes=150 * 1024))

    assert hs.keys() == {"k0"}
    assert len(report.removed) == 2
    assert all(r.size >= 100 * 1024 for r in report.removed)


def test_a_chain_frees_a_parent_only_when_no_record_holds_a_child(hs: HandStore) -> None:
    base = hs.layer(None, size=100 * 1024)
    child = hs.layer(base, size=100 * 1024)
    hs.record("k-child", child)  # the base has no record of its own: the child's record holds it
    other = hs.layer(None, size=100 * 1024)
    hs.record("k-other", other)
    hs.drop_holds()

    report = prune(hs.state, hs.index, PrunePolicy(keep_bytes=250 * 1024))

    # Removing the oldest record (the child's) frees both layers of its chain at once.
    assert hs.keys() == {"k-other"}
    assert report.removed[0].size >= 200 * 1024


def test_what_another_live_process_holds_is_never_removed(hs: HandStore, tmp_path: Path) -> None:
    held = hs.layer(None)
    hs.record("k-held", held)
    free = hs.layer(None)
    hs.record("k-free", free)
    blob = hs.store.put_bytes(b"a blob the other process wrote")
    hs.drop_holds()
    held_dir = hs.layer_dir(held)
    script = (
        "import sys\n"
        "from cache.index import CacheIndex\n"
        "from cache.content_store import ContentStore\n"
        "from engine.state import StateDir\n"
        f"state = StateDir({str(hs.state.root)!r})\n"
        "index = CacheIndex(state.index_db)\n"
        "assert index.lookup(['k-held'])\n"
        f"assert ContentStore(state.blobs, state.tmp).has({blob!r})\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        report = prune(hs.state, hs.index, PrunePolicy(all=True))
        assert report.in_use == 1
        assert hs.keys() == {"k-held"}
        assert (held_dir / "fs" / "data").exists()
        assert (hs.state.blobs / blob.split(":")[1]).exists()
    finally:
        child.kill()
        child.wait()
    # The holder died (kill -9): its lease is dead, and the next prune takes everything.
    prune(hs.state, hs.index, PrunePolicy(all=True))
    assert hs.keys() == set()
    assert not held_dir.exists()
    assert not (hs.state.blobs / blob.split(":")[1]).exists()
    assert [p for p in os.listdir(hs.state.root / "leases") if p.endswith(".lease")] == []


def test_crash_leftovers_go_but_what_a_live_writer_fills_stays(hs: HandStore) -> None:
    orphan = hs.state.layers / "0123456789abcdef"
    (orphan / "fs").mkdir(parents=True)
    (orphan / "fs" / "half-written").write_bytes(b"x" * 1000)
    stale_temp = hs.state.tmp / "blob-killed-writer"
    stale_temp.write_bytes(b"partial")
    stale_view = hs.state.mounts / "view-0011223344556677"
    stale_view.mkdir(parents=True)
    # This process is filling a layer directory and a temp file right now (noted in its lease).
    leases = hs.index.leases
    with leases.guard():
        leases.hold(layers=["fedcba9876543210"], temps=["blob-being-written"])
    filling = hs.state.layers / "fedcba9876543210" / "fs"
    filling.mkdir(parents=True)
    writing = hs.state.tmp / "blob-being-written"
    writing.write_bytes(b"partial")

    prune(hs.state, hs.index, PrunePolicy())

    assert not orphan.exists() and not stale_temp.exists() and not stale_view.exists()
    assert filling.exists() and writing.exists()


def test_memos_and_variants_of_removed_records_go_with_them(hs: HandStore) -> None:
    snap = hs.layer(None)
    hs.record("k1", snap)
    layer = hs.index.snapshot(snap).layer
    hs.index.set_layer_diff(layer.id, "sha256:" + "ab" * 32, 123)
    variant = hs.store.put_bytes(b"compressed layer")
    hs.index.set_variant("sha256:" + "ab" * 32, "gzip", variant, 16)
    manifest = hs.store.put_bytes(b'{"manifest": 1}')
    config = hs.store.put_bytes(b'{"config": 1}')
    hs.index.set_memo("memo:1", json.dumps({"step_keys": ["k1"], "snapshot": snap, "image": [manifest, config]}))
    hs.drop_holds()

    prune(hs.state, hs.index, PrunePolicy())
    assert hs.index.get_memo("memo:1") is None
    assert hs.index.get_variant("sha256:" + "ab" * 32, "gzip") is None
    for digest in (variant, manifest, config):
        assert not (hs.state.blobs / digest.split(":")[1]).exists()


def test_a_kept_memo_keeps_the_image_blobs_a_rebuild_would_name(hs: HandStore) -> None:
    snap = hs.layer(None)
    hs.record("k1", snap)
    hs.image("docker.io/library/app:latest", snap)
    manifest, config = hs.index.get_image("docker.io/library/app:latest")[1:3]
    hs.index.set_memo("memo:1", json.dumps({"step_keys": ["k1"], "snapshot": snap, "image": [manifest, config]}))
    hs.index.delete_image("docker.io/library/app:latest")  # `rmi`: the record stays cached
    hs.drop_holds()

    prune(hs.state, hs.index, PrunePolicy(keep_bytes=1 << 40))
    assert hs.index.get_memo("memo:1") is not None
    assert (hs.state.blobs / manifest.split(":")[1]).exists()


def test_cache_mount_instances_are_pruned_unless_in_use(hs: HandStore) -> None:
    from cache.cachemounts import CacheMounts

    mounts = CacheMounts(hs.state.root / "cachemounts")
    with mounts.acquire("busy", "locked") as busy:
        Path(busy.path, "f").write_bytes(b"x" * 5000)
        with mounts.acquire("idle", "shared") as idle:
            Path(idle.path, "f").write_bytes(b"y" * 5000)
        idle_path = Path(idle.path)
        usage = disk_usage(hs.state, hs.index)
        row = next(s for s in usage.summaries if s.kind == "Cache Mounts")
        assert (row.total, row.active) == (2, 1)
        report = prune(hs.state, hs.index, PrunePolicy())
        assert [r.kind for r in report.removed] == ["exec.cachemount"]
        assert not idle_path.exists()
        assert Path(busy.path, "f").exists()


def test_disk_usage_by_kind(hs: HandStore) -> None:
    base = hs.layer(None, size=200 * 1024)
    hs.image("docker.io/library/base:latest", base)
    cached = hs.layer(base, size=100 * 1024)
    hs.record("k1", cached)
    hs.drop_holds()

    usage = {s.kind: s for s in disk_usage(hs.state, hs.index).summaries}

    assert usage["Images"].total == 1 and usage["Images"].size >= 200 * 1024
    assert usage["Build Cache"].total == 1
    assert 100 * 1024 <= usage["Build Cache"].size < 200 * 1024
    assert usage["Build Cache"].reclaimable == usage["Build Cache"].size
    assert usage["Containers"].total == 0


def test_auto_collect_applies_the_configured_limit_only_when_exceeded(hs: HandStore) -> None:
    for i in range(3):
        hs.record(f"k{i}", hs.layer(None, size=100 * 1024))
        time.sleep(0.02)
    hs.drop_holds()
    assert auto_collect(hs.state, hs.index, GcConfig(keep_bytes=10 << 20, keep_percent=None)) is None
    assert hs.keys() == {"k0", "k1", "k2"}
    report = auto_collect(hs.state, hs.index, GcConfig(keep_bytes=150 * 1024, keep_percent=None))
    assert report is not None and hs.keys() == {"k2"}
    assert auto_collect(hs.state, hs.index, GcConfig(enabled=False, keep_bytes=0, keep_percent=None)) is None


def test_auto_collect_keep_duration(hs: HandStore) -> None:
    hs.record("k-old", hs.layer(None))
    hs.drop_holds()
    config = GcConfig(keep_bytes=None, keep_percent=None, keep_duration=3600)
    assert auto_collect(hs.state, hs.index, config) is None
    report = auto_collect(hs.state, hs.index, config, now=time.time() + 7200)
    assert report is not None and hs.keys() == set()
