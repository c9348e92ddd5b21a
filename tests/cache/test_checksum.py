"""Content digests of context selections, and the stat cache that makes them cheap."""

import os
import time

import pytest

import cache.checksum as checksum
from cache.checksum import ContextHasher, timestamp_granularity_ns
from cache.index import CacheIndex


@pytest.fixture
def ctx(tmp_path):
    root = tmp_path / "ctx"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text("alpha")
    (root / "sub" / "b.txt").write_text("beta")
    (root / "other.txt").write_text("other")
    os.symlink("sub/a.txt", root / "link")
    return root


def _hasher(tmp_path, root, index=None):
    index = index or CacheIndex(tmp_path / "index.db")
    return ContextHasher(index, str(root)), index


def _settle(root):
    """Let the timestamp granularity pass after the last change, so no entry is racy."""
    time.sleep(timestamp_granularity_ns(str(root)) / 1e9 + 0.01)


def test_selection_digest_ignores_unselected_files(tmp_path, ctx):
    h, index = _hasher(tmp_path, ctx)
    before = h.digest_selection(["/sub/"])
    (ctx / "other.txt").write_text("changed")
    h2, _ = _hasher(tmp_path, ctx, index)
    assert h2.digest_selection(["/sub/"]) == before
    (ctx / "sub" / "a.txt").write_text("ALPHA")
    h3, _ = _hasher(tmp_path, ctx, index)
    assert h3.digest_selection(["/sub/"]) != before


def test_mode_and_symlink_target_count_mtime_does_not(tmp_path, ctx):
    h, index = _hasher(tmp_path, ctx)
    base = h.digest_selection(["/"])
    os.utime(ctx / "sub" / "a.txt", ns=(1, 1))
    assert _hasher(tmp_path, ctx, index)[0].digest_selection(["/"]) == base
    os.chmod(ctx / "sub" / "a.txt", 0o755)
    moded = _hasher(tmp_path, ctx, index)[0].digest_selection(["/"])
    assert moded != base
    os.unlink(ctx / "link")
    os.symlink("sub/b.txt", ctx / "link")
    assert _hasher(tmp_path, ctx, index)[0].digest_selection(["/"]) != moded


def test_no_op_rehash_reads_no_file_contents(tmp_path, ctx, monkeypatch):
    _settle(ctx)
    h, index = _hasher(tmp_path, ctx)
    first = h.digest_selection(["/"])
    h.flush()
    assert h.stats.files_hashed == 3

    def forbidden(path):
        raise AssertionError(f"read {path} although nothing changed")

    monkeypatch.setattr(checksum, "_sha256_file", forbidden)
    again, _ = _hasher(tmp_path, ctx, index)
    assert again.digest_selection(["/"]) == first
    # The selection's stat fingerprint matched: not even a stat-cache row was needed.
    assert again.stats.files_hashed == 0 and again.stats.files_from_stat_cache == 0
    assert again._cache is None
    # Without the fingerprint, the per-file stat cache alone still avoids every read.
    index._db.execute("DELETE FROM selection_fingerprints")
    third, _ = _hasher(tmp_path, ctx, index)
    assert third.digest_selection(["/"]) == first
    assert third.stats.files_hashed == 0 and third.stats.files_from_stat_cache == 4  # 3 files and a symlink


def test_racy_entry_is_rehashed_so_same_size_same_tick_edit_is_seen(tmp_path, ctx):
    """An entry hashed within the timestamp granularity of the file's change is not trusted."""
    target = ctx / "sub" / "a.txt"
    h, index = _hasher(tmp_path, ctx)
    # Hash right after the file was written: the entry is racy.
    target.write_text("one")
    st = os.stat(target)
    first = h.digest_selection(["/sub/a.txt"])
    h.flush()
    # Same size, and force identical mtime/ctime-insensitive stat: rewrite then restore mtime.
    target.write_text("two")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = os.stat(target)
    row = index.load_stat_cache(str(ctx))["sub/a.txt"]
    if (st2.st_size, st2.st_mtime_ns, st2.st_ctime_ns, st2.st_ino) == (row.size, row.mtime_ns, row.ctime_ns, row.ino):
        # Same tick: only the racy rule can catch this edit.
        assert row.hashed_ns <= max(row.mtime_ns, row.ctime_ns) + timestamp_granularity_ns(str(ctx))
    second, _ = _hasher(tmp_path, ctx, index)
    assert second.digest_selection(["/sub/a.txt"]) != first


