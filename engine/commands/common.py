"""What every state-touching command does first: find the state root, isolate mounts.

For an unprivileged user, finding the state root also enters rootless mode (see
`engine.rootless`): the state lives in that user namespace (files owned by
subordinate ids, overlay layers with `user.overlay.*` xattrs), so no command may
touch it from outside, and entering must happen before the command starts a thread.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from engine.state import default_root

_isolated = False


def state_root(args: argparse.Namespace) -> Path:
    """The state root; for a non-root user, entered in its rootless user namespace."""
    global _isolated
    root = Path(args.root) if getattr(args, "root", None) else default_root()
    if os.geteuid() != 0:
        from engine import rootless

        if rootless.enter(root.absolute()):
            _isolated = True  # enter() made a private mount namespace too
    return root


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
