from cache.index import CacheIndex, StatRow


def test_keys_snapshots_and_chains(tmp_path):
    index = CacheIndex(tmp_path / "index.db")
    base = index.add_snapshot(None, "aaaa", "overlay")
    top = index.add_snapshot(base, "bbbb", "overlay")
    chain = index.chain(top)
    assert [row.layer.dir for row in chain] == ["aaaa", "bbbb"]
    index.record(["sha256:k1", "sha256:k2"], top, "step")
    found = index.lookup(["sha256:k1", "sha256:k2", "sha256:nope"])
    assert set(found) == {"sha256:k1", "sha256:k2"}
    assert found["sha256:k1"].snapshot == top


def test_splice_reuses_layers_without_duplicates(tmp_path):
    index = CacheIndex(tmp_path / "index.db")
    a = index.add_snapshot(None, "a", "overlay")
    b = index.add_snapshot(None, "b", "overlay")
    layer_b = index.snapshot(b).layer.id
    merged = index.splice_snapshot(a, layer_b)
    assert index.splice_snapshot(a, layer_b) == merged
    assert [r.layer.dir for r in index.chain(merged)] == ["a", "b"]


def test_stat_cache_round_trip_and_second_process_sees_it(tmp_path):
    index = CacheIndex(tmp_path / "index.db")
    index.save_stat_cache("/ctx", {"a.txt": StatRow(1, 2, 3, 4, 0o100644, "d", 5)})
    other = CacheIndex(tmp_path / "index.db")
    assert other.load_stat_cache("/ctx")["a.txt"].digest == "d"
    assert other.load_stat_cache("/elsewhere") == {}
