"""`shipyard system df`: what the state directory holds, by kind, as docker reports it.

Sizes come from the same store model GC decides with (`cache.gc.StoreModel`), read
under the GC lock, so a number df shows as reclaimable is what `prune` would free:
images (and what running containers use of them), containers' writable layers,
build-cache records no image shares, and `RUN --mount=type=cache` directories.
"""

from __future__ import annotations

from dataclasses import dataclass

from cache.gc import (
    CONTAINERS_DIR,
    StoreModel,
    cache_mount_instances,
    cache_records,
    listdir_or_empty,
    measure,
    measure_new_layers,
)
from cache.index import CacheIndex, ImageRow
from cache.leases import Leases
from engine.state import StateDir


@dataclass(frozen=True)
class UsageSummary:
    """One line of `system df`: docker's TYPE, TOTAL, ACTIVE, SIZE, RECLAIMABLE."""

    kind: str
    total: int
    active: int
    size: int
    reclaimable: int


@dataclass(frozen=True)
class CacheRecordInfo:
    """One build-cache record, for `system df -v`."""

    id: str
    kind: str
    description: str
    size: int
    created: float
    last_used: float
    shared: bool
    in_use: bool


@dataclass(frozen=True)
class DiskUsage:
    summaries: tuple[UsageSummary, ...]
    records: tuple[CacheRecordInfo, ...]


def disk_usage(state: StateDir, index: CacheIndex) -> DiskUsage:
    """Usage by kind: images, containers, build cache, cache mounts (like `docker system df`)."""
    measure_new_layers(state, index)
    mounts = cache_mount_instances(state)
    leases = Leases.of(state.root)
    with leases.guard():  # one consistent moment: no collection runs meanwhile
        model = StoreModel.load(state, index, leases.live())

    def layer_set_bytes(layer_ids: set[int]) -> int:
        return sum(model.layer_bytes(lid) for lid in layer_ids)

    def blob_bytes(digests: set[str]) -> int:
        return sum(model.blobs.get(d, 0) for d in digests)

    def blobs_of(layer_ids: set[int], images: list[ImageRow]) -> set[str]:
        diff_ids = {model.layers[lid].diff_id for lid in layer_ids if model.layers[lid].diff_id}
        out = model.image_blobs(images)
        out.update(model.layers[lid].blob for lid in layer_ids if model.layers[lid].blob)
        out.update(digest for diff_id, _c, digest, _s in model.variants if diff_id in diff_ids)
        return out & set(model.blobs)

    image_layers = {model.snapshots[s][1] for s in model.image_snapshots()}
    image_blobs = blobs_of(image_layers, model.images)
    active_images = [r for r in model.images if r.config in model.container_configs]
    active_layers = {model.snapshots[s][1] for s in model.image_snapshots(active_images)}
    active_layers |= {model.layer_by_dir[n] for n in model.container_layers if n in model.layer_by_dir}
    active_bytes = layer_set_bytes(active_layers & image_layers) + blob_bytes(blobs_of(active_layers, active_images))
    images_size = layer_set_bytes(image_layers) + blob_bytes(image_blobs)
    images = UsageSummary(
        "Images",
        len({r.config for r in model.images}),
        len({r.config for r in active_images}),
        images_size,
        max(0, images_size - active_bytes),
    )

    containers_dir = state.root / CONTAINERS_DIR
    container_sizes: dict[str, int] = {name: measure(containers_dir / name) for name in listdir_or_empty(containers_dir)}
    running = 0
    running_bytes = 0
    for row in index.list_containers():
        if row.state == "running":
            running += 1
            running_bytes += container_sizes.get(row.id, 0)
    containers_size = sum(container_sizes.values())
    containers = UsageSummary(
        "Containers", len(index.list_containers()), running, containers_size, containers_size - running_bytes
    )

    records = cache_records(model)
    image_snaps = model.image_snapshots()
    leased = set(model.leases.snapshots)
    held_layers = image_layers | model.leased_layer_ids()
    cache_layers = set(model.layers) - held_layers
    in_use_layers = {model.snapshots[s][1] for s in model.closure(leased & set(model.snapshots))} - image_layers
    in_use_layers |= {model.layer_by_dir[n] for n in model.leases.layers if n in model.layer_by_dir} - image_layers
    cache_blobs = set(model.blobs) - image_blobs - model.container_configs
    orphan_bytes = sum(
        measure(state.layers / name) for name in listdir_or_empty(state.layers) if name not in model.layer_by_dir and name not in model.leases.layers
    )
    cache_size = layer_set_bytes(cache_layers) + blob_bytes(cache_blobs) + orphan_bytes
    in_use_bytes = layer_set_bytes(in_use_layers) + blob_bytes(cache_blobs & set(model.leases.blobs))
    infos = []
    for r in records:
        layer = model.snapshots[r.snapshot][1] if r.snapshot is not None else None
        infos.append(
            CacheRecordInfo(
                r.id,
                "regular",
                r.description,
                model.layer_bytes(layer) if layer is not None else 0,
                r.created,
                r.last_used,
                r.snapshot in image_snaps,
                r.snapshot in leased,
            )
        )
    cache = UsageSummary(
        "Build Cache", len(records), sum(1 for i in infos if i.in_use), cache_size, max(0, cache_size - in_use_bytes)
    )
    for m in mounts:
        infos.append(CacheRecordInfo(m.path.parent.name[:12], "exec.cachemount", f"cache mount {m.id}", m.size, m.last_used, m.last_used, False, m.in_use))
    mounts_size = sum(m.size for m in mounts)
    cache_mounts = UsageSummary(
        "Cache Mounts",
        len(mounts),
        sum(1 for m in mounts if m.in_use),
        mounts_size,
        sum(m.size for m in mounts if not m.in_use),
    )
    return DiskUsage((images, containers, cache, cache_mounts), tuple(infos))
