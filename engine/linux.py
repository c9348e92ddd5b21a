"""Thin ctypes wrappers for the Linux calls Python 3.11's `os` lacks.

mount(2), umount2(2), unshare(2), pivot_root(2), sethostname(2). Kept in one module
so every caller gets the same errno handling (an `OSError` with the path).
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_DETACH = 2

_SYS_PIVOT_ROOT = 155  # x86_64

_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str, path: str | None = None) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)


def mount(source: str, target: str, fstype: str | None = None, flags: int = 0, data: str | None = None) -> None:
    _check(
        libc().mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data is not None else None,
        ),
        f"mount {fstype or 'bind'}",
        target,
    )


def umount(target: str, flags: int = 0) -> None:
    _check(libc().umount2(target.encode(), flags), "umount", target)


def unshare(flags: int) -> None:
    _check(libc().unshare(flags), "unshare")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(libc().syscall(_SYS_PIVOT_ROOT, new_root.encode(), put_old.encode()), "pivot_root", new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(libc().sethostname(raw, len(raw)), "sethostname")
