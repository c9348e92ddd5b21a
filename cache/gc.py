"""Garbage collection: prune the build cache by policy, and never what anything still uses.

What is kept, always (the *roots*):
- every image: its snapshot chain, its manifest, config and the blobs they list;
- every container: the layer directories it runs on (`lowers`) and its image's config;
- whatever a live process holds in its lease (`cache.leases`): snapshots it looked
  up, layer directories it is filling, blobs it wrote or found, temp files and mount
  points it made.

What may go: *cache records* (cache keys, grouped by the snapshot they name) by
policy, like `docker buildx prune`:
- by default only records no image shares (what images reference stays cached);
  with `all`, every record not in use;
- `until`: only records unused for longer than that;
- `keep_bytes`: least recently used first, only until the build cache fits.

Then everything no root and no remaining record reaches goes: snapshot rows, layer
rows and directories, blobs, the compressed variants of removed layers, memoized
checksums, COPY lineages (their hard-link sources), whole-build memos that name
removed records — and what crashes left: layer directories without a row, temp
files and mount points nobody holds, dead lease files, unheld step locks. Unused
cache-mount instances are records too (`cache_mounts`), with their own locks.

Order keeps a crash harmless: under the GC lock held exclusive, rows are deleted
first (one transaction), then blobs are unlinked; layer directories, which nothing
can reach once their rows are gone, are deleted after the lock is released. A
`kill -9` at any point leaves at most unreferenced files, which the next run removes.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import stat
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cache.flocks import is_locked
from cache.index import CacheIndex, ImageRow, LayerRow
from cache.leases import Leases, LeaseSet, sweep_step_locks
from engine.state import StateDir

if TYPE_CHECKING:
    from concurrent.futures import Future

    from cache.gcconfig import GcConfig

TEMP_GRACE_SECONDS = 3600.0
"""Temp entries nobody leases (other commands' scratch dirs) are removed only when older."""
BLOB_META_PREFIXES = ("registry.source:",)
"""`meta` rows keyed by a blob digest (engine.registry.pull.BLOB_SOURCE): dropped with the blob."""
CACHE_MOUNTS_DIR = "cachemounts"
CONTAINERS_DIR = "containers"


@dataclass(frozen=True)
class PrunePolicy:
    all: bool = False
    until: float | None = None
    """Only records unused for at least this many seconds."""
    keep_bytes: int | None = None
    """Stop once the build cache is no larger (least recently used records go first)."""
    cache_mounts: bool = True


@dataclass(frozen=True)
class PrunedRecord:
    id: str
    kind: str
    """"regular" (a cache record), "exec.cachemount", or "unreferenced" (what nothing reached)."""
    description: str
    size: int
    last_used: float


@dataclass(frozen=True)
class PruneReport:
    removed: tuple[PrunedRecord, ...]
    reclaimed: int
    in_use: int
    """Records left alone because a live process holds them."""


# --------------------------------------------------------------------------- measuring


def measure(path: Path | str) -> int:
    """Bytes on disk under `path` (du's way: allocated blocks; a hard-linked file counts
    its share, so layers sharing files by COPY reuse are not counted twice)."""
    total = 0
    stack = [str(path)]
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    total += st.st_blocks * 512
    if not stat.S_ISDIR(st.st_mode):
        return total
    while stack:
        current = stack.pop()
        try:
            it = os.scandir(current)
        except OSError:
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                size = st.st_blocks * 512
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    size //= st.st_nlink
                total += size
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    return total


def measure_new_layers(state: StateDir, index: CacheIndex, measured: "LayerSizer | None" = None) -> dict[int, int]:
    """Measure the layers not measured yet (layers never change once recorded); all sizes.

    `measured`: sizes a build already took in the background, as its layers appeared.
    """
    usage = index.layer_usage()
    known = measured.sizes() if measured is not None else {}
    new: dict[int, int] = {}
    for layer, _created in index.all_layers():
        if layer.id not in usage:
            new[layer.id] = known[layer.id] if layer.id in known else measure(state.layers / layer.dir)
    if new:
        index.set_layer_usage(new)
        usage.update(new)
    return usage


class LayerSizer:
    """Measures a build's new layers on a background thread while later steps run.

    The automatic GC after a build needs every layer's size; a big COPY layer takes
    tens of milliseconds to walk, which is paid at the very end of the build unless it
    overlaps with the steps that follow it. Layers never change once committed, so a
    size taken early is the size GC would take later.
    """

    def __init__(self, layers_dir: Path) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._layers_dir = layers_dir
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="layer-size")
        self._futures: dict[int, "Future[int]"] = {}

    def submit(self, layer_id: int, layer_dir: str) -> None:
        if layer_id not in self._futures:
            self._futures[layer_id] = self._pool.submit(measure, self._layers_dir / layer_dir)

    def sizes(self) -> dict[int, int]:
        """Every submitted layer's size (waits for those still being measured)."""
        return {layer_id: future.result() for layer_id, future in self._futures.items()}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def blob_files(state: StateDir) -> dict[str, int]:
    """digest → bytes of every file in the blob directory (invalid names keyed as they are)."""
    out: dict[str, int] = {}
    try:
        it = os.scandir(state.blobs)
    except FileNotFoundError:
        return out
    with it:
        for entry in it:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            name = entry.name
            key = "sha256:" + name if _is_hex64(name) else name
            out[key] = st.st_blocks * 512
    return out


