"""Skip records: what the last build of each target proved, and whether its outputs still exist.

One record per target (per build file), a JSON row in the cache index's memo table
(SQLite: crash-safe, shared by concurrent shipyard processes). It holds the target
key and its labelled parts, the facts that let the next bake prove the key without
lowering (`engine.bake.keys`), every step's cache key with its parts (for
`--explain`), what the build wrote (image names, output files and directories), and
the metadata `--metadata-file` repeats when the target is skipped. The per-file
digests of the target's context reads live in a second row, read only by `--explain`.

"Up to date" means the key matches *and* the outputs are still there: an image name
still naming the recorded manifest, an output directory still holding the stamp with
the key, an output file with the size and mtime it was written with, a pushed image
that the registry still has at that digest.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.bake.keys import Selection
from engine.solver.keys import KeyParts

if TYPE_CHECKING:
    from cache.index import CacheIndex

RECORD_VERSION = 1
STAMP_FILE = ".shipyard-bake-stamp"


def scope_of(files: tuple[str, ...]) -> str:
    """Records are per build file: two projects may both have a target called `api`."""
    first = os.path.realpath(files[0]) if files else ""
    return hashlib.sha256(first.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class OutputStamp:
    """One thing a build wrote: `image` (a name → manifest in the store), `registry`
    (a name → manifest pushed), `dir` (a directory with the stamp), `file` (size:mtime)."""

    kind: str
    ref: str
    value: str

    def to_json(self) -> list[str]:
        return [self.kind, self.ref, self.value]


@dataclass(frozen=True)
class StepRecord:
    name: str
    key: str
    parts: KeyParts | None
    source: bool = False
    """A source (a base image, a context): it has no cache record of its own."""

    @property
    def text(self) -> str:
        """The instruction without its `[target n/m]` prefix (steps are matched by it)."""
        return instruction(self.name)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "key": self.key}
        if self.parts is not None:
            out["parts"] = [self.parts.op, [list(p) for p in self.parts.inputs]]
        if self.source:
            out["source"] = True
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRecord:
        parts = data.get("parts")
        return cls(
            data["name"],
            data["key"],
            KeyParts(parts[0], tuple(tuple(p) for p in parts[1])) if parts else None,  # type: ignore[misc]
            bool(data.get("source")),
        )


def instruction(step_name: str) -> str:
    if step_name.startswith("["):
        return step_name.split("] ", 1)[-1]
    return step_name


@dataclass(frozen=True)
class TargetRecord:
    name: str
    key: str
    memo: str
    parts: tuple[tuple[str, str], ...]
    canonical: str
    source: str
    vertex_key: str
    snapshot: int | None
    image: tuple[str, str] | None
    """(manifest digest, config digest) of the image built, if one was."""
    selections: tuple[Selection, ...] = ()
    images: tuple[tuple[str, str, str], ...] = ()
    """Base images resolved: ("name", normalized name, manifest) or ("digest", ref, manifest)."""
    memoizable: bool = True
    outputs: tuple[OutputStamp, ...] = ()
    steps: tuple[StepRecord, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": RECORD_VERSION,
                "name": self.name,
                "key": self.key,
                "memo": self.memo,
                "parts": [list(p) for p in self.parts],
                "canonical": self.canonical,
                "source": self.source,
                "vertex_key": self.vertex_key,
                "snapshot": self.snapshot,
                "image": list(self.image) if self.image else None,
                "selections": [s.to_json() for s in self.selections],
                "images": [list(i) for i in self.images],
                "memoizable": self.memoizable,
                "outputs": [o.to_json() for o in self.outputs],
                "steps": [s.to_json() for s in self.steps],
                "metadata": self.metadata,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> TargetRecord | None:
        try:
            data = json.loads(text)
            if data.get("version") != RECORD_VERSION:
                return None
            return cls(
                name=data["name"],
                key=data["key"],
                memo=data["memo"],
                parts=tuple((a, b) for a, b in data["parts"]),
                canonical=data["canonical"],
                source=data["source"],
                vertex_key=data["vertex_key"],
                snapshot=data["snapshot"],
                image=tuple(data["image"]) if data["image"] else None,  # type: ignore[arg-type]
                selections=tuple(Selection.from_json(s) for s in data["selections"]),
                images=tuple(tuple(i) for i in data["images"]),  # type: ignore[misc]
                memoizable=bool(data["memoizable"]),
                outputs=tuple(OutputStamp(*o) for o in data["outputs"]),
                steps=tuple(StepRecord.from_json(s) for s in data["steps"]),
                metadata=data["metadata"],
            )
        except (ValueError, KeyError, TypeError):
            return None  # an unreadable record is no record: the target builds


class RecordStore:
    """Records of one build file's targets in the cache index."""

    def __init__(self, index: CacheIndex, scope: str) -> None:
        self.index = index
        self.scope = scope

    def load(self, name: str) -> TargetRecord | None:
        raw = self.index.get_memo(f"bake:{self.scope}:{name}")
        return TargetRecord.from_json(raw) if raw else None

    def save(self, record: TargetRecord) -> None:
        self.index.set_memo(f"bake:{self.scope}:{record.name}", record.to_json())

    def load_files(self, name: str) -> dict[str, dict[str, str]]:
        raw = self.index.get_memo(f"bake-files:{self.scope}:{name}")
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return {}

    def save_files(self, name: str, files: dict[str, dict[str, str]]) -> None:
        self.index.set_memo(f"bake-files:{self.scope}:{name}", json.dumps(files, separators=(",", ":"), sort_keys=True))


