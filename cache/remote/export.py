"""Writing a cache config and its blobs: an OCI layout directory, a registry, or an image config.

Both the local and the registry form are one OCI *image manifest* whose `config` is
the cache config and whose `layers` are the layer blobs (each annotated with its
diff_id, as BuildKit does). That is BuildKit's `image-manifest=true` form, the one
every registry accepts (ECR, GCR and Quay refuse BuildKit's default index form).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import io
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from cache.content_store import ContentStore
from cache.remote.cacheconfig import (
    ANNOTATION_UNCOMPRESSED,
    CACHE_CONFIG_MEDIA_TYPE,
    INLINE_CONFIG_KEY,
    CacheConfig,
)
from engine.errors import ExportError
from engine.oci import mediatypes
from engine.oci.image import Descriptor, Index, Manifest, go_json, sha256_digest

if TYPE_CHECKING:
    from engine.images import BuiltImage
    from engine.registry.client import RegistryClient
    from engine.solver.context import Engine

_CHUNK = 1 << 20
PUSH_WORKERS = 4


@dataclasses.dataclass(frozen=True)
class CacheArtifact:
    """A cache config as the blobs that carry it: manifest, config, layer descriptors."""

    manifest: bytes
    manifest_digest: str
    config: bytes
    config_digest: str
    layers: tuple[Descriptor, ...]

    @property
    def size(self) -> int:
        return len(self.manifest) + len(self.config) + sum(d.size for d in self.layers)


def cache_artifact(config: CacheConfig) -> CacheArtifact:
    """The OCI image manifest for a cache config (each blob listed once)."""
    config_bytes = config.to_json()
    seen: dict[str, Descriptor] = {}
    for layer in config.layers:
        if layer.blob not in seen:
            seen[layer.blob] = Descriptor(
                layer.media_type, layer.blob, layer.size, annotations=((ANNOTATION_UNCOMPRESSED, layer.diff_id),)
            )
    manifest = Manifest(
        config=Descriptor(CACHE_CONFIG_MEDIA_TYPE, sha256_digest(config_bytes), len(config_bytes)),
        layers=tuple(seen.values()),
        media_type=mediatypes.OCI_MANIFEST,
    )
    data = manifest.to_json()
    return CacheArtifact(data, sha256_digest(data), config_bytes, sha256_digest(config_bytes), manifest.layers)


# --------------------------------------------------------------------------- type=local


def write_local(dest: str, tag: str, artifact: CacheArtifact, store: ContentStore) -> None:
    """Add the cache to the OCI layout at `dest` under `tag`, then drop blobs no tag uses.

    Blobs are written first (each to a temp file, verified, renamed), index.json last
    and atomically, so a crash leaves the previous cache readable. An exclusive lock
    on the directory keeps two exporters from pruning each other's fresh blobs.
    """
    dest = os.path.abspath(dest)
    blob_dir = os.path.join(dest, "blobs", "sha256")
    if os.path.isdir(dest) and os.listdir(dest) and not os.path.isfile(os.path.join(dest, "oci-layout")):
        raise ExportError(f"cache export: {dest} exists, is not empty and is not an OCI layout; refusing to write into it")
    try:
        os.makedirs(blob_dir, exist_ok=True)
        lock_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ExportError(f"cache export to {dest}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        index_path = os.path.join(dest, "index.json")
        entries = [d for d in _read_index(index_path) if d.annotation(mediatypes.ANNOTATION_REF_NAME) != tag]
        for layer in artifact.layers:
            _put_blob(blob_dir, layer.digest, layer.size, lambda d=layer.digest: store.open(d))
        _put_blob(blob_dir, artifact.config_digest, len(artifact.config), lambda: io.BytesIO(artifact.config))
        _put_blob(blob_dir, artifact.manifest_digest, len(artifact.manifest), lambda: io.BytesIO(artifact.manifest))
        entries.append(
            Descriptor(
                mediatypes.OCI_MANIFEST,
                artifact.manifest_digest,
                len(artifact.manifest),
                annotations=((mediatypes.ANNOTATION_REF_NAME, tag),),
            )
        )
        _atomic_write(os.path.join(dest, "oci-layout"), go_json({"imageLayoutVersion": mediatypes.OCI_LAYOUT_VERSION}))
        _atomic_write(index_path, Index(manifests=tuple(entries), media_type=mediatypes.OCI_INDEX).to_json())
        _prune(blob_dir, entries)
    except OSError as exc:
        raise ExportError(f"cache export to {dest}: {exc.strerror or exc}") from None
    finally:
        os.close(lock_fd)


def _read_index(path: str) -> list[Descriptor]:
    try:
        with open(path, "rb") as f:
            return list(Index.from_json(f.read()).manifests)
    except FileNotFoundError:
        return []
    except Exception as exc:  # noqa: BLE001 - any unreadable index: refuse rather than overwrite it
        raise ExportError(f"cache export: {path} is not a valid OCI index ({exc}); refusing to replace it") from None


def _put_blob(blob_dir: str, digest: str, size: int, open_source: object) -> None:
    """Write a blob unless an intact copy is already there; the copy is verified while written."""
    path = os.path.join(blob_dir, digest.split(":", 1)[1])
    if os.path.exists(path) and os.path.getsize(path) == size and _file_digest(path) == digest:
        return
    fd, tmp = tempfile.mkstemp(dir=blob_dir, prefix=".tmp-")
    try:
        hasher = hashlib.sha256()
        written = 0
        with os.fdopen(fd, "wb") as out, open_source() as source:  # type: ignore[operator]
            while chunk := source.read(_CHUNK):
                hasher.update(chunk)
                written += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if "sha256:" + hasher.hexdigest() != digest or written != size:
            raise ExportError(f"cache export: blob {digest} does not match its content (a corrupt content store?)")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _file_digest(path: str) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def _atomic_write(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _prune(blob_dir: str, entries: list[Descriptor]) -> None:
    """Remove blobs no manifest of the index refers to (old caches replaced under the same tag).

    Only when every manifest can be read: a blob we cannot account for is kept.
    """
    keep: set[str] = set()
    for entry in entries:
        keep.add(entry.digest)
        path = os.path.join(blob_dir, entry.digest.split(":", 1)[1])
        try:
            with open(path, "rb") as f:
                data = f.read()
            value = json.loads(data)
        except (OSError, ValueError):
            return
        if isinstance(value, dict) and isinstance(value.get("manifests"), list):
            return  # a nested index (someone else's image in this layout): do not guess
        try:
            manifest = Manifest.from_json(data)
        except Exception:  # noqa: BLE001
            return
        keep.add(manifest.config.digest)
        keep.update(layer.digest for layer in manifest.layers)
    for name in os.listdir(blob_dir):
        if name.startswith(".tmp-") or "sha256:" + name in keep:
            continue
        if len(name) == 64 and all(c in "0123456789abcdef" for c in name):
            try:
                os.unlink(os.path.join(blob_dir, name))
            except FileNotFoundError:
                pass


# --------------------------------------------------------------------------- type=registry


def push_registry(client: "RegistryClient", ref: str, artifact: CacheArtifact, store: ContentStore) -> str:
    """Push the layer blobs (in parallel; the client skips those the registry has), the config, then the manifest."""

    def push_layer(layer: Descriptor) -> None:
        client.push_blob(ref, layer.digest, layer.size, lambda: store.open(layer.digest))

    with ThreadPoolExecutor(max_workers=max(1, min(PUSH_WORKERS, len(artifact.layers)))) as pool:
        list(pool.map(push_layer, artifact.layers))
    client.push_blob(ref, artifact.config_digest, len(artifact.config), lambda: io.BytesIO(artifact.config))
    return client.put_manifest(ref, artifact.manifest, mediatypes.OCI_MANIFEST)


# --------------------------------------------------------------------------- type=inline


def inline_image(engine: "Engine", built: "BuiltImage", config: CacheConfig) -> "BuiltImage":
    """The same image with the cache records in its config (a new config, so a new digest).

    The image config's top-level keys stay sorted, as BuildKit writes them.
    """
    document = built.image.to_dict()
    document[INLINE_CONFIG_KEY] = config.to_dict()
    config_bytes = go_json(dict(sorted(document.items())))
    store = engine.store
    config_digest = store.put_bytes(config_bytes)
    manifest = dataclasses.replace(
        built.manifest, config=Descriptor(built.manifest.config.media_type, config_digest, len(config_bytes))
    )
    manifest_bytes = manifest.to_json()
    manifest_digest = store.put_bytes(manifest_bytes)
    return dataclasses.replace(
        built,
        config_bytes=config_bytes,
        config_digest=config_digest,
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        manifest_digest=manifest_digest,
    )