def _is_hex64(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


# --------------------------------------------------------------------------- the store as a graph


@dataclass
class StoreModel:
    """Every record of the index, the blob files and the live leases, read at one moment."""

    state: StateDir
    snapshots: dict[int, tuple[int | None, int, float, float]]
    """id → (parent, layer id, created, last_used)"""
    layers: dict[int, LayerRow]
    layer_created: dict[int, float]
    keys: list[tuple[str, int | None, float, float, str]]
    images: list[ImageRow]
    container_layers: set[str]
    container_configs: set[str]
    running_container_configs: set[str]
    variants: list[tuple[str, str, str, int]]
    memos: list[tuple[str, str]]
    usage: dict[int, int]
    blobs: dict[str, int]
    leases: LeaseSet
    layer_by_dir: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, state: StateDir, index: CacheIndex, leases: LeaseSet) -> "StoreModel":
        layers: dict[int, LayerRow] = {}
        created: dict[int, float] = {}
        for row, when in index.all_layers():
            layers[row.id] = row
            created[row.id] = when
        container_layers: set[str] = set()
        configs: set[str] = set()
        running: set[str] = set()
        for container in index.list_containers():
            configs.add(container.image)
            if container.state == "running":
                running.add(container.image)
            try:
                lowers = json.loads(container.spec).get("lowers", [])
            except (ValueError, AttributeError):
                lowers = []
            for lower in lowers:
                if isinstance(lower, str):
                    container_layers.add(Path(lower).parent.name)
        model = cls(
            state=state,
            snapshots={sid: (parent, layer, c, u) for sid, parent, layer, c, u in index.all_snapshots()},
            layers=layers,
            layer_created=created,
            keys=index.all_keys(),
            images=index.list_images(),
            container_layers=container_layers,
            container_configs=configs,
            running_container_configs=running,
            variants=index.all_variants(),
            memos=index.all_memos(),
            usage=index.layer_usage(),
            blobs=blob_files(state),
            leases=leases,
        )
        model.layer_by_dir = {row.dir: lid for lid, row in layers.items()}
        return model

    def closure(self, roots: set[int]) -> set[int]:
        """The snapshots and all their ancestors."""
        out: set[int] = set()
        stack = [s for s in roots if s in self.snapshots]
        while stack:
            sid = stack.pop()
            if sid in out:
                continue
            out.add(sid)
            parent = self.snapshots[sid][0]
            if parent is not None and parent in self.snapshots and parent not in out:
                stack.append(parent)
        return out

    def image_snapshots(self, images: list[ImageRow] | None = None) -> set[int]:
        rows = self.images if images is None else images
        return self.closure({r.snapshot for r in rows if r.snapshot is not None})

    def image_blobs(self, images: list[ImageRow] | None = None) -> set[str]:
        """Manifests and configs of the images, and every blob their manifests list."""
        out: set[str] = set()
        for row in self.images if images is None else images:
            out.update((row.manifest, row.config))
            out.update(self._manifest_refs(row.manifest))
        return out

    def _manifest_refs(self, digest: str) -> set[str]:
        if digest not in self.blobs:
            return set()
        try:
            with open(self.state.blobs / digest.split(":", 1)[1], "rb") as f:
                doc = json.loads(f.read(4 << 20))
        except (OSError, ValueError):
            return set()
        refs: set[str] = set()
        if not isinstance(doc, dict):
            return refs
        for descriptor in [doc.get("config")] + list(doc.get("layers") or []) + list(doc.get("manifests") or []):
            if isinstance(descriptor, dict) and isinstance(descriptor.get("digest"), str):
                refs.add(descriptor["digest"])
        return refs

    def leased_layer_ids(self) -> set[int]:
        names = self.leases.layers | self.container_layers
        return {self.layer_by_dir[n] for n in names if n in self.layer_by_dir}

    def layer_bytes(self, layer_id: int) -> int:
        return self.usage.get(layer_id, 0)


