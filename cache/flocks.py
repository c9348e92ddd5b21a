"""flock(2) helpers shared by the cache's lock users (leases, step locks, cache mounts).

Every lock in the state directory is an flock on a file, so the kernel releases it
whatever kills its holder. A build must still give up a wait when it is cancelled
(a blocking flock would not), and GC must tell held locks from stale ones without
taking them.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from pathlib import Path

from engine.errors import BuildCancelled

_POLL_START = 0.002
_POLL_MAX = 0.1


def wait_for_flock(fd: int, mode: int, cancel: threading.Event | None, what: str) -> None:
    """flock `fd` with `mode`, polling so a cancelled build stops waiting (BuildCancelled)."""
    delay = _POLL_START
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if cancel is not None:
            if cancel.wait(delay):
                raise BuildCancelled(f"cancelled while waiting for {what}")
        else:
            time.sleep(delay)
        delay = min(delay * 2, _POLL_MAX)


def is_locked(path: Path | str, mode: int = fcntl.LOCK_EX) -> bool:
    """Whether another holder keeps `path` from being flocked with `mode` right now.

    With LOCK_SH this asks "does anyone hold it exclusively", with LOCK_EX "does anyone
    hold it at all". A missing file is not locked.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
