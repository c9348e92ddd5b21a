"""Resolve paths inside a root directory the way a container would see them.

`resolve_in_root(root, path)` follows symlinks component by component, treating the
root as `/`: an absolute link target restarts at the root and `..` never climbs
above it (the "securejoin" rule). Every path that comes from a Dockerfile, a build
context, an archive or an image goes through here before the host filesystem is
touched, so nothing can name a host path outside the root.
"""

from __future__ import annotations

import os
import posixpath
import stat

from engine.errors import ContextError

MAX_SYMLINKS = 255


def clean(path: str) -> str:
    """An absolute, normalized POSIX path (`a/../b/` → `/b`); never climbs above `/`."""
    cleaned = posixpath.normpath("/" + path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def resolve_in_root(root: str, path: str, follow_final: bool = True) -> str:
    """The host path for `path` inside `root`, with every symlink kept inside the root.

    Missing components are allowed (the result may not exist yet). With
    `follow_final=False` a symlink in the last component is returned as itself
    (lstat semantics), which is what copying a link as a link needs.
    """
    root = os.path.abspath(root)
    pending = [part for part in clean(path).split("/") if part]
    pending.reverse()
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        is_last = not pending
        if is_last and not follow_final:
            resolved.append(part)
            break
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        except NotADirectoryError:
            resolved.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise ContextError(f"too many levels of symbolic links resolving {path}")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p]
        pending.extend(reversed(parts))
    return os.path.join(root, *resolved) if resolved else root


def relative_to_root(root: str, host_path: str) -> str:
    """The in-root absolute path for a host path produced by `resolve_in_root`."""
    rel = os.path.relpath(host_path, os.path.abspath(root))
    return "/" if rel == "." else "/" + rel


def is_within(root: str, host_path: str) -> bool:
    root = os.path.abspath(root)
    host_path = os.path.abspath(host_path)
    return host_path == root or host_path.startswith(root.rstrip("/") + "/")
