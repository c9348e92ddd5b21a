"""Pulling images from registries into the local image store.

A pull resolves the reference (mirrors first, see `engine.registry.client`), fetches
the config, downloads the layers it does not have — in parallel, each verified
while it streams — and hands the result to `engine.oci.importer.import_image`,
which checks every diff_id while it unpacks each layer into a snapshot (a layer is
unpacked as soon as it has arrived, while later ones still download). Layers
shared with images already present are neither downloaded nor stored again.

The image store records the image under its normalized name (`docker.io/library/
busybox:latest`, or `…/busybox@sha256:…` for a digest reference). Beside it, in
the index's meta table, a *pull record* remembers what the name was pulled as —
the digest the tag pointed to (an index, usually), the platform manifest chosen,
the platform — and, per blob, the repository it came from (so a later push to the
same registry can mount instead of upload).

`FROM` resolution (`ImageStore.resolve` → `pull_if_needed`) follows BuildKit: a tag
is re-resolved on every build, but cheaply — one HEAD request, compared with the pull
record; nothing is downloaded unless the tag moved. A name that was built or
imported locally (no pull record, or a record of another image) is never looked up
remotely, and a digest reference that is present never touches the network. When
the registry cannot be reached, an image that is present is used as it is (with a
warning).

This module imports no HTTP library: the client is created only when the network
is really needed, so the common fully-local build never pays for it.
"""

from __future__ import annotations

import json
import platform as _platform
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Callable

from engine.errors import ImageNotFoundError, ShipyardError
from engine.reference import Reference, parse_reference
from engine.registry.errors import RegistryError

if TYPE_CHECKING:
    from engine.progress.events import EventBus
    from engine.registry.client import RegistryClient, ResolvedManifest
    from engine.solver.context import Engine

PULL_RECORD = "registry.pulled:"
BLOB_SOURCE = "registry.source:"
DOWNLOAD_WORKERS = 4
STATUS_INTERVAL = 0.5
MAX_CONFIG_BYTES = 8 << 20
"""An image config is read whole into memory; real ones are a few KiB (history included)."""

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def host_platform() -> str:
    machine = _platform.machine().lower()
    return f"linux/{_ARCH.get(machine, machine)}"


@dataclass(frozen=True)
class PullRecord:
    root: str
    """The digest the reference pointed to when pulled (an index, or the manifest)."""
    manifest: str
    platform: str


@dataclass(frozen=True)
class PulledImage:
    name: str
    manifest_digest: str
    config_digest: str
    root_digest: str
    snapshot: int | None
    downloaded: int
    """Bytes downloaded by this pull (0: everything was already here)."""
    updated: bool
    """The name now points to another image than before the pull."""


def stored_name(ref: Reference) -> str:
    """The image-store name of a pulled reference: `repo:tag`, or `repo@digest` when pinned."""
    if ref.digest:
        return f"{ref.repository}@{ref.digest}"
    return str(ref)


def pull_record(engine: "Engine", name: str) -> PullRecord | None:
    raw = engine.index.get_meta(PULL_RECORD + name)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return PullRecord(str(data["root"]), str(data["manifest"]), str(data["platform"]))
    except (ValueError, KeyError, TypeError):
        return None


def blob_source(engine: "Engine", digest: str) -> str:
    """`registry/repository` a blob was last pulled from or pushed to ("" when unknown)."""
    return engine.index.get_meta(BLOB_SOURCE + digest) or ""


def record_blob_source(engine: "Engine", digests: list[str], repository: str) -> None:
    for digest in digests:
        if engine.index.get_meta(BLOB_SOURCE + digest) != repository:
            engine.index.set_meta(BLOB_SOURCE + digest, repository)


# --------------------------------------------------------------------------- pulling


