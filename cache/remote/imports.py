"""`--cache-from`: read cache configs before the solve, unpack only the records the solver uses.

Loading a source reads metadata only — a manifest and a small JSON config — from an
OCI layout directory, a registry, or an image (inline cache). The solver then asks
`lookup` about its local misses and calls `load` for the hits its plan reaches:
just those records' layers are fetched (and only the ones not already unpacked
here), each blob checked against its digest, size and claimed compression, and
unpacked through the OCI importer, which checks every diff_id. The key is then
recorded in the local index, and the snapshots get the creation times the exporting
machine had, so the image built from them has the same history, hence the same digest.
"""

from __future__ import annotations

import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, BinaryIO, Callable, Protocol, Sequence

from cache.content_store import ContentStore
from cache.index import CacheRecord
from cache.remote.cacheconfig import (
    CACHE_CONFIG_MEDIA_TYPE,
    INLINE_CONFIG_KEY,
    MAX_CONFIG_BYTES,
    CacheConfig,
    CacheLayer,
)
from cache.remote.protocol import RemoteHit
from cache.remote.spec import CacheImport
from engine.errors import ShipyardError
from engine.oci import mediatypes
from engine.oci.image import Descriptor, Image, Manifest, sha256_digest
from engine.solver.context import Engine

if TYPE_CHECKING:
    from engine.registry.client import RegistryClient

FETCH_WORKERS = 4


class RemoteCacheError(ShipyardError):
    """An imported cache that cannot be read or used (missing, malformed, a blob that does not match)."""


class BlobFetcher(Protocol):
    def fetch(self, descriptor: Descriptor, store: ContentStore) -> None:
        """Put the blob into the content store, verified against its digest (or raise)."""
        ...


@dataclass(frozen=True)
class LoadedCache:
    """One --cache-from source, read: its name, its records, and where its blobs are."""

    name: str
    config: CacheConfig
    fetcher: BlobFetcher | None
    local_chain: tuple[int, ...] | None = None
    """For an image of the local store: its snapshots (layer i of the config is snapshot i)."""
    by_key: dict[str, int] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.by_key:
            for entry in self.config.records:
                self.by_key.setdefault(entry.key, entry.layer)

    def keys_by_top(self) -> dict[int, list[str]]:
        """Keys grouped by result (top layer entry)."""
        out: dict[int, list[str]] = {}
        for key, top in self.by_key.items():
            out.setdefault(top, []).append(key)
        return out


# --------------------------------------------------------------------------- reading sources


def _verified(data: bytes, digest: str, what: str) -> bytes:
    if sha256_digest(data) != digest:
        raise RemoteCacheError(f"{what} {digest} does not match its digest")
    return data


def _from_manifest(name: str, manifest_bytes: bytes, read_blob: Callable[[Descriptor], bytes], fetcher: BlobFetcher | None) -> LoadedCache:
    """A cache manifest (config = cache config), or an image manifest whose config has inline cache."""
    manifest = Manifest.from_json(manifest_bytes)
    if manifest.config.size > MAX_CONFIG_BYTES:
        raise RemoteCacheError(f"{name}: the cache config is {manifest.config.size} bytes, too large")
    config_bytes = _verified(read_blob(manifest.config), manifest.config.digest, "config")
    if manifest.config.media_type == CACHE_CONFIG_MEDIA_TYPE:
        return LoadedCache(name, CacheConfig.from_json(config_bytes, where=name), fetcher)
    if manifest.config.media_type not in mediatypes.CONFIG_TYPES:
        raise RemoteCacheError(f"{name}: neither a Shipyard cache nor an image (config type {manifest.config.media_type!r})")
    return LoadedCache(name, _inline(name, config_bytes, manifest), fetcher)


def _inline(name: str, config_bytes: bytes, manifest: Manifest) -> CacheConfig:
    """The inline records of an image config, with each layer tied to the manifest's blob."""
    import json

    try:
        document = json.loads(config_bytes)
    except ValueError as exc:
        raise RemoteCacheError(f"{name}: the image config is not JSON: {exc}") from None
    raw = document.get(INLINE_CONFIG_KEY) if isinstance(document, dict) else None
    if raw is None:
        raise RemoteCacheError(f"{name}: the image has no inline cache (build it with --cache-to type=inline)")
    config = CacheConfig.from_value(raw, inline=True, where=f"{name} inline cache")
    diff_ids = Image.from_json(config_bytes).diff_ids
    if len(config.layers) > len(manifest.layers) or len(diff_ids) != len(manifest.layers):
        raise RemoteCacheError(f"{name}: the inline cache names more layers than the image has")
    layers: list[CacheLayer] = []
    for i, layer in enumerate(config.layers):
        if layer.parent != i - 1 or layer.diff_id != diff_ids[i]:
            raise RemoteCacheError(f"{name}: inline cache layer {i} is not the image's layer {i}")
        blob = manifest.layers[i]
        layers.append(replace(layer, blob=blob.digest, size=blob.size, media_type=blob.media_type))
    return CacheConfig(tuple(layers), config.records)


