"""Running out of disk: recognise it, and say so in one line that tells the user what to do.

A full disk shows up as ENOSPC (or EDQUOT under a quota) from any write, as SQLite's
"database or disk is full", or as a build step whose own output says "No space left
on device". Whatever the shape, the user should read the same thing: what was being
written, in which state directory, how much is free, and that `shipyard prune` frees
space.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

DISK_FULL_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT))
NEARLY_FULL_BYTES = 1 << 20
"""A filesystem with less than this free is treated as full (a failed write needed more)."""


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def free_bytes(path: Path | str) -> int | None:
    """Bytes an unprivileged writer could still use on `path`'s filesystem (None if unknown)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def nearly_full(path: Path | str) -> bool:
    free = free_bytes(path)
    return free is not None and free < NEARLY_FULL_BYTES


def disk_full_message(doing: str, state_root: Path | str, code: int = errno.ENOSPC) -> str:
    from engine.commands.humanize import human_size

    free = free_bytes(state_root)
    reason = "disk quota exceeded" if code == errno.EDQUOT else "no space left on device"
    shown = f"free: {human_size(free)}" if free is not None else "free space unknown"
    return f"{reason} while {doing} in {state_root} ({shown}); `shipyard prune` frees build cache"
