"""Everything the solver needs from the outside world, opened once per command.

Explicit state (no singletons): the CLI builds one `Engine` for a state directory and
hands it down. The runtime is chosen lazily, so a fully cached build never probes or
starts a container runtime.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cache.content_store import ContentStore
from cache.index import CacheIndex
from cache.snapshots import CopySnapshotter, OverlaySnapshotter, Snapshotter, overlay_supported
from engine.errors import UsageError
from engine.state import StateDir

if TYPE_CHECKING:
    from engine.runtime.base import Runtime


@dataclass
class Engine:
    state: StateDir
    index: CacheIndex
    store: ContentStore
    snapshotter: Snapshotter
    runtime_choice: str = "auto"
    _runtime: "Runtime | None" = field(default=None, repr=False)
    _runtime_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(
        cls, root: Path, runtime: str = "auto", snapshotter: str | None = None, index: CacheIndex | None = None
    ) -> "Engine":
        state = StateDir(root).ensure()
        index = index or CacheIndex(state.index_db)
        store = ContentStore(state.blobs, state.tmp)
        return cls(state, index, store, _pick_snapshotter(state, index, snapshotter), runtime)

    @property
    def runtime(self) -> "Runtime":
        with self._runtime_lock:
            if self._runtime is None:
                from engine.runtime import select_runtime

                self._runtime = select_runtime(self.runtime_choice, self.state.root)
            return self._runtime

    def close(self) -> None:
        self.index.close()


def _pick_snapshotter(state: StateDir, index: CacheIndex, choice: str | None) -> Snapshotter:
    """The state dir keeps one snapshotter for life: layers of one kind cannot mount as the other."""
    choice = choice or os.environ.get("SHIPYARD_SNAPSHOTTER") or ""
    if choice not in ("", "auto", "overlay", "copy"):
        raise UsageError(f"unknown snapshotter {choice!r} (want auto, overlay or copy)")
    recorded = index.get_meta("snapshotter")
    if recorded is None:
        if choice in ("", "auto"):
            choice = "overlay" if overlay_supported(state.tmp) else "copy"
        index.set_meta("snapshotter", choice)
        recorded = choice
    elif choice not in ("", "auto") and choice != recorded:
        raise UsageError(f"state directory {state.root} uses the {recorded} snapshotter, not {choice}")
    cls = OverlaySnapshotter if recorded == "overlay" else CopySnapshotter
    return cls(index, state.layers, state.mounts)
