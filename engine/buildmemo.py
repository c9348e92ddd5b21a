"""The whole-build memo: a rebuild whose inputs are provably unchanged skips straight to its result.

A build is a pure function of: the Dockerfile text, the build arguments and target,
the engine's own code, the base images it resolved (by manifest digest), and the
content of the context paths its COPYs select. After every successful build those
facts are recorded under a key made of the first three. The next build with the same
key re-checks the rest — one query for the images, the stat cache for the context
selections (no file is read unless it changed), one query that every step's cache
record still exists — and if all hold, reports every step as cached without
importing the parser, the lowering or the solver. Anything that differs, or any
build that reads something else (a remote source, an output to write), takes the
normal path, which is always correct on its own.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from cache.checksum import ContextHashers
from cache.index import CacheIndex

MEMO_VERSION = "1"
_PACKAGES = ("engine", "frontends", "cache")


def engine_fingerprint() -> str:
    """Size and mtime of every source file of the engine: a changed engine never reuses a memo."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    hasher = hashlib.sha256(MEMO_VERSION.encode())
    stack = [os.path.join(here, pkg) for pkg in _PACKAGES]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as it:
            for entry in sorted(it, key=lambda e: e.name):
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        stack.append(entry.path)
                elif entry.name.endswith(".py"):
                    st = entry.stat()
                    hasher.update(f"{entry.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return hasher.hexdigest()


def memo_key(*, dockerfile: str, filename: str, context: str, target: str, build_args: dict[str, str]) -> str:
    payload = json.dumps(
        [engine_fingerprint(), dockerfile, filename, os.path.abspath(context), target, sorted(build_args.items())],
        separators=(",", ":"),
    )
    return "memo:" + hashlib.sha256(payload.encode()).hexdigest()


class Recorder:
    """Collects, during a normal build, the facts a later memo hit must re-check."""

    def __init__(self) -> None:
        self.images: list[tuple[str, str]] = []  # (normalized name, manifest digest)
        self.selections: list[tuple[str, list[str], bool, bool, list[str], str]] = []
        self.memoizable = True

    def image(self, ref: str, normalized: str, manifest_digest: str, by_name: bool) -> None:
        if by_name:
            self.images.append((normalized, manifest_digest))
        else:
            self.memoizable = False

    def selection(self, path: str, sources: list[str], follow: bool, wildcard: bool, excludes: list[str], digest: str) -> None:
        self.selections.append((path, sources, follow, wildcard, excludes, digest))

    def record(
        self,
        index: CacheIndex,
        key: str,
        *,
        step_keys: list[str],
        target_key: str,
        snapshot: int | None,
        image: tuple[str, str] | None,
        steps: list[dict[str, Any]],
        warnings: list[dict[str, Any]] | None = None,
    ) -> None:
        if not self.memoizable or not target_key:
            return
        value = {
            "images": self.images,
            "selections": self.selections,
            "step_keys": sorted(set(step_keys)),
            "target_key": target_key,
            "snapshot": snapshot,
            "image": list(image) if image else None,
            "steps": steps,
            "warnings": warnings or [],
        }
        index.set_memo(key, json.dumps(value, separators=(",", ":")))


def verified_memo(index: CacheIndex, key: str, hashers: ContextHashers) -> dict[str, Any] | None:
    """The memo for `key` if every fact it depends on still holds, else None."""
    raw = index.get_memo(key)
    if raw is None:
        return None
    memo = json.loads(raw)
    for name, manifest in memo["images"]:
        row = index.get_image(name)
        if row is None or row.manifest != manifest:
            return None
    try:
        for path, sources, follow, wildcard, patterns, digest in memo["selections"]:
            hasher = hashers.get(path, tuple(patterns))
            if hasher.digest_selection(sources, follow_symlinks=follow, allow_wildcard=wildcard) != digest:
                return None
    except Exception:  # a vanished path, an unreadable file: let the normal build report it
        return None
    finally:
        hashers.flush()
    records = index.lookup(memo["step_keys"])
    if len(records) != len(memo["step_keys"]):
        return None
    target = records.get(memo["target_key"])
    if target is None or target.snapshot != memo["snapshot"]:
        return None
    index.touch_keys(memo["step_keys"])
    return memo
