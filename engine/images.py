"""The local image store, and turning a build result into an image.

An image in the store is a name → (manifest, config) pair whose layers are snapshot
chains: the manifest lists uncompressed layers (digest = diff_id), and their tar
bytes are produced from the snapshots when an export needs them (`engine.layers`).
The image ID is the config digest, as in docker.

History times are derived, not read from the clock: a layer's entry takes the time
its snapshot was first built, an empty entry the time of the layer before it, the
image the time of its last entry. A rebuild that hits the cache therefore produces
the very same image digest.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from cache.index import ImageRow, LayerRow, SnapshotRow
from engine.errors import ImageNotFoundError, ShipyardError
from engine.layers import LayerBlobs
from engine.oci import mediatypes
from engine.oci.image import Descriptor, HistoryEntry, Image, Manifest, Timestamp
from engine.reference import parse_reference
from engine.solver.context import Engine
from frontends.base import ResolvedImage

if TYPE_CHECKING:
    from engine.progress.events import EventBus

EXPORTER_COMMENT = "buildkit.exporter.image.v0"
DOCKER_IMAGE_SCHEME = "docker-image://"
OCI_LAYOUT_SCHEME = "oci-layout://"


@dataclass(frozen=True)
class StoredImage:
    name: str
    manifest_digest: str
    config_digest: str
    image: Image
    snapshot: int | None
    created: float


@dataclass(frozen=True)
class BuiltImage:
    image: Image
    config_bytes: bytes
    config_digest: str
    manifest: Manifest
    manifest_bytes: bytes
    manifest_digest: str
    snapshot: int | None
    layers: tuple[LayerRow, ...]


class ImageStore:
    """Names → images, over the cache index and the content store. Also the frontends' resolver."""

    def __init__(
        self,
        engine: Engine,
        on_resolve: Callable[[str, str, str, bool], None] | None = None,
        *,
        events: EventBus | None = None,
        pull: bool = False,
    ) -> None:
        self.engine = engine
        self._on_resolve = on_resolve
        self.events = events
        """Where pull progress and warnings go (the build's event bus)."""
        self.pull = pull
        """Whether `resolve` may ask registries (see `engine.registry.pull.pull_if_needed`): the build's does."""
        self._remote: dict[str, str | None | ShipyardError] = {}

    def _load(self, row: ImageRow) -> StoredImage:
        config = self.engine.store.read(row.config)
        return StoredImage(row.name, row.manifest, row.config, Image.from_json(config), row.snapshot, row.created)

    def _find(self, ref: str) -> tuple[StoredImage | None, bool]:
        """(image, found by its name) — by name (docker's normalization), `name@digest`, or ID prefix."""
        if ref.startswith("sha256:") or (len(ref) >= 4 and all(c in "0123456789abcdef" for c in ref)):
            wanted = ref if ref.startswith("sha256:") else "sha256:" + ref
            rows = [r for r in self.engine.index.list_images() if r.config.startswith(wanted) or r.manifest == wanted]
            if len({r.config for r in rows}) > 1:
                raise ImageNotFoundError(f"image ID prefix {ref!r} is ambiguous: it matches several images")
            if rows:
                return self._load(rows[0]), False
        try:
            reference = parse_reference(ref)
        except ShipyardError:
            return None, False
        if reference.digest:
            for row in self.engine.index.images_by_manifest(reference.digest):
                return self._load(row), False
            return None, False
        row = self.engine.index.get_image(str(reference))
        return (self._load(row) if row else None), True

    def get(self, ref: str) -> StoredImage | None:
        return self._find(ref)[0]

    def resolve(self, ref: str) -> ResolvedImage:
        if ref.startswith(DOCKER_IMAGE_SCHEME):
            ref = ref[len(DOCKER_IMAGE_SCHEME) :]
        if ref.startswith(OCI_LAYOUT_SCHEME):
            return self._resolve_layout(ref)
        stored, by_name = self._find(ref)
        if self.pull:
            # Absent, or pulled earlier and its tag may have moved: ask the registry, once per
            # reference per build (the checks and the lowering both resolve). Local images and
            # present digest references never reach the network.
            if ref not in self._remote:
                from engine.registry.pull import pull_if_needed

                try:
                    self._remote[ref] = pull_if_needed(
                        self.engine, ref, stored.manifest_digest if stored else None, by_name, events=self.events
                    )
                except ShipyardError as exc:
                    self._remote[ref] = exc
            outcome = self._remote[ref]
            if isinstance(outcome, ShipyardError):
                raise outcome
            if outcome is not None:  # tracked remotely: never memoized, the next build asks again
                row = self.engine.index.get_image(outcome)
                stored, by_name = (self._load(row) if row is not None else None), False
        if stored is not None and self._on_resolve is not None:
            self._on_resolve(ref, stored.name, stored.manifest_digest, by_name)
        if stored is None:
            raise ImageNotFoundError(
                f"image {ref!r} is not in the local image store (add it with `shipyard import` or `shipyard load`)"
            )
        return ResolvedImage(stored.name, stored.manifest_digest, stored.image)

    def _resolve_layout(self, ref: str) -> ResolvedImage:
        """An image from an OCI layout directory (`--build-context x=oci-layout://PATH:TAG`), imported once."""
        import hashlib

        from engine.oci.importer import LayoutBlobs, import_image, parse_layout_ref, select_in_layout

        path, tag = parse_layout_ref(ref[len(OCI_LAYOUT_SCHEME) :])
        manifest_bytes = select_in_layout(path, tag)
        digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        name = f"{OCI_LAYOUT_SCHEME}{os.path.realpath(path)}{'@' + tag.lstrip('@') if tag.startswith('@') else (':' + tag if tag else '')}"
        rows = [row for row in self.engine.index.images_by_manifest(digest) if row.snapshot is not None]
        if rows:
            image = self._load(rows[0]).image
        else:
            imported = import_image(self.engine, manifest_bytes, LayoutBlobs(path))
            self.engine.index.put_image(name, imported.manifest_digest, imported.config_digest, imported.snapshot)
            image = imported.image
        if self._on_resolve is not None:
            self._on_resolve(ref, name, digest, False)  # a layout on disk can change: never memoized
        return ResolvedImage(name, digest, image)

    def list(self) -> list[StoredImage]:
        """The named images (not those kept only for an OCI-layout build context)."""
        return [self._load(row) for row in self.engine.index.list_images() if not row.name.startswith(OCI_LAYOUT_SCHEME)]

    def put(self, names: list[str], built: BuiltImage) -> list[str]:
        """Tag `built` with each name; returns the normalized names."""
        stored = []
        for name in names:
            normalized = str(parse_reference(name))
            self.engine.index.put_image(normalized, built.manifest_digest, built.config_digest, built.snapshot)
            stored.append(normalized)
        return stored


