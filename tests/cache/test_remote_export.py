"""The local cache layout: written incrementally, read back, old blobs pruned, bad input refused."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from cache.content_store import ContentStore
from cache.remote.cacheconfig import CacheConfig, CacheEntry, CacheLayer
from cache.remote.export import cache_artifact, write_local
from cache.remote.imports import RemoteCacheError, load_local
from cache.remote.spec import CacheImport
from engine.errors import ExportError
from engine.oci import mediatypes


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    (tmp_path / "store" / "blobs").mkdir(parents=True)
    return ContentStore(tmp_path / "store" / "blobs", tmp_path / "store" / "tmp", fsync=False)


def _layer(store: ContentStore, content: bytes, parent: int) -> CacheLayer:
    blob = gzip.compress(content, mtime=0)
    digest = store.put_bytes(blob)
    return CacheLayer(_sha(content), 1.5, parent, digest, len(blob), mediatypes.OCI_LAYER_GZIP)


def _blobs(dest: Path) -> set[str]:
    return {"sha256:" + p.name for p in (dest / "blobs" / "sha256").iterdir()}


def test_write_read_replace_and_prune(tmp_path: Path, store: ContentStore) -> None:
    one, two = _layer(store, b"layer one", -1), _layer(store, b"layer two", 0)
    first = cache_artifact(CacheConfig((one, two), (CacheEntry("k1", 0), CacheEntry("k2", 1))))
    dest = tmp_path / "cache"
    write_local(str(dest), "latest", first, store)
    assert {one.blob, two.blob, first.config_digest, first.manifest_digest} == _blobs(dest)
    loaded = load_local(CacheImport("local", src=str(dest)))
    assert loaded.config == CacheConfig.from_json(first.config) and loaded.by_key == {"k1": 0, "k2": 1}
    manifest = json.loads((dest / "blobs" / "sha256" / first.manifest_digest[7:]).read_text())
    assert manifest["layers"][1]["annotations"] == {"containerd.io/uncompressed": two.diff_id}

    # the same tag again, now without layer two: its blob goes; another tag keeps its own
    second = cache_artifact(CacheConfig((one,), (CacheEntry("k1", 0),)))
    write_local(str(dest), "latest", second, store)
    assert two.blob not in _blobs(dest) and first.manifest_digest not in _blobs(dest)
    write_local(str(dest), "v2", first, store)
    index = json.loads((dest / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == ["latest", "v2"]
    assert load_local(CacheImport("local", src=str(dest), tag="v2")).by_key == {"k1": 0, "k2": 1}
    assert load_local(CacheImport("local", src=str(dest))).by_key == {"k1": 0}


def test_a_corrupt_blob_is_rewritten_and_a_corrupt_store_refused(tmp_path: Path, store: ContentStore) -> None:
    one = _layer(store, b"layer one", -1)
    artifact = cache_artifact(CacheConfig((one,), (CacheEntry("k1", 0),)))
    dest = tmp_path / "cache"
    write_local(str(dest), "latest", artifact, store)
    on_disk = dest / "blobs" / "sha256" / one.blob[7:]
    on_disk.write_bytes(b"x" * one.size)
    write_local(str(dest), "latest", artifact, store)  # an existing blob is checked, not trusted
    assert _sha(on_disk.read_bytes()) == one.blob
    store.path(one.blob).write_bytes(b"y" * one.size)
    on_disk.unlink()
    with pytest.raises(ExportError, match="does not match"):
        write_local(str(dest), "latest", artifact, store)


def test_refuses_a_directory_that_is_not_a_layout(tmp_path: Path, store: ContentStore) -> None:
    precious = tmp_path / "home"
    (precious / "notes.txt").parent.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an OCI layout"):
        write_local(str(precious), "latest", cache_artifact(CacheConfig((), ())), store)
    assert sorted(p.name for p in precious.iterdir()) == ["notes.txt"]


def test_reading_a_missing_or_foreign_layout(tmp_path: Path) -> None:
    with pytest.raises(RemoteCacheError, match="not a directory"):
        load_local(CacheImport("local", src=str(tmp_path / "nothing")))