class LayoutFetcher:
    """Blobs of an OCI layout directory (`type=local`), read only from inside it."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)

    def open(self, descriptor: Descriptor) -> BinaryIO:
        from engine.oci.importer import LayoutBlobs

        try:
            return LayoutBlobs(self.root).open_blob(descriptor.digest)
        except ShipyardError as exc:
            raise RemoteCacheError(str(exc)) from None

    def read(self, descriptor: Descriptor) -> bytes:
        if descriptor.size > MAX_CONFIG_BYTES:
            raise RemoteCacheError(f"blob {descriptor.digest} is too large to read as metadata")
        with self.open(descriptor) as f:
            return f.read(descriptor.size + 1)

    def fetch(self, descriptor: Descriptor, store: ContentStore) -> None:
        """Copy into the store, never more than one byte past the descriptor's size (then the digest fails)."""
        with self.open(descriptor) as raw:

            def copy(out: BinaryIO) -> None:
                left = descriptor.size + 1
                while left > 0 and (chunk := raw.read(min(1 << 20, left))):
                    out.write(chunk)
                    left -= len(chunk)

            store.write_with(copy, expected=descriptor.digest)


def load_local(spec: CacheImport) -> LoadedCache:
    from engine.errors import ImageNotFoundError
    from engine.oci.importer import select_in_layout

    name = f"local:{os.path.abspath(spec.src)}"
    if not os.path.isdir(spec.src):
        raise RemoteCacheError(f"{name}: not a directory")
    fetcher = LayoutFetcher(spec.src)
    wanted = "@" + spec.digest if spec.digest else (spec.tag or "latest")
    try:
        manifest_bytes = select_in_layout(spec.src, wanted)
    except ImageNotFoundError:
        if spec.tag or spec.digest:
            raise
        manifest_bytes = select_in_layout(spec.src, "")  # one image, untagged (an `-o type=oci` export)
    return _from_manifest(name, manifest_bytes, fetcher.read, fetcher)


class RegistryFetcher:
    """Blobs of a registry repository, through the registry client (which verifies each digest)."""

    def __init__(self, client: "RegistryClient", ref: str) -> None:
        self.client = client
        self.ref = ref

    def fetch(self, descriptor: Descriptor, store: ContentStore) -> None:
        self.client.fetch_blob(self.ref, descriptor.digest, store, size=descriptor.size)

    def read(self, descriptor: Descriptor, store: ContentStore) -> bytes:
        if descriptor.size > MAX_CONFIG_BYTES:
            raise RemoteCacheError(f"blob {descriptor.digest} is too large to read as metadata")
        self.fetch(descriptor, store)
        return store.read(descriptor.digest)


def load_registry(spec: CacheImport, engine: Engine, client: "RegistryClient") -> LoadedCache:
    """A cache manifest in a registry, or an image there with inline cache (for this platform)."""
    name = f"registry:{spec.ref}"
    fetcher = RegistryFetcher(client, spec.ref)
    resolved = client.resolve(spec.ref)
    return _from_manifest(name, resolved.data, lambda d: fetcher.read(d, engine.store), fetcher)


def load_image(spec: CacheImport, engine: Engine) -> LoadedCache:
    """An image of the local store: its inline records, over the snapshots it already has."""
    from engine.images import ImageStore

    stored = ImageStore(engine).get(spec.ref)
    name = f"image:{spec.ref}"
    if stored is None:
        raise RemoteCacheError(f"{name}: no such image in the local store")
    manifest_bytes = engine.store.read(stored.manifest_digest)
    manifest = Manifest.from_json(manifest_bytes)
    config = _inline(name, engine.store.read(stored.config_digest), manifest)
    chain = tuple(row.id for row in engine.index.chain(stored.snapshot))
    if len(chain) != len(manifest.layers):
        raise RemoteCacheError(f"{name}: the stored image's layers are not unpacked")
    return LoadedCache(name, config, None, local_chain=chain)


