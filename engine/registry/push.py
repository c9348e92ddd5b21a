"""Pushing an image from the local store to a registry.

The store keeps built layers uncompressed (snapshots); a registry wants compressed
blobs. `plan_push` decides, per layer, what goes over the wire: a layer that came
as a compressed blob (pulled, loaded) is pushed as those very bytes, so a pulled
image pushes back with the same manifest digest; a built layer is gzip-compressed
through `LayerBlobs.compressed`, which stores the result per layer, so the second
push of the same layer never compresses again. When any layer had to be compressed
the manifest is rewritten (same family — OCI or Docker — and config) to name the
compressed blobs.

`push_plan` sends the blobs in parallel — each one skipped when the repository has it
(HEAD), mounted when the blob is known to be in another repository of the same
registry (remembered from earlier pulls and pushes), else uploaded — and the manifest
last, so a reader never sees a manifest whose blobs are missing.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Callable

from engine.errors import ExportError, ShipyardError
from engine.reference import Reference, parse_reference
from engine.registry.config import canonical_registry
from engine.registry.pull import STATUS_INTERVAL, blob_source, record_blob_source

if TYPE_CHECKING:
    from engine.layers import LayerBlobs
    from engine.progress.events import EventBus
    from engine.registry.client import RegistryClient
    from engine.solver.context import Engine

PUSH_WORKERS = 4


@dataclass(frozen=True)
class PushBlob:
    digest: str
    size: int
    media_type: str
    open: Callable[[], BinaryIO]


@dataclass(frozen=True)
class PushPlan:
    manifest: bytes
    media_type: str
    digest: str
    blobs: tuple[PushBlob, ...]
    """The layers, then the config."""


@dataclass(frozen=True)
class PushResult:
    ref: Reference
    digest: str
    size: int
    """The manifest's size in bytes (docker prints it)."""
    outcomes: tuple[tuple[str, str], ...]
    """(blob digest, "exists" | "mounted" | "uploaded") for every blob."""


def plan_push(engine: "Engine", layer_blobs: "LayerBlobs", manifest_bytes: bytes, snapshot: int | None) -> PushPlan:
    """What to send for a stored image: its blobs as the registry should get them, and the manifest."""
    import hashlib

    from engine.oci import mediatypes
    from engine.oci.image import Descriptor, Manifest

    store = engine.store
    manifest = Manifest.from_json(manifest_bytes)
    chain = engine.index.chain(snapshot)
    if len(chain) != len(manifest.layers):
        raise ExportError(f"the image has {len(manifest.layers)} layers but {len(chain)} are unpacked in the store")
    oci = manifest.effective_media_type == mediatypes.OCI_MANIFEST
    layers: list[Descriptor] = []
    blobs: list[PushBlob] = []
    changed = False
    for descriptor, row in zip(manifest.layers, chain):
        compression = mediatypes.layer_compression(descriptor.media_type)
        if compression in ("gzip", "zstd") and store.has(descriptor.digest):
            layers.append(descriptor)
        else:
            digest, size = layer_blobs.compressed(row.layer, "gzip")
            layers.append(Descriptor(mediatypes.layer_media_type("gzip", oci=oci), digest, size, descriptor.annotations))
            changed = True
        last = layers[-1]
        blobs.append(PushBlob(last.digest, last.size, last.media_type, _opener(engine, last.digest)))
    config = manifest.config
    if not store.has(config.digest):
        raise ExportError(f"the image config {config.digest} is missing from the content store")
    blobs.append(PushBlob(config.digest, config.size, config.media_type, _opener(engine, config.digest)))
    media_type = manifest.effective_media_type
    if changed:
        manifest = dataclasses.replace(manifest, layers=tuple(layers), media_type=media_type)
        manifest_bytes = manifest.to_json()
        store.put_bytes(manifest_bytes)
    digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    return PushPlan(manifest_bytes, media_type, digest, tuple(blobs))


def _opener(engine: "Engine", digest: str) -> Callable[[], BinaryIO]:
    return lambda: engine.store.open(digest)


class _Counting:
    """A blob stream that reports how many bytes have been read from it (the upload's progress)."""

    def __init__(self, raw: BinaryIO, report: Callable[[int], None]) -> None:
        self.raw = raw
        self.report = report
        self.done = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.done += len(data)
        self.report(self.done)
        return data

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> "_Counting":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def push_plan(
    engine: "Engine", client: "RegistryClient", ref: Reference | str, plan: PushPlan, *, events: "EventBus | None" = None
) -> PushResult:
    """Send the blobs (in parallel), then the manifest; returns the pushed digest."""
    reference = ref if isinstance(ref, Reference) else parse_reference(ref)
    vertex = f"push {reference}"
    registry = canonical_registry(reference.domain)
    publish = events.publish if events is not None else None
    if publish is not None:
        from engine.progress.events import VertexStarted

        publish(VertexStarted(vertex, f"pushing {reference}"))
    started = time.time()
    last: dict[str, float] = {}
    lock = threading.Lock()

    def status(label: str, done: int, total: int, final: bool = False) -> None:
        if publish is None:
            return
        now = time.monotonic()
        with lock:
            if not final and now - last.get(label, 0.0) < STATUS_INTERVAL:
                return
            last[label] = now
        from engine.progress.events import VertexStatus

        publish(VertexStatus(vertex, label, done, total))

    def push_one(blob: PushBlob) -> tuple[str, str]:
        source = blob_source(engine, blob.digest)
        mount_from = None
        if source.startswith(registry + "/") and source[len(registry) + 1 :] != reference.path:
            mount_from = source[len(registry) + 1 :]
        label = blob.digest[:19]

        def opened() -> BinaryIO:
            return _Counting(blob.open(), lambda n: status(label, n, blob.size))  # type: ignore[return-value]

        outcome = client.push_blob(reference, blob.digest, blob.size, opened, mount_from=mount_from)
        status(f"{label} {outcome}", blob.size, blob.size, final=True)
        return blob.digest, outcome

    error = ""
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(PUSH_WORKERS, len(plan.blobs)))) as pool:
            outcomes = tuple(pool.map(push_one, plan.blobs))
        digest = client.put_manifest(reference, plan.manifest, plan.media_type)
    except ShipyardError as exc:
        error = exc.user_message()
        raise
    finally:
        if publish is not None:
            from engine.progress.events import VertexCompleted

            publish(VertexCompleted(vertex, f"pushing {reference}", time.time() - started, error))
    record_blob_source(engine, [b.digest for b in plan.blobs], f"{registry}/{reference.path}")
    return PushResult(reference, digest, len(plan.manifest), outcomes)


def push_stored(
    engine: "Engine",
    client: "RegistryClient",
    ref: Reference | str,
    manifest_digest: str,
    snapshot: int | None,
    *,
    events: "EventBus | None" = None,
) -> PushResult:
    """Push an image of the local store (by its manifest and snapshot) under `ref`."""
    from engine.layers import LayerBlobs

    blobs = LayerBlobs(engine)
    try:
        plan = plan_push(engine, blobs, engine.store.read(manifest_digest), snapshot)
    finally:
        blobs.close()
    return push_plan(engine, client, ref, plan, events=events)