class _Progress:
    """Per-blob byte counts published as VertexStatus events, at most twice a second per blob."""

    def __init__(self, events: "EventBus | None", vertex: str) -> None:
        self.events = events
        self.vertex = vertex
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def for_blob(self, digest: str) -> Callable[[int, int | None], None] | None:
        if self.events is None:
            return None
        label = digest[:19]

        def report(done: int, total: int | None) -> None:
            now = time.monotonic()
            with self._lock:
                if done != total and now - self._last.get(digest, 0.0) < STATUS_INTERVAL:
                    return
                self._last[digest] = now
            from engine.progress.events import VertexStatus

            assert self.events is not None
            self.events.publish(VertexStatus(self.vertex, label, done, total or 0))

        return report


class _Downloads:
    """The BlobReader `import_image` reads: each blob once its parallel download has finished."""

    def __init__(self, engine: "Engine", client: "RegistryClient", ref: Reference) -> None:
        self.engine = engine
        self.client = client
        self.ref = ref
        self.futures: dict[str, Future[None]] = {}
        self.sizes: dict[str, int] = {}
        self.pool: ThreadPoolExecutor | None = None

    def start(self, blobs: list[tuple[str, int]], progress: _Progress) -> None:
        self.sizes.update(blobs)  # a blob fetched later (it left the store meanwhile) keeps its size cap
        missing = [(d, s) for d, s in blobs if not self.engine.store.has(d) and d not in self.futures]
        if not missing:
            return
        self.pool = ThreadPoolExecutor(max_workers=min(DOWNLOAD_WORKERS, len(missing)), thread_name_prefix="pull")
        for digest, size in missing:
            self.futures[digest] = self.pool.submit(
                self.client.fetch_blob, self.ref, digest, self.engine.store, size, progress.for_blob(digest)
            )

    def open_blob(self, digest: str) -> BinaryIO:
        future = self.futures.get(digest)
        if future is not None:
            future.result()
        elif not self.engine.store.has(digest):
            self.client.fetch_blob(self.ref, digest, self.engine.store, self.sizes.get(digest))
        return self.engine.store.open(digest)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def pull_image(
    engine: "Engine",
    client: "RegistryClient",
    ref: Reference | str,
    *,
    platform: str = "",
    events: "EventBus | None" = None,
) -> PulledImage:
    """Pull `ref` for `platform` (default: the host's) into the store; returns what was stored."""
    reference = ref if isinstance(ref, Reference) else parse_reference(ref)
    platform = platform or host_platform()
    vertex = f"pull {reference}"
    if events is not None:
        from engine.progress.events import VertexStarted

        events.publish(VertexStarted(vertex, f"pull {reference}"))
    started = time.time()
    error = ""
    try:
        resolved = client.resolve(reference, platform)
        return store_resolved(engine, client, resolved, _Progress(events, vertex))
    except ShipyardError as exc:
        error = exc.user_message()
        raise
    finally:
        if events is not None:
            from engine.progress.events import VertexCompleted

            events.publish(VertexCompleted(vertex, f"pull {reference}", time.time() - started, error))


