"""A state directory on a small tmpfs: a full disk is a clear error and leaves nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Shipyard, make_shipyard, write

TMPFS_MB = 64


@pytest.fixture
def small_state(tmp_path: Path, busybox_tar: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "state"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(root)], check=True)
    try:
        yield make_shipyard(root, busybox_tar, "runc")
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def _layer_dirs(sy: Shipyard) -> set[str]:
    return set(os.listdir(sy.root / "layers"))


def _used(sy: Shipyard) -> int:
    st = os.statvfs(sy.root)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _assert_nothing_partial(sy: Shipyard, layers_before: set[str], used_before: int) -> None:
    assert _layer_dirs(sy) == layers_before
    assert os.listdir(sy.root / "tmp") == []
    assert [p for p in os.listdir(sy.root / "mounts") if not p.startswith("run-")] == []
    assert abs(_used(sy) - used_before) < 2 << 20
    check = sy.run("system", "check")
    assert check.stdout.strip().endswith("0 errors, 0 kinds of leftovers"), check.stdout


def test_a_run_step_that_fills_the_disk(small_state: Shipyard, tmp_path: Path) -> None:
    sy = small_state
    ctx = write(tmp_path / "big" / "Dockerfile", "FROM busybox:local\nRUN dd if=/dev/zero of=/big bs=1M count=100\n").parent
    layers, used = _layer_dirs(sy), _used(sy)
    proc, _ = sy.build(ctx, check=False)
    assert proc.returncode == 1
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("ERROR:") and "RUN dd" in error
    assert "no space left on device" in error and str(sy.root) in error and "shipyard prune" in error
    _assert_nothing_partial(sy, layers, used)


def test_a_copy_that_fills_the_disk(small_state: Shipyard, tmp_path: Path) -> None:
    sy = small_state
    ctx = tmp_path / "copy"
    write(ctx / "Dockerfile", "FROM busybox:local\nCOPY big.bin /big.bin\n")
    with open(ctx / "big.bin", "wb") as f:
        f.truncate(100 << 20)  # sparse here, real pages once copied into the tmpfs
    layers, used = _layer_dirs(sy), _used(sy)
    proc, _ = sy.build(ctx, check=False)
    assert proc.returncode == 1
    error = proc.stderr.strip().splitlines()[-1]
    assert "[2/2] COPY big.bin /big.bin" in error and "No space left on device" in error, proc.stderr
    assert str(sy.root) in error and "shipyard prune" in error
    assert "Traceback" not in proc.stderr
    _assert_nothing_partial(sy, layers, used)


def test_a_blob_that_does_not_fit(small_state: Shipyard, tmp_path: Path) -> None:
    """The layer fits; its compressed copy for an OCI export does not: no temp file is left."""
    sy = small_state
    ctx = write(
        tmp_path / "blob" / "Dockerfile", "FROM busybox:local\nRUN head -c 34000000 /dev/urandom > /noise\n"
    ).parent
    sy.build(ctx, "-t", "noise")
    layers, used = _layer_dirs(sy), _used(sy)
    proc, _ = sy.build(ctx, "-t", "noise", "--output", f"type=oci,dest={tmp_path / 'out.tar'}", check=False)
    assert proc.returncode == 1
    error = proc.stderr.strip().splitlines()[-1]
    assert "no space left on device while writing a blob" in error and str(sy.root) in error, proc.stderr
    assert "Traceback" not in proc.stderr
    _assert_nothing_partial(sy, layers, used)


def test_prune_makes_room_and_the_build_then_succeeds(small_state: Shipyard, tmp_path: Path) -> None:
    sy = small_state
    config = write(tmp_path / "config.toml", "[gc]\nenabled = false\n")
    sy.env = {"SHIPYARD_CONFIG": str(config)}  # no automatic GC: the user prunes by hand
    first = write(tmp_path / "a" / "Dockerfile", "FROM busybox:local\nRUN dd if=/dev/zero of=/a bs=1000000 count=36\n").parent
    second = write(tmp_path / "b" / "Dockerfile", "FROM busybox:local\nRUN dd if=/dev/zero of=/b bs=1000000 count=36\n").parent
    sy.build(first)  # untagged: build cache only
    proc, _ = sy.build(second, check=False)
    assert proc.returncode == 1 and "no space left on device" in proc.stderr
    pruned = sy.run("prune").stdout
    assert "Deleted build cache objects" in pruned and "Total reclaimed space: 36" in pruned
    sy.build(second, "-t", "second")
    assert sy.run("run", "--rm", "second", "wc", "-c", "/b").stdout.split()[0] == "36000000"


def test_automatic_gc_keeps_the_cache_within_its_default_share(small_state: Shipyard, tmp_path: Path) -> None:
    """Default policy: build cache up to 10% of the state's filesystem, collected after each build."""
    sy = small_state
    first = write(tmp_path / "a" / "Dockerfile", "FROM busybox:local\nRUN dd if=/dev/zero of=/a bs=1000000 count=36\n").parent
    second = write(tmp_path / "b" / "Dockerfile", "FROM busybox:local\nRUN dd if=/dev/zero of=/b bs=1000000 count=36\n").parent
    sy.build(first)  # untagged: 36 MB of build cache, over 10% of 64 MB, collected right after
    usage = {json.loads(line)["Type"]: json.loads(line) for line in sy.run("system", "df", "--format", "json").stdout.splitlines()}
    assert usage["Build Cache"]["SizeBytes"] < TMPFS_MB * (1 << 20) // 10
    sy.build(second, "-t", "second")  # fits only because the first's cache went
    assert sy.run("run", "--rm", "second", "wc", "-c", "/b").stdout.split()[0] == "36000000"
    check = sy.run("system", "check")
    assert check.stdout.strip().endswith("0 errors, 0 kinds of leftovers"), check.stdout


def test_the_index_and_the_blob_store_on_a_full_disk(small_state: Shipyard) -> None:
    """ENOSPC from SQLite and from a blob write: one clear CacheError each, nothing half-written."""
    from cache.content_store import ContentStore
    from cache.index import CacheIndex
    from engine.errors import CacheError
    from engine.state import StateDir

    state = StateDir(small_state.root)
    index = CacheIndex(state.index_db)
    store = ContentStore(state.blobs, state.tmp)
    filler = small_state.root / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    try:
        with pytest.raises(CacheError, match=r"no space left on device while writing the cache index in .*free: "):
            index.record([f"k{i}" for i in range(2000)], None, "x" * (4 << 20))
        assert index.lookup(["k1"]) == {}  # rolled back
        with pytest.raises(CacheError, match=r"no space left on device while writing a blob"):
            store.put_bytes(os.urandom(2 << 20))
        assert os.listdir(state.tmp) == []
    finally:
        filler.unlink()
        index.close()
        index.leases.release()
    check = small_state.run("system", "check")
    assert " 0 errors" in check.stdout, check.stdout