def load_sources(
    engine: Engine,
    specs: Sequence[CacheImport],
    registry_client: "Callable[[], RegistryClient] | None" = None,
    warn: Callable[[str], None] = lambda _: None,
) -> "ImportedCaches":
    """Read every source's metadata, concurrently; a source that cannot be read is skipped with a warning."""

    def load(spec: CacheImport) -> LoadedCache | None:
        try:
            if spec.type == "local":
                return load_local(spec)
            if spec.type == "image":
                return load_image(spec, engine)
            if registry_client is None:
                raise RemoteCacheError("no registry client")
            return load_registry(spec, engine, registry_client())
        except ShipyardError as exc:
            warn(f"cache {spec.describe()} not imported: {exc.user_message()}")
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(FETCH_WORKERS, len(specs)))) as pool:
        loaded = [c for c in pool.map(load, specs) if c is not None]
    return ImportedCaches(engine, loaded)


# --------------------------------------------------------------------------- the solver's view


def _existing_prefix(engine: Engine, chain: list[CacheLayer]) -> list[int]:
    """Snapshot ids of the longest bottom part of `chain` already unpacked here."""
    
    out: list[int] = []
    parent: int | None = None
    for layer in chain:
        found = engine.index.snapshot_on(parent, layer.diff_id)
        if found is None:
            break
        out.append(found)
        parent = found
    return out


class _ChainBlobs:
    """What `import_image` reads: the synthetic config from memory, layers from the content store."""

    def __init__(self, config: bytes, store: ContentStore) -> None:
        self.config = config
        self.digest = sha256_digest(config)
        self.store = store

    def open_blob(self, digest: str) -> BinaryIO:
        if digest == self.digest:
            return io.BytesIO(self.config)
        return self.store.open(digest)