# --------------------------------------------------------------------------- facts and outputs


def images_hold(images: tuple[tuple[str, str, str], ...], index: CacheIndex) -> bool:
    for kind, ref, manifest in images:
        if kind == "name":
            row = index.get_image(ref)
            if row is None or row.manifest != manifest:
                return False
        elif not index.images_by_manifest(manifest):
            return False
    return True


def file_stamp(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def write_dir_stamp(path: str, key: str) -> None:
    tmp = os.path.join(path, STAMP_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(key + "\n")
    os.replace(tmp, os.path.join(path, STAMP_FILE))


def missing_output(record: TargetRecord, index: CacheIndex) -> str:
    """Why the recorded outputs no longer stand ("" when they all do)."""
    for stamp in record.outputs:
        if stamp.kind == "image":
            row = index.get_image(stamp.ref)
            if row is None:
                return f"image {stamp.ref} is no longer in the image store"
            if row.manifest != stamp.value:
                return f"image {stamp.ref} now names another image"
        elif stamp.kind == "dir":
            try:
                with open(os.path.join(stamp.ref, STAMP_FILE)) as f:
                    if f.read().strip() != stamp.value:
                        return f"output {stamp.ref} was written by another build"
            except OSError:
                return f"output {stamp.ref} is missing"
        elif stamp.kind == "file":
            try:
                if file_stamp(stamp.ref) != stamp.value:
                    return f"output {stamp.ref} changed since it was written"
            except OSError:
                return f"output {stamp.ref} is missing"
        elif stamp.kind == "registry":
            reason = _registry_missing(stamp)
            if reason:
                return reason
    if not record.outputs:  # nothing named: the result itself must still be in the cache
        found = index.lookup([record.vertex_key]).get(record.vertex_key) if record.vertex_key else None
        if found is None or found.snapshot != record.snapshot:
            return "its result is no longer in the build cache"
    return ""


def _registry_missing(stamp: OutputStamp) -> str:
    from engine.errors import ShipyardError
    from engine.registry.client import RegistryClient

    try:
        with RegistryClient.from_environment() as client:
            digest = client.head_manifest(stamp.ref)
    except (ShipyardError, OSError) as exc:
        return f"cannot check pushed image {stamp.ref}: {exc}"
    if digest != stamp.value:
        return f"registry image {stamp.ref} is {'missing' if digest is None else 'another image'}"
    return ""