def store_resolved(engine: "Engine", client: "RegistryClient", resolved: "ResolvedManifest", progress: _Progress) -> PulledImage:
    """Download what is missing of a resolved image, import it, and name it."""
    from engine.oci import mediatypes
    from engine.oci.image import Image, Manifest
    from engine.oci.importer import import_image

    ref = resolved.ref
    name = stored_name(ref)
    before = engine.index.get_image(name)
    from engine.limits import load_limits

    manifest = Manifest.from_json(resolved.data)
    limits = load_limits()
    for layer in manifest.layers:
        if not mediatypes.is_layer(layer.media_type) or layer.urls:
            raise RegistryError(f"{ref}: layer {layer.digest} has the unsupported type {layer.media_type!r}")
        if layer.size > limits.layer_bytes:  # refused before a byte is downloaded
            raise RegistryError(
                f"{ref}: layer {layer.digest} is {layer.size} bytes, over the limit of {limits.layer_bytes}; {limits.hint()}"
            )
    if manifest.config.size > MAX_CONFIG_BYTES:
        raise RegistryError(f"{ref}: image config of {manifest.config.size} bytes, over the limit of {MAX_CONFIG_BYTES}")
    downloaded = 0
    present = [row for row in engine.index.images_by_manifest(resolved.digest) if row.snapshot is not None or not manifest.layers]
    if present:
        config_digest, snapshot = present[0].config, present[0].snapshot
    else:
        have = {d for d in [manifest.config.digest, *(layer.digest for layer in manifest.layers)] if engine.store.has(d)}
        client.fetch_blob(ref, manifest.config.digest, engine.store, manifest.config.size)
        image = Image.from_json(engine.store.read(manifest.config.digest))
        needed: list[tuple[str, int]] = []
        parent: int | None = None
        reusing = True
        for layer, diff_id in zip(manifest.layers, image.diff_ids):
            if reusing:
                parent = engine.index.snapshot_on(parent, diff_id)
                reusing = parent is not None
            if not reusing:
                needed.append((layer.digest, layer.size))
        downloads = _Downloads(engine, client, ref)
        try:
            downloads.start(needed, progress)
            imported = import_image(engine, resolved.data, downloads)
        finally:
            downloads.close()
        config_digest, snapshot = imported.config_digest, imported.snapshot
        downloaded = sum(
            size for digest, size in [(manifest.config.digest, manifest.config.size), *needed] if digest not in have
        )
    engine.store.put_bytes(resolved.data, expected=resolved.digest)
    engine.index.put_image(name, resolved.digest, config_digest, snapshot)
    record = {"root": resolved.root_digest, "manifest": resolved.digest, "platform": resolved.platform}
    engine.index.set_meta(PULL_RECORD + name, json.dumps(record, separators=(",", ":")))
    source = f"{ref.domain}/{ref.path}"
    record_blob_source(engine, [manifest.config.digest, *(layer.digest for layer in manifest.layers)], source)
    updated = before is None or before.manifest != resolved.digest
    return PulledImage(name, resolved.digest, config_digest, resolved.root_digest, snapshot, downloaded, updated)


# --------------------------------------------------------------------------- FROM resolution


def pull_if_needed(
    engine: "Engine",
    ref_text: str,
    stored_manifest: str | None,
    found_by_name: bool,
    *,
    events: "EventBus | None" = None,
    client_factory: "Callable[[], RegistryClient] | None" = None,
) -> str | None:
    """For `ImageStore.resolve`: the store name to use after checking the registry, or None.

    None means "the local lookup stands" (a local image, or a present digest
    reference): nothing was asked of any registry. A name means the image is tracked
    remotely and is now current under that name (pulled, or confirmed by HEAD).
    """
    if stored_manifest is not None and not found_by_name:
        return None  # found by digest or image ID: content-addressed, nothing to check
    try:
        reference = parse_reference(ref_text)
    except ShipyardError:
        return None  # an image ID prefix or something else unparsable: the store's own error applies
    name = stored_name(reference)
    if reference.digest:
        row = engine.index.get_image(name)
        if row is not None:
            return name
    elif stored_manifest is not None:
        record = pull_record(engine, name)
        if record is None or record.manifest != stored_manifest:
            return None  # built or imported here: never looked up remotely
        try:
            with _client(client_factory) as client:
                current = client.head_manifest(reference, reference.tag)
        except ShipyardError as exc:
            _warn(events, f"could not check {reference} ({_short(exc)}); using the local image")
            return name
        if current == record.root:
            return name
        if current is None:
            _warn(events, f"{reference} is no longer in its registry; using the local image")
            return name
    try:
        with _client(client_factory) as client:
            pulled = pull_image(engine, client, reference, events=events)
    except ShipyardError as exc:
        if stored_manifest is not None:
            _warn(events, f"could not pull {reference} ({_short(exc)}); using the local image")
            return name
        raise ImageNotFoundError(f"image {ref_text!r} is not in the local image store and could not be pulled: {_short(exc)}") from None
    return pulled.name


def _client(factory: "Callable[[], RegistryClient] | None") -> "RegistryClient":
    if factory is not None:
        return factory()
    from engine.registry.client import RegistryClient

    return RegistryClient.from_environment()


def _short(exc: ShipyardError) -> str:
    return exc.user_message()


def _warn(events: "EventBus | None", text: str) -> None:
    if events is not None:
        from engine.progress.events import BuildMessage

        events.publish(BuildMessage(f"WARNING: {text}"))