class ImportedCaches:
    """Every loaded --cache-from source; implements the solver's `RemoteCache`."""

    def __init__(self, engine: Engine, caches: list[LoadedCache]) -> None:
        self.engine = engine
        self.caches = {c.name: c for c in caches}
        self._order = [c.name for c in caches]
        self._unpack_lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.caches)

    def lookup(self, keys: Sequence[str]) -> dict[str, RemoteHit]:
        out: dict[str, RemoteHit] = {}
        for key in keys:
            for name in self._order:
                if key in self.caches[name].by_key:
                    out[key] = RemoteHit(key, name)
                    break
        return out

    def aliases(self, key: str) -> list[str]:
        """The other keys of the first cache that has `key` with the very same result."""
        for name in self._order:
            cache = self.caches[name]
            top = cache.by_key.get(key)
            if top is not None:
                return [k for k in cache.keys_by_top().get(top, ()) if k != key]
        return []

    def known_chains(self, keys: Sequence[str]) -> dict[str, tuple[int | None, tuple[CacheLayer, ...]]]:
        """For the keys some cache has: the part of the chain unpacked here, and the layers that are not.

        What a re-export needs to carry a record on without unpacking anything.
        """
        out: dict[str, tuple[int | None, tuple[CacheLayer, ...]]] = {}
        for key, hit in self.lookup(keys).items():
            cache = self.caches[hit.source]
            chain = cache.config.chain(cache.by_key[key])
            if cache.local_chain is not None:
                out[key] = (cache.local_chain[len(chain) - 1] if chain else None, ())
                continue
            prefix = _existing_prefix(self.engine, chain)
            out[key] = (prefix[-1] if prefix else None, tuple(chain[len(prefix) :]))
        return out

    def fetch_blobs(self, layers: Sequence[CacheLayer]) -> None:
        """Bring these layers' blobs into the content store (checked), from whichever cache lists them."""
        sources: dict[str, LoadedCache] = {}
        for name in reversed(self._order):
            for layer in self.caches[name].config.layers:
                if layer.blob:
                    sources[layer.blob] = self.caches[name]
        wanted = {layer.blob: layer for layer in layers if not self.engine.store.has(layer.blob)}

        def fetch(layer: CacheLayer) -> None:
            cache = sources.get(layer.blob)
            if cache is None or cache.fetcher is None:
                raise RemoteCacheError(f"blob {layer.blob} is in no imported cache")
            cache.fetcher.fetch(Descriptor(layer.media_type, layer.blob, layer.size), self.engine.store)
            _check_blob(self.engine.store, layer)

        with ThreadPoolExecutor(max_workers=max(1, min(FETCH_WORKERS, len(wanted)))) as pool:
            list(pool.map(fetch, wanted.values()))

    def load(self, hit: RemoteHit) -> CacheRecord:
        cache = self.caches[hit.source]
        path = cache.config.path(cache.by_key[hit.key])
        chain = [cache.config.layers[i] for i in path]
        snapshots: list[int]
        if cache.local_chain is not None:
            snapshots = list(cache.local_chain[: len(chain)])
        else:
            snapshots = [row.id for row in self.engine.index.chain(self._unpack(cache, chain))] if chain else []
        snapshot = snapshots[-1] if snapshots else None
        description = f"from cache {cache.name}"
        created = self.engine.index.record([hit.key], snapshot, description)
        self._record_prefixes(cache, hit.key, path, snapshots, description)
        return CacheRecord(hit.key, snapshot, created)

    def _record_prefixes(self, cache: LoadedCache, key: str, path: list[int], snapshots: list[int], description: str) -> None:
        """The cache's other records whose results are now unpacked here (the chain's lower parts), for free.

        They make the next build's earlier steps local hits too; keys the local index
        already has keep their own results.
        """
        by_top = cache.keys_by_top()
        found: dict[str, int] = {}
        for index, snapshot in zip(path, snapshots):
            for other in by_top.get(index, ()):
                if other != key:
                    found[other] = snapshot
        known = self.engine.index.lookup(list(found))
        by_snapshot: dict[int, list[str]] = {}
        for other, snapshot in found.items():
            if other not in known:
                by_snapshot.setdefault(snapshot, []).append(other)
        for snapshot, keys in by_snapshot.items():
            self.engine.index.record(keys, snapshot, description)

    def _unpack(self, cache: LoadedCache, chain: list[CacheLayer]) -> int:
        """Fetch the chain's missing blobs (in parallel), then unpack them with the OCI importer.

        The importer takes a manifest and a config; a synthetic pair listing the chain's
        blobs and diff_ids lets it do what it does for images: verify each blob's diff_id
        while extracting, reuse layers already unpacked on the same parents.
        """
        store = self.engine.store
        present = len(_existing_prefix(self.engine, chain))
        wanted: dict[str, CacheLayer] = {}
        for layer in chain[present:]:
            wanted.setdefault(layer.blob, layer)
        assert cache.fetcher is not None

        def fetch(layer: CacheLayer) -> None:
            if not store.has(layer.blob):
                cache.fetcher.fetch(Descriptor(layer.media_type, layer.blob, layer.size), store)  # type: ignore[union-attr]
            _check_blob(store, layer)

        with ThreadPoolExecutor(max_workers=max(1, min(FETCH_WORKERS, len(wanted)))) as pool:
            list(pool.map(fetch, wanted.values()))
        with self._unpack_lock:  # one extraction at a time: two records sharing layers unpack them once
            present = len(_existing_prefix(self.engine, chain))
            config = Image(diff_ids=tuple(layer.diff_id for layer in chain)).to_json()
            manifest = Manifest(
                config=Descriptor(mediatypes.OCI_CONFIG, sha256_digest(config), len(config)),
                layers=tuple(Descriptor(layer.media_type, layer.blob, layer.size) for layer in chain),
            ).to_json()
            from engine.oci.importer import import_image

            imported = import_image(self.engine, manifest, _ChainBlobs(config, store))
            rows = self.engine.index.chain(imported.snapshot)
            if len(rows) != len(chain):
                raise RemoteCacheError(f"{cache.name}: unpacked {len(rows)} layers, the record has {len(chain)}")
            fresh = [(layer.created, row.id) for layer, row in zip(chain[present:], rows[present:])]
            self.engine.index.set_snapshots_created(fresh)
        assert imported.snapshot is not None
        return imported.snapshot


def _check_blob(store: ContentStore, layer: CacheLayer) -> None:
    """The stored blob has the recorded size and the compression its media type claims.

    (Its digest was checked on the way into the store.) A blob whose bytes contradict
    its media type would later be exported under that type, so it is refused here.
    """
    from engine.oci.compress import sniff

    size = store.size(layer.blob)
    if size != layer.size:
        raise RemoteCacheError(f"blob {layer.blob} has {size} bytes, the cache says {layer.size}")
    claimed = mediatypes.layer_compression(layer.media_type)
    if claimed is None:
        raise RemoteCacheError(f"blob {layer.blob}: {layer.media_type!r} is not a layer media type")
    with store.open(layer.blob) as f:
        actual = sniff(f.read(6))
    if actual != claimed:
        raise RemoteCacheError(f"blob {layer.blob} is {actual}, its media type says {claimed}")