def _history_times(
    history: tuple[HistoryEntry, ...], chain: list[SnapshotRow], base_created: Timestamp | None
) -> tuple[HistoryEntry, ...]:
    """Fill in `created` for the entries this build added (those without one), BuildKit-style.

    A layer entry gets its snapshot's creation time; an empty entry gets the time of the
    build's previous layer entry, or of its next one when it comes before any.
    """
    layer_times = [Timestamp(int(row.created * 1_000_000_000)) for row in chain]
    entries = list(history)
    added = [entry.created is None for entry in entries]
    layer_index = 0
    for i, entry in enumerate(entries):
        if entry.empty_layer:
            continue
        if entry.created is None:
            time = layer_times[layer_index] if layer_index < len(layer_times) else base_created
            entries[i] = dataclasses.replace(entry, created=time)
        layer_index += 1
    added_layers = [i for i, entry in enumerate(entries) if added[i] and not entry.empty_layer]
    previous: Timestamp | None = None
    for i, entry in enumerate(entries):
        if not added[i]:
            continue
        if not entry.empty_layer:
            previous = entry.created
            continue
        following = next((entries[j].created for j in added_layers if j > i), None)
        entries[i] = dataclasses.replace(entry, created=previous or following or base_created)
    return tuple(entries)


def _normalize_history(history: tuple[HistoryEntry, ...], layer_count: int) -> tuple[HistoryEntry, ...]:
    """Make the non-empty history entries match the layers one to one (BuildKit's normalize)."""
    entries = list(history)
    non_empty = sum(1 for e in entries if not e.empty_layer)
    missing = layer_count - non_empty
    if missing > 0:
        entries = [HistoryEntry(comment=EXPORTER_COMMENT) for _ in range(missing)] + entries
    elif missing < 0:
        for i in range(len(entries) - 1, -1, -1):
            if missing == 0:
                break
            if not entries[i].empty_layer:
                entries[i] = dataclasses.replace(entries[i], empty_layer=True)
                missing += 1
    return tuple(entries)


def assemble_image(engine: Engine, blobs: LayerBlobs, spec: Image, snapshot: int | None) -> BuiltImage:
    """The image config and (uncompressed-layer) manifest for a snapshot chain."""
    chain = engine.index.chain(snapshot)
    layers = tuple(row.layer for row in chain)
    diffs = [blobs.diff(layer) for layer in layers]
    history = _normalize_history(spec.history, len(layers))
    base_created = next((e.created for e in reversed(spec.history) if e.created is not None), spec.created)
    history = _history_times(history, chain, base_created)
    created = history[-1].created if history else spec.created
    image = dataclasses.replace(spec, diff_ids=tuple(d for d, _ in diffs), history=history, created=created)
    config_bytes = image.to_json()
    config_digest = engine.store.put_bytes(config_bytes)
    manifest = Manifest(
        config=Descriptor(mediatypes.OCI_CONFIG, config_digest, len(config_bytes)),
        layers=tuple(Descriptor(mediatypes.OCI_LAYER, diff_id, size) for diff_id, size in diffs),
    )
    manifest_bytes = manifest.to_json()
    manifest_digest = engine.store.put_bytes(manifest_bytes)
    return BuiltImage(image, config_bytes, config_digest, manifest, manifest_bytes, manifest_digest, snapshot, layers)