@dataclass
class _Record:
    snapshot: int | None
    keys: list[str]
    created: float
    last_used: float
    description: str

    @property
    def id(self) -> str:
        return min(self.keys).split(":", 1)[-1][:12]


def cache_records(model: StoreModel) -> list[_Record]:
    """Cache keys grouped by the snapshot they name (a step's key and content key are one record)."""
    groups: dict[int | None, _Record] = {}
    for key, snapshot, created, last_used, description in model.keys:
        if snapshot is not None and snapshot not in model.snapshots:
            snapshot = None  # points nowhere (a check reports it); as a record it holds nothing
        record = groups.get(snapshot) if snapshot is not None else None
        if record is None:
            record = _Record(snapshot, [], created, last_used, description)
            groups[snapshot if snapshot is not None else -len(groups) - 1] = record
        record.keys.append(key)
        record.created = min(record.created, created)
        record.last_used = max(record.last_used, last_used)
        record.description = record.description or description
    return list(groups.values())


# --------------------------------------------------------------------------- deciding


@dataclass
class Plan:
    """What one collection removes (decided under the GC lock)."""

    records: list[_Record]
    record_sizes: dict[int, int]
    keys: set[str]
    snapshots: set[int]
    layers: set[int]
    blobs: set[str]
    variants: set[str]
    memos: set[str]
    meta: list[str]
    checksums: set[int]
    orphan_layer_dirs: list[str]
    stale_temps: list[Path]
    stale_mounts: list[Path]
    in_use: int
    garbage_bytes: int
    cache_mounts: list["CacheMountUsage"] = field(default_factory=list)


def plan_collection(
    model: StoreModel,
    policy: PrunePolicy,
    index: CacheIndex,
    now: float,
    mounts: list["CacheMountUsage"] | None = None,
) -> Plan:
    records = cache_records(model)
    leased_snaps = {s for s in model.leases.snapshots if s in model.snapshots}
    image_snaps = model.image_snapshots()
    container_layer_ids = model.leased_layer_ids()
    pinned = image_snaps | model.closure(leased_snaps)

    in_use = [r for r in records if r.snapshot is not None and r.snapshot in leased_snaps]
    candidates = [
        r
        for r in records
        if not (r.snapshot is not None and r.snapshot in leased_snaps)
        and (policy.all or r.snapshot is None or r.snapshot not in image_snaps)
        and (policy.until is None or r.last_used <= now - policy.until)
    ]
    mounts = mounts or []
    mount_candidates = [m for m in mounts if not m.in_use and (policy.until is None or m.last_used <= now - policy.until)]
    chosen, sizes, chosen_mounts = _choose(
        model, records, candidates, pinned, container_layer_ids, mounts, mount_candidates, policy.keep_bytes
    )

    removed_keys = {k for r in chosen for k in r.keys}
    kept_roots = set(pinned)
    kept_roots.update(r.snapshot for r in records if r.snapshot is not None and not set(r.keys) <= removed_keys)
    kept_snaps = model.closure(kept_roots)
    kept_layers = {model.snapshots[s][1] for s in kept_snaps} | container_layer_ids
    del_snaps = set(model.snapshots) - kept_snaps
    del_layers = set(model.layers) - kept_layers

    kept_keys = {k[0] for k in model.keys} - removed_keys
    del_memos: set[str] = set()
    memo_blobs: set[str] = set()
    for key, value in model.memos:
        try:
            memo = json.loads(value)
            steps = set(memo["step_keys"])
            snapshot = memo.get("snapshot")
            image = memo.get("image") or []
        except (ValueError, KeyError, TypeError):
            del_memos.add(key)
            continue
        if not steps <= kept_keys or (snapshot is not None and snapshot not in kept_snaps):
            del_memos.add(key)
        else:
            memo_blobs.update(d for d in image if isinstance(d, str))

    kept_diff_ids = {model.layers[lid].diff_id for lid in kept_layers if model.layers[lid].diff_id}
    kept_blobs = set(model.leases.blobs) | model.image_blobs() | model.container_configs | memo_blobs
    kept_blobs.update(model.layers[lid].blob for lid in kept_layers if model.layers[lid].blob)
    kept_blobs.update(digest for diff_id, _c, digest, _s in model.variants if diff_id in kept_diff_ids)
    del_blobs = set(model.blobs) - kept_blobs
    del_variants = {digest for diff_id, _c, digest, _s in model.variants if digest in del_blobs or digest not in model.blobs}

    meta = [
        key
        for prefix in BLOB_META_PREFIXES
        for key in index.meta_keys(prefix)
        if key[len(prefix) :] in del_blobs or key[len(prefix) :] not in model.blobs
    ]
    checksums = {s for s in index.checksum_snapshots() if s not in model.snapshots or s in del_snaps}

    kept_dirs = {model.layers[lid].dir for lid in kept_layers}
    orphans = [
        name
        for name in listdir_or_empty(model.state.layers)
        if name not in kept_dirs and name not in model.layer_by_dir and name not in model.leases.layers
    ]
    temps = _stale_temps(model, now)
    stale_mounts = _stale_mounts(model, now)
    garbage = sum(model.layer_bytes(lid) for lid in del_layers) - sum(sizes.values())
    garbage += sum(model.blobs[d] for d in del_blobs)
    garbage += sum(measure(path) for path in [model.state.layers / n for n in orphans] + temps + stale_mounts)
    return Plan(
        records=chosen,
        record_sizes=sizes,
        keys=removed_keys,
        snapshots=del_snaps,
        layers=del_layers,
        blobs=del_blobs,
        variants=del_variants,
        memos=del_memos,
        meta=meta,
        checksums=checksums,
        orphan_layer_dirs=orphans,
        stale_temps=temps,
        stale_mounts=stale_mounts,
        in_use=len(in_use),
        garbage_bytes=max(0, garbage),
        cache_mounts=chosen_mounts,
    )