def test_racy_rule_directly(tmp_path, ctx, monkeypatch):
    """Simulate the kernel giving an edit the same timestamps: the racy entry still rehashes."""
    h, index = _hasher(tmp_path, ctx)
    h.digest_selection(["/sub/a.txt"])
    h.flush()
    row = index.load_stat_cache(str(ctx))["sub/a.txt"]
    from cache.index import StatRow

    # Pretend it was hashed in the same tick as the change: racy.
    racy = StatRow(row.size, row.mtime_ns, row.ctime_ns, row.ino, row.mode, "sha256:stale", row.mtime_ns)
    index.save_stat_cache(str(ctx), {"sub/a.txt": racy})
    index._db.execute("DELETE FROM selection_fingerprints")  # this test is about the per-file rule
    fresh, _ = _hasher(tmp_path, ctx, index)
    digest = fresh.digest_selection(["/sub/a.txt"])
    assert fresh.stats.files_hashed == 1
    # And a trusted (old) entry is used as is, even if the digest is made up.
    trusted = StatRow(row.size, row.mtime_ns, row.ctime_ns, row.ino, row.mode, "made-up", row.mtime_ns + 10**10)
    index.save_stat_cache(str(ctx), {"sub/a.txt": trusted})
    index._db.execute("DELETE FROM selection_fingerprints")
    stale, _ = _hasher(tmp_path, ctx, index)
    assert stale.digest_selection(["/sub/a.txt"]) != digest
    assert stale.stats.files_from_stat_cache == 1


def test_granularity_of_local_fs_is_fine_grained(tmp_path):
    assert timestamp_granularity_ns(str(tmp_path)) <= 20_000_000


def test_missing_source_is_a_clear_error(tmp_path, ctx):
    from engine.errors import ContextError

    h, _ = _hasher(tmp_path, ctx)
    with pytest.raises(ContextError, match="not found"):
        h.digest_selection(["/nope"])


def test_symlink_leaving_the_context_is_resolved_inside(tmp_path, ctx):
    outside = tmp_path / "secret"
    outside.write_text("host secret")
    os.symlink(str(outside), ctx / "escape")
    h, _ = _hasher(tmp_path, ctx)
    from engine.errors import ContextError

    with pytest.raises(ContextError):
        h.digest_selection(["/escape"])


def test_dockerignore_filter_hides_files_and_prunes_excluded_dirs(tmp_path, ctx, monkeypatch):
    from engine.fs.selection import ContextFilter

    (ctx / "node_modules" / "pkg").mkdir(parents=True)
    (ctx / "node_modules" / "pkg" / "index.js").write_text("x")
    (ctx / "debug.log").write_text("log")
    index = CacheIndex(tmp_path / "index.db")
    flt = ContextFilter(["node_modules", "*.log"])
    walked = []
    real_scandir = os.scandir

    def spy(path):  # type: ignore[no-untyped-def]
        walked.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", spy)
    first = ContextHasher(index, str(ctx), flt).digest_selection(["/*"])
    assert not any("node_modules" in p for p in walked), "an excluded directory nothing re-includes is not entered"
    (ctx / "debug.log").write_text("more log")
    (ctx / "node_modules" / "pkg" / "index.js").write_text("changed")
    assert ContextHasher(index, str(ctx), flt).digest_selection(["/*"]) == first
    (ctx / "other.txt").write_text("visible change")
    assert ContextHasher(index, str(ctx), flt).digest_selection(["/*"]) != first
    # the same selection under other rules is a different digest, never a stale fingerprint
    assert ContextHasher(index, str(ctx), ContextFilter(["*.log"])).digest_selection(["/*"]) != first
