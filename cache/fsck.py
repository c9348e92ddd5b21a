"""`shipyard system check`: verify the whole state directory, and repair what is broken.

Checked: SQLite's own integrity and every foreign key; every blob rehashes to its
name; every layer row has its directory, and its content still produces its diff_id
(a layer that came as a blob: that blob decompresses to it); every snapshot chain
ends; every image has its manifest and config, and its config lists the diff_ids of
its snapshot chain; every compressed variant, memo and container points at things
that exist.

Findings are *errors* (something that would make a build, an export or a `run`
fail or lie) or *dangling* (garbage a crash or an interruption left: a layer
directory without a row, a temp file, a mount point or lease nobody holds, a
snapshot nothing references) — harmless, and what `shipyard prune` removes anyway.

`--repair` removes what is broken, then the garbage: a corrupt blob is deleted; a
layer that lost its directory or changed is removed with every snapshot built on
it, the cache records naming them and the images using them (an image that cannot
be exported correctly is worse than none: rebuild or pull it again); stale rows
are dropped. Containers are reported, never removed (`shipyard rm` does that).

The check holds the GC lock shared, so no collection runs meanwhile (builds go on);
a repair holds it exclusive from the check to the last removal.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cache.gc import (
    PrunePolicy,
    StoreModel,
    _stale_mounts,
    _stale_temps,
    blob_files,
    listdir_or_empty,
    prune,
)
from cache.index import CacheIndex, LayerRow
from cache.leases import Leases
from engine.state import StateDir

ERROR = "error"
DANGLING = "dangling"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Finding:
    severity: str
    """ERROR (broken) or DANGLING (garbage)."""
    kind: str
    subject: str
    message: str

    def line(self) -> str:
        return f"{self.severity}: {self.kind} {self.subject}: {self.message}"


@dataclass
class CheckReport:
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    # What a repair acts on (filled by the check):
    bad_blobs: set[str] = field(default_factory=set)
    bad_layers: set[int] = field(default_factory=set)
    bad_images: set[str] = field(default_factory=set)
    stale_variants: set[str] = field(default_factory=set)
    stale_memos: set[str] = field(default_factory=set)
    stale_checksums: set[int] = field(default_factory=set)
    index_corrupt: bool = False

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def dangling(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == DANGLING]

    def add(self, severity: str, kind: str, subject: str, message: str) -> None:
        self.findings.append(Finding(severity, kind, subject, message))


def check(state: StateDir, index: CacheIndex, *, verify_content: bool = True) -> CheckReport:
    """Verify everything (holding the GC lock shared); nothing is changed."""
    leases = Leases.of(state.root)
    with leases.guard():
        return _check(state, index, leases, verify_content)


def repair(state: StateDir, index: CacheIndex, *, verify_content: bool = True, timeout: float = 60.0) -> CheckReport:
    """Check under the exclusive GC lock and remove what is broken, then collect the garbage.

    Returns the report of what was found (and so removed).
    """
    leases = Leases.of(state.root)
    with leases.exclusive(timeout):
        report = _check(state, index, leases, verify_content)
        if report.index_corrupt:
            index.close()
            aside = _move_index_aside(state)
            report.add(ERROR, "index", str(state.index_db), f"moved aside to {aside}; the state starts cold")
            return report
        _remove_broken(state, index, report)
    # Everything the removals left unreferenced, and what crashes left behind. No cache
    # record is chosen (the limit is never reached), so only garbage goes.
    prune(state, index, PrunePolicy(keep_bytes=1 << 62, cache_mounts=False), timeout=timeout)
    return report


# --------------------------------------------------------------------------- checking


def _check(state: StateDir, index: CacheIndex, leases: Leases, verify_content: bool) -> CheckReport:
    report = CheckReport()
    problems = index.integrity_problems()
    for problem in problems:
        report.add(ERROR, "index", str(state.index_db), problem)
    if any("refers to a missing" not in p for p in problems):
        report.index_corrupt = True
        return report
    live = leases.live()
    model = StoreModel.load(state, index, live)
    _check_blobs(state, model, report, verify_content)
    _check_layers(state, model, report, verify_content)
    _check_snapshots(model, report)
    _check_images(state, model, report)
    _check_rows(state, model, index, report)
    _check_leftovers(state, model, report)
    report.counts = {
        "blobs": len(model.blobs),
        "layers": len(model.layers),
        "snapshots": len(model.snapshots),
        "cache records": len(model.keys),
        "images": len(model.images),
    }
    return report


def _check_blobs(state: StateDir, model: StoreModel, report: CheckReport, verify: bool) -> None:
    for digest in sorted(model.blobs):
        if not digest.startswith("sha256:"):
            report.add(DANGLING, "blob", digest, "not named by a sha256 digest")
            continue
        if not verify:
            continue
        path = state.blobs / digest.split(":", 1)[1]
        hasher = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    hasher.update(chunk)
        except FileNotFoundError:
            continue  # removed meanwhile by its (leased) writer's own cleanup
        if "sha256:" + hasher.hexdigest() != digest:
            report.bad_blobs.add(digest)
            report.add(ERROR, "blob", digest, f"content does not match its digest (it hashes to sha256:{hasher.hexdigest()})")


def _check_layers(state: StateDir, model: StoreModel, report: CheckReport, verify: bool) -> None:
    for lid, layer in sorted(model.layers.items()):
        fs = state.layers / layer.dir / "fs"
        if not fs.is_dir():
            report.bad_layers.add(lid)
            report.add(ERROR, "layer", layer.dir, f"directory {fs} is missing")
            continue
        if layer.blob:
            if layer.blob not in model.blobs:
                report.bad_layers.add(lid)
                report.add(ERROR, "layer", layer.dir, f"its original blob {layer.blob} is missing")
                continue
            if layer.blob in report.bad_blobs:
                report.bad_layers.add(lid)
                report.add(ERROR, "layer", layer.dir, f"its original blob {layer.blob} is corrupt")
                continue
            if verify and layer.diff_id:
                got = _blob_diff_id(state, layer.blob)
                if got != layer.diff_id:
                    report.bad_layers.add(lid)
                    report.add(ERROR, "layer", layer.dir, f"its blob decompresses to {got}, recorded {layer.diff_id}")
            continue
        if verify and layer.diff_id:
            got = _dir_diff_id(str(fs), layer)
            if got != layer.diff_id:
                report.bad_layers.add(lid)
                report.add(ERROR, "layer", layer.dir, f"content changed on disk: its tar is {got}, recorded {layer.diff_id}")


def _blob_diff_id(state: StateDir, digest: str) -> str:
    from engine.errors import ShipyardError
    from engine.oci.compress import decompress_stream

    hasher = hashlib.sha256()
    try:
        with open(state.blobs / digest.split(":", 1)[1], "rb") as raw, decompress_stream(raw) as plain:
            while chunk := plain.read(_CHUNK):
                hasher.update(chunk)
    except (OSError, ShipyardError, EOFError, ValueError) as exc:
        return f"(unreadable: {exc})"
    return "sha256:" + hasher.hexdigest()


def _dir_diff_id(path: str, layer: LayerRow) -> str:
    from cache.content_store import HashingWriter
    from engine.errors import ShipyardError
    from engine.fs.layertar import write_layer_tar

    hasher = HashingWriter()
    try:
        write_layer_tar(path, hasher, whiteouts="overlay" if layer.format == "overlay" else "oci")  # type: ignore[arg-type]
    except (OSError, ShipyardError) as exc:
        return f"(unreadable: {exc})"
    return hasher.digest


def _check_snapshots(model: StoreModel, report: CheckReport) -> None:
    for sid in sorted(model.snapshots):
        seen = set()
        current: int | None = sid
        while current is not None:
            if current in seen:
                report.add(ERROR, "snapshot", str(sid), "its parent chain loops")
                break
            seen.add(current)
            row = model.snapshots.get(current)
            if row is None:
                report.add(ERROR, "snapshot", str(sid), f"its chain names a missing snapshot {current}")
                break
            if row[1] not in model.layers:
                report.add(ERROR, "snapshot", str(current), f"its layer {row[1]} is missing")
                break
            current = row[0]
    referenced = model.image_snapshots() | model.closure({k[1] for k in model.keys if k[1] is not None})
    referenced |= model.closure(set(model.leases.snapshots))
    unreferenced = set(model.snapshots) - referenced
    if unreferenced:
        report.add(DANGLING, "snapshot", f"{len(unreferenced)} rows", "nothing references them (prune removes them)")


def _check_images(state: StateDir, model: StoreModel, report: CheckReport) -> None:
    for row in model.images:
        broken = ""
        for what, digest in (("manifest", row.manifest), ("config", row.config)):
            if digest not in model.blobs:
                broken = broken or f"its {what} {digest} is missing"
            elif digest in report.bad_blobs:
                broken = broken or f"its {what} {digest} is corrupt"
        if not broken:
            broken = _image_layers_problem(state, model, row)
        if broken:
            report.bad_images.add(row.name)
            report.add(ERROR, "image", row.name, broken)


def _image_layers_problem(state: StateDir, model: StoreModel, row) -> str:  # type: ignore[no-untyped-def]
    try:
        with open(state.blobs / row.config.split(":", 1)[1], "rb") as f:
            config = json.loads(f.read())
        diff_ids = list(config.get("rootfs", {}).get("diff_ids", []))
    except (OSError, ValueError, AttributeError):
        return "its config is not valid JSON"
    chain: list[LayerRow] = []
    current = row.snapshot
    while current is not None and current in model.snapshots and len(chain) <= len(model.snapshots):
        parent, layer, _c, _u = model.snapshots[current]
        if layer in model.layers:
            chain.append(model.layers[layer])
        current = parent
    chain.reverse()
    if len(chain) != len(diff_ids):
        return f"its config lists {len(diff_ids)} layers, its snapshot chain has {len(chain)}"
    for i, (layer, diff_id) in enumerate(zip(chain, diff_ids)):
        if layer.diff_id and layer.diff_id != diff_id:
            return f"layer {i + 1} is {layer.diff_id}, its config says {diff_id}"
    return ""


def _check_rows(state: StateDir, model: StoreModel, index: CacheIndex, report: CheckReport) -> None:
    for _diff_id, _compression, digest, _size in model.variants:
        if digest not in model.blobs or digest in report.bad_blobs:
            report.stale_variants.add(digest)
            report.add(DANGLING, "variant", digest, "a compressed layer blob that is gone (made again when needed)")
    for snapshot in index.checksum_snapshots():
        if snapshot not in model.snapshots:
            report.stale_checksums.add(snapshot)
    if report.stale_checksums:
        report.add(DANGLING, "checksums", f"{len(report.stale_checksums)} snapshots", "memoized checksums of removed snapshots")
    for key, value in model.memos:
        try:
            memo = json.loads(value)
            snapshot = memo.get("snapshot")
            image = [d for d in (memo.get("image") or []) if isinstance(d, str)]
        except (ValueError, AttributeError):
            report.stale_memos.add(key)
            report.add(ERROR, "memo", key, "not valid JSON")
            continue
        if snapshot is not None and snapshot not in model.snapshots:
            report.stale_memos.add(key)
            report.add(DANGLING, "memo", key, f"names a removed snapshot {snapshot}")
        missing = [d for d in image if d not in model.blobs or d in report.bad_blobs]
        if missing:
            report.stale_memos.add(key)
            report.add(ERROR, "memo", key, f"a rebuild would name an image whose blob {missing[0]} is gone")
    for container in index.list_containers():
        try:
            lowers = json.loads(container.spec).get("lowers", [])
        except (ValueError, AttributeError):
            lowers = []
        for lower in lowers:
            if isinstance(lower, str) and not os.path.isdir(lower):
                report.add(ERROR, "container", container.name, f"its layer {lower} is missing (remove it with `shipyard rm`)")
                break


def _check_leftovers(state: StateDir, model: StoreModel, report: CheckReport) -> None:
    import time

    now = time.time()
    for name in sorted(listdir_or_empty(state.layers)):
        if name not in model.layer_by_dir and name not in model.leases.layers:
            report.add(DANGLING, "layer directory", name, "has no index row (left by an interrupted step)")
    for path in _stale_temps(model, now):
        report.add(DANGLING, "temp", path.name, "a temp file nobody is writing")
    for path in _stale_mounts(model, now):
        report.add(DANGLING, "mount point", path.name, "left by a process that is gone")
    leases_dir = state.root / "leases"
    dead = [name for name in listdir_or_empty(leases_dir) if name.endswith(".lease") and (leases_dir / name) not in _live_paths(state)]
    if dead:
        report.add(DANGLING, "lease", f"{len(dead)} files", "of processes that are gone")


def _live_paths(state: StateDir) -> set[Path]:
    import fcntl

    from cache.flocks import is_locked

    leases = Leases.of(state.root)
    out = set()
    for name in listdir_or_empty(state.root / "leases"):
        path = state.root / "leases" / name
        if path == leases.lease_path or is_locked(path, fcntl.LOCK_SH):
            out.add(path)
    return out


# --------------------------------------------------------------------------- repairing


def _remove_broken(state: StateDir, index: CacheIndex, report: CheckReport) -> None:
    """Delete broken blobs, broken layers with what stands on them, broken images, stale rows."""
    model = StoreModel.load(state, index, Leases.of(state.root).live())
    bad_snaps = {sid for sid, (_p, layer, _c, _u) in model.snapshots.items() if layer in report.bad_layers}
    changed = True
    while changed:  # everything built on a broken snapshot is broken too
        changed = False
        for sid, (parent, _layer, _c, _u) in model.snapshots.items():
            if sid not in bad_snaps and parent in bad_snaps:
                bad_snaps.add(sid)
                changed = True
    bad_images = set(report.bad_images) | {r.name for r in model.images if r.snapshot in bad_snaps}
    keys = {k[0] for k in model.keys if k[1] in bad_snaps}
    memos = set(report.stale_memos)
    for key, value in model.memos:
        try:
            memo = json.loads(value)
        except ValueError:
            memos.add(key)
            continue
        if memo.get("snapshot") in bad_snaps or set(memo.get("step_keys", [])) & keys:
            memos.add(key)
    layers = set(report.bad_layers) | {model.snapshots[s][1] for s in bad_snaps}
    layers = {lid for lid in layers if not any(model.snapshots[s][1] == lid for s in set(model.snapshots) - bad_snaps)}
    index.remove_unused(
        images=bad_images,
        keys=keys,
        memos=memos,
        snapshots=bad_snaps,
        layers=layers,
        variants=report.stale_variants,
        checksums=report.stale_checksums,
    )
    for digest in report.bad_blobs:
        try:
            os.unlink(state.blobs / digest.split(":", 1)[1])
        except FileNotFoundError:
            pass
    import shutil

    for lid in layers:
        shutil.rmtree(state.layers / model.layers[lid].dir, ignore_errors=True)


def _move_index_aside(state: StateDir) -> str:
    import time

    aside = f"{state.index_db}.corrupt-{int(time.time())}"
    for suffix in ("", "-wal", "-shm"):
        try:
            os.replace(f"{state.index_db}{suffix}", aside + suffix)
        except FileNotFoundError:
            pass
    return aside


__all__ = ["CheckReport", "Finding", "check", "repair", "blob_files"]