def _choose(
    model: StoreModel,
    records: list[_Record],
    candidates: list[_Record],
    pinned: set[int],
    pinned_layers: set[int],
    mounts: list["CacheMountUsage"],
    mount_candidates: list["CacheMountUsage"],
    keep_bytes: int | None,
) -> tuple[list[_Record], dict[int, int], list["CacheMountUsage"]]:
    """The records to remove with the bytes each frees (by position), and the cache mounts.

    Reference counts over the snapshot forest: a record holds its snapshot, a snapshot
    its parent and its layer. Removing a record frees what drops to zero; removing a
    cache-mount instance frees its size. With `keep_bytes`, the least recently used
    candidates go until the build cache (records and cache mounts) fits.
    """
    live = model.closure({r.snapshot for r in records if r.snapshot is not None} | pinned)
    refs: dict[int, int] = defaultdict(int)
    layer_refs: dict[int, int] = defaultdict(int)
    for sid in live:
        parent, layer, _c, _u = model.snapshots[sid]
        if parent is not None and parent in live:
            refs[parent] += 1
        layer_refs[layer] += 1
    for sid in pinned:
        refs[sid] += 1
    for lid in pinned_layers:
        layer_refs[lid] += 1
    for r in records:
        if r.snapshot is not None:
            refs[r.snapshot] += 1

    held_layers = {model.snapshots[s][1] for s in model.closure(pinned)} | pinned_layers
    usage = sum(model.layer_bytes(lid) for lid in layer_refs if lid not in held_layers)
    usage += sum(m.size for m in mounts)

    def release(record: _Record) -> int:
        freed = 0
        sid = record.snapshot
        while sid is not None:
            refs[sid] -= 1
            if refs[sid] > 0:
                break
            parent, layer, _c, _u = model.snapshots[sid]
            layer_refs[layer] -= 1
            if layer_refs[layer] == 0:
                freed += model.layer_bytes(layer)
            sid = parent if parent is not None and parent in live else None
        return freed

    chosen: list[_Record] = []
    sizes: dict[int, int] = {}
    chosen_mounts: list[CacheMountUsage] = []
    items: list[tuple[float, int, _Record | CacheMountUsage]] = [(r.last_used, 0, r) for r in candidates]
    items += [(m.last_used, 1, m) for m in mount_candidates]
    for _used, _kind, item in sorted(items, key=lambda t: (t[0], t[1])):
        if keep_bytes is not None and usage <= keep_bytes:
            break
        if isinstance(item, _Record):
            freed = release(item)
            sizes[len(chosen)] = freed
            chosen.append(item)
        else:
            freed = item.size
            chosen_mounts.append(item)
        usage -= freed
    return chosen, sizes, chosen_mounts


