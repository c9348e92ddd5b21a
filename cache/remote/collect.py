"""Which cache records a build exports, and the cache config describing them.

mode=min exports the records whose result is part of the final image: every step of
the final stage (its result is a prefix of the image's layer chain), not the other
stages. mode=max exports every step's record. Records are looked up in the local
index by key, so a fully cached build (whose steps below the last hit never ran
and were never loaded) exports exactly what a cold build would; keys found only in
an imported cache are exported too (their layers fetched as blobs, never unpacked),
so a cache re-exported by a build that imported it loses nothing, generation after
generation.

Layer blobs are the compressed blobs `LayerBlobs` keeps per layer (made once, in
parallel here, and reused by later exports and pushes).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterable

from cache.index import LayerRow, SnapshotRow
from cache.remote.cacheconfig import CacheConfig, CacheEntry, CacheLayer
from engine.layers import LayerBlobs
from engine.oci import mediatypes
from engine.solver.context import Engine

if TYPE_CHECKING:
    from cache.remote.imports import ImportedCaches

COMPRESS_WORKERS = 4


@dataclass(frozen=True)
class ResultRecord:
    """A cache key and its result: a local snapshot chain (None: empty), then layers only an imported cache has."""

    key: str
    snapshot: int | None
    tail: tuple[CacheLayer, ...] = ()


class _Chains:
    """Snapshot rows by id, each read from the index once however many chains share it."""

    def __init__(self, engine: Engine) -> None:
        self.index = engine.index
        self.rows: dict[int, SnapshotRow] = {}

    def chain(self, snapshot: int | None) -> list[SnapshotRow]:
        out: list[SnapshotRow] = []
        current = snapshot
        while current is not None:
            row = self.rows.get(current)
            if row is None:
                row = self.rows[current] = self.index.snapshot(current)
            out.append(row)
            current = row.parent
        out.reverse()
        return out


def collect_records(
    engine: Engine, keys: Iterable[str], target_snapshot: int | None, mode: str, imported: "ImportedCaches | None" = None
) -> list[ResultRecord]:
    """The records among `keys` to export, sorted by key (deterministic output)."""
    wanted = sorted(set(keys))
    found = engine.index.lookup(wanted)
    by_key = {key: ResultRecord(key, rec.snapshot) for key, rec in found.items()}
    if imported is not None:
        for key, (snapshot, tail) in imported.known_chains([k for k in wanted if k not in found]).items():
            by_key[key] = ResultRecord(key, snapshot, tail)
        for record in list(by_key.values()):
            # keys an imported cache has for the same result (a step's content key, when only
            # its definition key was asked): carried along, so nothing is lost on re-export
            for alias in imported.aliases(record.key):
                by_key.setdefault(alias, replace(record, key=alias))
    records = sorted(by_key.values(), key=lambda r: r.key)
    if mode == "max":
        return records
    in_image = {row.id for row in engine.index.chain(target_snapshot)}
    return [r for r in records if not r.tail and (r.snapshot is None or r.snapshot in in_image)]


def build_config(
    engine: Engine,
    blobs: LayerBlobs,
    records: list[ResultRecord],
    compression: str = "gzip",
    base_snapshots: frozenset[int] = frozenset(),
) -> CacheConfig:
    """A cache config whose layers carry compressed blobs (in the content store: a record's
    `tail` layers must have been fetched there first)."""
    chains = _Chains(engine)
    entry_of: dict[object, int] = {}  # snapshot id, or (parent entry, blob) for a remote layer
    ordered: list[SnapshotRow | CacheLayer] = []
    tops: list[int] = []
    for record in records:
        top = -1
        for row in chains.chain(record.snapshot):
            if row.id not in entry_of:
                entry_of[row.id] = len(ordered)
                ordered.append(row)
            top = entry_of[row.id]
        for layer in record.tail:
            ident = (top, layer.blob)
            if ident not in entry_of:
                entry_of[ident] = len(ordered)
                ordered.append(replace(layer, parent=top))
            top = entry_of[ident]
        tops.append(top)
    unique: dict[int, LayerRow] = {row.layer.id: row.layer for row in ordered if isinstance(row, SnapshotRow)}
    media_type = mediatypes.layer_media_type(compression, oci=True)  # type: ignore[arg-type]

    def made(layer: LayerRow) -> tuple[str, str, int]:
        diff_id, _ = blobs.diff(layer)
        digest, size = blobs.compressed(layer, compression)
        return diff_id, digest, size

    with ThreadPoolExecutor(max_workers=max(1, min(COMPRESS_WORKERS, len(unique)))) as pool:
        by_layer = dict(zip(unique, pool.map(made, unique.values())))
    layers = []
    for row in ordered:
        if isinstance(row, CacheLayer):
            layers.append(row)
            continue
        diff_id, digest, size = by_layer[row.layer.id]
        parent = entry_of[row.parent] if row.parent is not None else -1
        layers.append(CacheLayer(diff_id, _created(row, base_snapshots), parent, digest, size, media_type))
    entries = tuple(CacheEntry(r.key, top) for r, top in zip(records, tops))
    return CacheConfig(tuple(layers), entries)


def build_inline_config(
    engine: Engine,
    blobs: LayerBlobs,
    records: list[ResultRecord],
    image_chain: list[SnapshotRow],
    base_snapshots: frozenset[int] = frozenset(),
) -> CacheConfig:
    """Inline cache: layer i is the image's layer i; only records inside the image's chain."""
    position = {row.id: i for i, row in enumerate(image_chain)}
    layers = tuple(
        CacheLayer(blobs.diff(row.layer)[0], _created(row, base_snapshots), i - 1) for i, row in enumerate(image_chain)
    )
    entries = tuple(
        CacheEntry(r.key, position[r.snapshot] if r.snapshot is not None else -1)
        for r in records
        if r.snapshot is None or r.snapshot in position
    )
    return CacheConfig(layers, entries)


def _created(row: SnapshotRow, base_snapshots: frozenset[int]) -> float:
    """A built layer's creation time (image history is made from it); 0 for a base image's layers.

    A base image's history carries its own times, so its snapshots' local creation
    times (when this machine happened to unpack it) mean nothing: leaving them out
    makes the cache config the same on every machine that builds the same thing.
    """
    return 0.0 if row.id in base_snapshots else row.created
