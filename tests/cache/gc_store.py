"""A real state directory built by hand for the GC and check tests: layers with files,
snapshot chains, cache records, images with real config and manifest blobs."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from cache.content_store import ContentStore
from cache.index import CacheIndex
from engine.state import StateDir


class HandStore:
    def __init__(self, root: Path) -> None:
        self.state = StateDir(root).ensure()
        self.index = CacheIndex(self.state.index_db)
        self.store = ContentStore(self.state.blobs, self.state.tmp, fsync=False)

    def layer(self, parent: int | None, size: int = 64 * 1024, name: str | None = None) -> int:
        """A snapshot on `parent` whose layer holds one file of `size` random bytes."""
        name = name or secrets.token_hex(8)
        fs = self.state.layers / name / "fs"
        fs.mkdir(parents=True)
        (fs / "data").write_bytes(os.urandom(size))
        return self.index.add_snapshot(parent, name, "overlay")

    def layer_dir(self, snapshot: int) -> Path:
        return self.state.layers / self.index.snapshot(snapshot).layer.dir

    def record(self, key: str, snapshot: int | None, description: str = "step") -> None:
        self.index.record([key], snapshot, description)

    def image(self, name: str, snapshot: int | None) -> tuple[str, str]:
        """An image row with a real config (the layers' diff_ids where known) and manifest."""
        chain = self.index.chain(snapshot)
        diff_ids = [row.layer.diff_id or f"sha256:{'0' * 63}{i}" for i, row in enumerate(chain)]
        config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        config_digest = self.store.put_bytes(config)
        manifest = json.dumps(
            {"schemaVersion": 2, "config": {"digest": config_digest, "size": len(config)}, "layers": []}
        ).encode()
        manifest_digest = self.store.put_bytes(manifest)
        self.index.put_image(name, manifest_digest, config_digest, snapshot)
        return manifest_digest, config_digest

    def drop_holds(self) -> None:
        """This process is done with what it made (as a build is when it ends)."""
        self.index.leases.release()

    def layer_dirs(self) -> set[str]:
        return set(os.listdir(self.state.layers))

    def keys(self) -> set[str]:
        return {row[0] for row in self.index.all_keys()}
