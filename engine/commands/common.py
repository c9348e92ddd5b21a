"""What every state-touching command does first: find the state root, isolate mounts."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from engine.state import default_root

_isolated = False


def state_root(args: argparse.Namespace) -> Path:
    return Path(args.root) if getattr(args, "root", None) else default_root()


def isolate_mounts() -> None:
    """Move this process into a private mount namespace (root only, before any thread).

    Every overlay this process mounts then lives and dies with it: even `kill -9`
    leaves no stale mount on the host, and the host's mount table stays clean.
    Children (runc, the builtin runtime) inherit the namespace, so they see the mounts.
    """
    global _isolated
    if _isolated or os.geteuid() != 0 or os.environ.get("SHIPYARD_NO_MOUNT_NS"):
        return
    from engine import linux

    try:
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
    except OSError:
        return  # e.g. inside a restricted container: mounts are then cleaned up explicitly
    _isolated = True