def listdir_or_empty(path: Path) -> list[str]:
    """The names in `path`; none when it does not exist (yet, or any more)."""
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _age(path: Path, now: float) -> float:
    try:
        return now - os.lstat(path).st_mtime
    except OSError:
        return 0.0


def _stale_temps(model: StoreModel, now: float) -> list[Path]:
    """Blob temp files nobody leases (a killed writer's), and other scratch older than an hour."""
    out = []
    for name in listdir_or_empty(model.state.tmp):
        if name in model.leases.temps:
            continue
        path = model.state.tmp / name
        if name.startswith("blob-") or _age(path, now) > TEMP_GRACE_SECONDS:
            out.append(path)
    return out


def _mount_points() -> list[str]:
    try:
        with open("/proc/self/mountinfo") as handle:
            return [line.split()[4] for line in handle]
    except OSError:
        return []


def _stale_mounts(model: StoreModel, now: float) -> list[Path]:
    """Mount points and views of killed processes (their mounts died with their namespace)."""
    points = _mount_points()
    out = []
    for name in listdir_or_empty(model.state.mounts):
        if name.startswith("run-"):
            continue  # RUN staging dirs: engine.solver.mounts sweeps those of dead processes
        if name in model.leases.temps or name in model.leases.layers:
            continue
        path = model.state.mounts / name
        prefix = str(path)
        if any(p == prefix or p.startswith(prefix + "/") for p in points):
            continue
        known = name.startswith("view-") or (len(name) == 16 and all(c in "0123456789abcdef" for c in name))
        if known or _age(path, now) > TEMP_GRACE_SECONDS:
            out.append(path)
    return out


# --------------------------------------------------------------------------- doing it


def prune(
    state: StateDir,
    index: CacheIndex,
    policy: PrunePolicy,
    *,
    now: float | None = None,
    timeout: float = 60.0,
) -> PruneReport:
    """Collect once: decide and delete under the GC lock, then remove directories outside it."""
    now = time.time() if now is None else now
    measure_new_layers(state, index)
    mounts = cache_mount_instances(state) if policy.cache_mounts else []
    leases = Leases.of(state.root)
    trash: list[Path] = []
    with leases.exclusive(timeout):
        leases.sweep_dead()
        model = StoreModel.load(state, index, leases.live())
        plan = plan_collection(model, policy, index, now, mounts)
        index.remove_unused(
            keys=plan.keys,
            snapshots=plan.snapshots,
            layers=plan.layers,
            memos=plan.memos,
            variants=plan.variants,
            meta=plan.meta,
            checksums=plan.checksums,
        )
        for digest in plan.blobs:
            name = digest.split(":", 1)[1] if digest.startswith("sha256:") else digest
            try:
                os.unlink(state.blobs / name)
            except FileNotFoundError:
                pass
        for path in plan.stale_temps:
            _remove(path)
        trash.extend(state.layers / model.layers[lid].dir for lid in plan.layers)
        trash.extend(state.layers / name for name in plan.orphan_layer_dirs)
        trash.extend(plan.stale_mounts)
    sweep_step_locks(state.root)
    _sweep_run_dirs(state)
    for path in trash:
        _remove(path)
    removed = [
        PrunedRecord(r.id, "regular", r.description, plan.record_sizes.get(i, 0), r.last_used)
        for i, r in enumerate(plan.records)
    ]
    for instance in plan.cache_mounts:
        if _remove_instance(instance.path):
            removed.append(
                PrunedRecord(instance.path.parent.name[:12], "exec.cachemount", f"cache mount {instance.id}", instance.size, instance.last_used)
            )
    _sweep_cache_mount_trash(state)
    reclaimed = sum(r.size for r in removed) + plan.garbage_bytes
    return PruneReport(tuple(removed), reclaimed, plan.in_use)


