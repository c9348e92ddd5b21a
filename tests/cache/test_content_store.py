import hashlib
import io
import os

import pytest

from cache.content_store import ContentStore
from engine.errors import CacheError


@pytest.fixture
def store(tmp_path):
    (tmp_path / "blobs").mkdir()
    return ContentStore(tmp_path / "blobs", tmp_path / "tmp")


def test_put_and_read_back(store):
    digest = store.put_bytes(b"hello")
    assert digest == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert store.read(digest) == b"hello"
    assert store.verify(digest)


def test_ingest_verifies_expected_digest_and_stores_nothing_on_mismatch(store):
    wrong = "sha256:" + "0" * 64
    with pytest.raises(CacheError, match="digest mismatch"):
        store.ingest(io.BytesIO(b"data"), expected=wrong)
    assert not store.has(wrong)
    assert os.listdir(store.blobs_dir) == []
    assert os.listdir(store.tmp_dir) == []


def test_failed_producer_leaves_no_temp_file(store):
    def boom(out):
        out.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        store.write_with(boom)
    assert os.listdir(store.tmp_dir) == []
    assert os.listdir(store.blobs_dir) == []


def test_invalid_digest_is_refused(store):
    with pytest.raises(CacheError):
        store.path("sha256:../../etc/passwd")
