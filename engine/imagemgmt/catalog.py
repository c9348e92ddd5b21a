"""Images as docker presents them: one image per ID (its config digest), with names.

The index stores name → (manifest, config, snapshot) records. Docker's model is the
other way round — an image is an ID, and tags point at it — and `images`, `tag`,
`rmi`, `inspect` all speak that model, so this module groups the records by ID and
resolves what a user types (a name, `name@digest`, a full ID or an ID prefix) with
docker's precedence: a name first, then an ID, and an ID prefix that matches two
images is an error rather than a guess.

An image that has no name (a nameless image from `load`) is kept as a record whose
name is its own ID: it cannot collide with a name, because stored names are always
normalized (`docker.io/library/…`). Records made for `oci-layout://` build contexts
are the builder's private cache, not images a user manages: they are left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cache.index import ImageRow
from engine.errors import ImageNotFoundError, ShipyardError, UsageError
from engine.reference import Reference, parse_reference
from engine.solver.context import Engine

PRIVATE_PREFIX = "oci-layout://"
_FULL_ID = re.compile(r"^(?:sha256:)?([0-9a-f]{64})$")
_ID_PREFIX = re.compile(r"^(?:sha256:)?([0-9a-f]{1,63})$")


class AmbiguousImageError(ShipyardError):
    """An ID prefix that more than one image starts with."""


def is_nameless(row: ImageRow) -> bool:
    return row.name == row.config


@dataclass(frozen=True)
class ImageEntry:
    """One image (ID = config digest) and every record that points at it."""

    id: str
    rows: tuple[ImageRow, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(row.name for row in self.rows if not is_nameless(row)))

    @property
    def newest(self) -> ImageRow:
        """The most recently tagged record (its manifest stands for the image when asked by ID)."""
        return max(self.rows, key=lambda row: (row.created, row.name))

    @property
    def manifest(self) -> str:
        return self.newest.manifest

    @property
    def snapshot(self) -> int | None:
        return self.newest.snapshot

    @property
    def last_tagged(self) -> float:
        return self.newest.created


@dataclass(frozen=True)
class Match:
    """What a user's IMAGE argument named: the image, and the record (name) it went through."""

    entry: ImageEntry
    row: ImageRow
    by_name: bool
    reference: Reference | None = None


class ImageCatalog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def entries(self) -> list[ImageEntry]:
        grouped: dict[str, list[ImageRow]] = {}
        for row in self.engine.index.list_images():
            if not row.name.startswith(PRIVATE_PREFIX):
                grouped.setdefault(row.config, []).append(row)
        return [ImageEntry(image_id, tuple(rows)) for image_id, rows in grouped.items()]

    def entry(self, image_id: str) -> ImageEntry | None:
        for entry in self.entries():
            if entry.id == image_id:
                return entry
        return None

    def lookup(self, ref: str) -> Match:
        """Resolve IMAGE as docker does; ImageNotFoundError or AmbiguousImageError otherwise."""
        full = _FULL_ID.match(ref)
        if full:
            entry = self.entry("sha256:" + full.group(1))
            if entry is None:
                raise ImageNotFoundError(f"No such image: {ref}")
            return Match(entry, entry.newest, False)
        try:
            reference = parse_reference(ref)
        except UsageError:
            reference = None
            if not _ID_PREFIX.match(ref):
                raise
        if reference is not None and reference.digest:
            return self._by_digest(ref, reference)
        if reference is not None:
            row = self.engine.index.get_image(str(reference))
            if row is not None and not row.name.startswith(PRIVATE_PREFIX):
                entry = self.entry(row.config)
                assert entry is not None
                return Match(entry, row, True, reference)
        prefix = _ID_PREFIX.match(ref)
        if prefix:
            wanted = "sha256:" + prefix.group(1)
            found = [entry for entry in self.entries() if entry.id.startswith(wanted)]
            if len(found) > 1:
                raise AmbiguousImageError(
                    f"image ID prefix {ref!r} is ambiguous: it matches {len(found)} images (give more digits)"
                )
            if found:
                return Match(found[0], found[0].newest, False)
        raise ImageNotFoundError(f"No such image: {ref}")

    def _by_digest(self, ref: str, reference: Reference) -> Match:
        rows = [r for r in self.engine.index.images_by_manifest(reference.digest) if not r.name.startswith(PRIVATE_PREFIX)]
        same_repo = [r for r in rows if not is_nameless(r) and parse_reference(r.name).repository == reference.repository]
        chosen = (same_repo or rows or [None])[0]
        if chosen is None:
            raise ImageNotFoundError(f"No such image: {ref}")
        entry = self.entry(chosen.config)
        assert entry is not None
        return Match(entry, chosen, False, reference)

    # ------------------------------------------------------------------ changes

    def tag(self, source: ImageRow, target: str) -> str:
        """Point `target` at the image of `source`; returns the normalized name."""
        reference = parse_reference(target)
        if reference.digest:
            raise UsageError(f"refusing to create a tag with a digest reference: {target}")
        name = str(reference)
        self.engine.index.put_image(name, source.manifest, source.config, source.snapshot)
        return name

    def keep_nameless(self, row: ImageRow) -> None:
        """Record an image that has no name (so it stays listed and addressable by ID)."""
        self.engine.index.put_image(row.config, row.manifest, row.config, row.snapshot)

    def untag(self, name: str) -> None:
        self.engine.index.delete_image(name)

    def delete(self, image_id: str) -> None:
        """Forget every record of the image (its data stays until garbage collection)."""
        self.engine.index.delete_images_of(image_id, PRIVATE_PREFIX)