def _remove(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _sweep_run_dirs(state: StateDir) -> None:
    try:
        from engine.solver.mounts import sweep_stale
    except ImportError:  # pragma: no cover - the solver is part of every install
        return
    sweep_stale(state.mounts)


# --------------------------------------------------------------------------- cache mounts


@dataclass(frozen=True)
class CacheMountUsage:
    id: str
    path: Path
    size: int
    last_used: float
    in_use: bool


def cache_mount_instances(state: StateDir, measure_size: bool = True) -> list[CacheMountUsage]:
    """Every instance of every `RUN --mount=type=cache` directory, and whether it is held now."""
    root = state.root / CACHE_MOUNTS_DIR
    out = []
    for base in listdir_or_empty(root):
        base_dir = root / base
        if not base_dir.is_dir():
            continue
        try:
            cache_id = json.loads((base_dir / "info.json").read_text()).get("id", base)
        except (OSError, ValueError, AttributeError):
            cache_id = base
        for name in listdir_or_empty(base_dir):
            path = base_dir / name
            if not name.isdigit() or not path.is_dir():
                continue
            lock = base_dir / f"{name}.lock"
            used = max(_mtime(path), _mtime(lock))
            out.append(CacheMountUsage(str(cache_id), path, measure(path) if measure_size else 0, used, is_locked(lock)))
    return out


def _mtime(path: Path) -> float:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return 0.0


def _sweep_cache_mount_trash(state: StateDir) -> None:
    for base in listdir_or_empty(state.root / CACHE_MOUNTS_DIR):
        for name in listdir_or_empty(state.root / CACHE_MOUNTS_DIR / base):
            if name.startswith("gc-"):
                _remove(state.root / CACHE_MOUNTS_DIR / base / name)  # a killed prune's trash


def _remove_instance(path: Path) -> bool:
    """Take the instance's lock (not blocking: one taken meanwhile is in use), then remove it."""
    lock = path.parent / f"{path.name}.lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # taken since we looked: in use
        trash = path.parent / f"gc-{secrets.token_hex(6)}"
        try:
            os.rename(path, trash)
        except OSError:
            return False
    finally:
        os.close(fd)
    shutil.rmtree(trash, ignore_errors=True)
    return True


# --------------------------------------------------------------------------- automatic collection


def auto_collect(
    state: StateDir,
    index: CacheIndex,
    config: "GcConfig | None" = None,
    *,
    now: float | None = None,
    timeout: float = 10.0,
    measured: LayerSizer | None = None,
) -> PruneReport | None:
    """After a build: apply the configured limits, BuildKit-style; None when within them.

    The quick test (sizes of all layers and blobs, the oldest record's last use) costs
    a few queries and a listing; only a state over a limit is collected. Like
    BuildKit's policy, the limits apply to build cache records (what no image
    shares); cache mounts are left to `prune`.
    """
    from cache.gcconfig import load_gc_config

    config = config or load_gc_config()
    if not config.enabled:
        return None
    now = time.time() if now is None else now
    limit = config.limit_bytes(state.root)
    usage = sum(measure_new_layers(state, index, measured).values()) + sum(blob_files(state).values())
    over = limit is not None and usage > limit
    count, oldest = index.cache_key_stats()
    expired = config.keep_duration is not None and count > 0 and oldest is not None and oldest < now - config.keep_duration
    if not over and not expired:
        return None
    removed: list[PrunedRecord] = []
    reclaimed = in_use = 0
    policies = []
    if expired:
        policies.append(PrunePolicy(until=config.keep_duration, cache_mounts=False))
    if over:
        policies.append(PrunePolicy(keep_bytes=limit, cache_mounts=False))
    for policy in policies:
        report = prune(state, index, policy, now=now, timeout=timeout)
        removed.extend(report.removed)
        reclaimed += report.reclaimed
        in_use = report.in_use
    return PruneReport(tuple(removed), reclaimed, in_use)


def collect_after_build(state: StateDir, index: CacheIndex, measured: LayerSizer | None = None) -> None:
    """BuildKit's automatic GC once a build or bake that ran steps is done and reported.

    Only after a full build (the memo path never pays for it); the build's own holds
    are released first, like BuildKit's refs when a solve ends. A GC that cannot run
    now (the state is busy, the config is wrong) never fails the build: it is logged
    and left for the next one.
    """
    import logging

    from engine.errors import ShipyardError

    log = logging.getLogger("shipyard.gc")
    index.leases.release()
    try:
        report = auto_collect(state, index, measured=measured)
    except ShipyardError as exc:
        log.warning("automatic garbage collection skipped: %s", exc)
        return
    if report is not None:
        log.info("automatic garbage collection: %d records removed, %d bytes reclaimed", len(report.removed), report.reclaimed)
