"""Which source paths a `COPY`/`ADD` source names, resolved inside the source root.

The same function feeds the copier and the cache-key computation, so it must be
deterministic and cheap: it only lists directories and `lstat`s entries, never reads
a file. Rules (BuildKit's `ResolveWildcards` + `rootPath`, Go's glob matcher):

- Symlinks in the parents of a source are always resolved inside the root (an
  absolute or `..` target restarts at / climbs to the root, never the host).
- The final component is followed (inside the root) when `follow_symlinks`: COPY
  copies what a symlink named as a source points to; symlinks *inside* a copied
  directory are copied as links by the copier.
- Wildcards (`*`, `?`, `[...]`, `\\` escapes) match one path component each with Go's
  rules. The components before the first wildcard are resolved as a plain path; the
  directories a wildcard component matches are descended only if they are real
  directories (BuildKit walks without following links). Matches are ordered like
  Go's `filepath.Glob` (sorted per directory, byte order).
- A missing non-wildcard source is an error (`"/nope": not found`), so is a missing
  directory before the first wildcard; an empty match is an error only when
  `allow_empty_wildcard` is false.
- A component without wildcards but with `\\` escapes stands for its unescaped name
  (Go's Glob semantics; BuildKit would look for a literal backslash there).
- A malformed pattern (`/a[`) is a BadPatternError; BuildKit silently matches nothing.
"""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

from engine.errors import ContextError
from engine.fs import gomatch
from engine.fs.safepath import clean, is_within, resolve_in_root


class Selected(NamedTuple):
    """One source entry a COPY source names (a NamedTuple: cheap to define at start-up)."""

    rel: str
    """Path relative to the source root, '/'-separated, no leading '/', '' for the root."""
    host_path: str
    """Resolved host path inside the source root (what the copier reads)."""
    is_dir: bool
    from_wildcard: bool


def _not_found(path: str) -> ContextError:
    return ContextError(f'"{path}": not found')


def _sort_key(name: str) -> bytes:
    return os.fsencode(name)


def split_parents(src: str) -> tuple[str, str]:
    """Split a `COPY --parents` source at its `/./` pivot: (pivot dir, pattern below it).

    Without a pivot the whole path is kept below the root: `('/', 'x/y')`. The copier
    takes the pivot as its source and the pattern as an include pattern
    (`CopyOptions(parents=True, include_patterns=(pattern,))`), like BuildKit.
    """
    marker = src.find("/./")
    if marker < 0:
        return "/", clean(src).lstrip("/")
    parent = src[:marker] or "/"
    return clean(parent), clean(src[marker + 3 :]).lstrip("/")


def select_sources(
    src_root: str,
    src: str,
    *,
    allow_wildcard: bool = True,
    follow_symlinks: bool = True,
    allow_empty_wildcard: bool = True,
) -> list[Selected]:
    """The entries `src` (an absolute in-root path, maybe a pattern) selects in `src_root`."""
    root = os.path.abspath(src_root)
    src = clean(src)
    if allow_wildcard:
        static, pattern = gomatch.split_static_prefix(src)
        if pattern:
            return _select_wildcard(root, static, pattern, follow_symlinks, allow_empty_wildcard, src)
        src = "/" + "/".join(gomatch.unescape(part) for part in static)
    return [_select_path(root, src, follow_symlinks)]


def _select_path(root: str, path: str, follow_symlinks: bool) -> Selected:
    host = resolve_in_root(root, path, follow_final=follow_symlinks)
    try:
        st = os.lstat(host)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(path) from None
    if not is_within(root, host):  # resolve_in_root guarantees it; keep the invariant explicit
        raise ContextError(f'"{path}": escapes the source root')
    return Selected(rel=path.lstrip("/"), host_path=host, is_dir=stat.S_ISDIR(st.st_mode), from_wildcard=False)


def _select_wildcard(
    root: str,
    static: list[str],
    pattern: list[str],
    follow_symlinks: bool,
    allow_empty: bool,
    src: str,
) -> list[Selected]:
    matchers = [gomatch.compile(part) for part in pattern]
    base_rel = "/".join(gomatch.unescape(part) for part in static)
    # BuildKit resolves the static part like any source path (final link followed
    # only with follow_symlinks) and then walks it without following links.
    base_host = resolve_in_root(root, "/" + base_rel, follow_final=follow_symlinks)
    try:
        base_st = os.lstat(base_host)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found("/" + base_rel) from None
    # (host dir, rel dir) pairs still to expand with the next pattern component.
    level: list[tuple[str, str]] = [(base_host, base_rel)] if stat.S_ISDIR(base_st.st_mode) else []
    last = len(matchers) - 1
    out: list[Selected] = []
    for depth, matcher in enumerate(matchers):
        next_level: list[tuple[str, str]] = []
        for host_dir, rel_dir in level:
            try:
                with os.scandir(host_dir) as it:
                    entries = [e for e in it if matcher(e.name)]
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
            entries.sort(key=lambda e: _sort_key(e.name))
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                if depth < last:
                    if entry.is_dir(follow_symlinks=False):
                        next_level.append((entry.path, rel))
                    continue
                out.append(_wildcard_match(root, rel, entry, follow_symlinks))
        level = next_level
    if not out and not allow_empty:
        raise _not_found(src)
    return out


def _wildcard_match(root: str, rel: str, entry: os.DirEntry[str], follow_symlinks: bool) -> Selected:
    if follow_symlinks and entry.is_symlink():
        host = resolve_in_root(root, "/" + rel)
        try:
            st = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            raise _not_found("/" + rel) from None
        return Selected(rel=rel, host_path=host, is_dir=stat.S_ISDIR(st.st_mode), from_wildcard=True)
    return Selected(rel=rel, host_path=entry.path, is_dir=entry.is_dir(follow_symlinks=False), from_wildcard=True)
