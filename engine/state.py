"""The state directory: where blobs, snapshots, the cache index and images live.

An explicit object handed to whoever needs it (no module-level singleton), so that
tests and several concurrent builds can each point at their own root.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_root() -> Path:
    """`$SHIPYARD_ROOT`, else `/var/lib/shipyard` for root, else the XDG data dir.

    Root of a rootless user namespace (see `engine.rootless`) is still the user:
    their state stays in their data dir.
    """
    env = os.environ.get("SHIPYARD_ROOT")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        from engine.rootless import host_root

        if host_root():
            return Path("/var/lib/shipyard")
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(xdg) / "shipyard"


class StateDir:
    """Paths inside one state root. Creating the object creates nothing on disk."""

    __slots__ = ("root",)

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"StateDir({str(self.root)!r})"

    @property
    def index_db(self) -> Path:
        return self.root / "index.db"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def layers(self) -> Path:
        return self.root / "layers"

    @property
    def mounts(self) -> Path:
        return self.root / "mounts"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def runtime_state(self) -> Path:
        return self.root / "runtime"

    def ensure(self) -> "StateDir":
        for path in (self.root, self.blobs, self.layers, self.mounts, self.tmp, self.logs, self.runtime_state):
            path.mkdir(parents=True, exist_ok=True)
        return self
