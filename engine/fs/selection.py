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
- With a `ContextFilter` (`.dockerignore`), excluded entries do not exist: a source
  naming one is "not found (excluded by .dockerignore)", wildcards skip them.
"""

from __future__ import annotations

import os
import stat
from typing import Iterator, NamedTuple, Sequence

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


class ContextFilter:
    """What `.dockerignore` hides in a build context, as BuildKit transfers it.

    `filter(rel, is_dir)` (a path relative to the context root) is the moby pattern
    matcher's verdict with the parent rule: an entry below an excluded directory is
    excluded unless a `!` pattern re-includes it. An excluded *directory* still
    exists in the transferred context when something below it is kept (fsutil sends
    the parents of what it keeps): `visible` answers that. Directory verdicts are
    memoized (moby's MatchInfo), so a top-down walk pays one pattern pass per entry.
    Safe to share between threads (a race only recomputes a verdict).

    Callable as `(rel, is_dir) -> bool`, the shape `cache.checksum.ContextHasher`
    takes for its `excluded` predicate.
    """

    __slots__ = ("matcher", "label", "_infos")

    def __init__(self, patterns: Sequence[str], label: str = ".dockerignore") -> None:
        from engine.fs.patterns import PatternMatcher

        self.matcher = PatternMatcher(patterns)
        self.label = label
        """The ignore file's name, for "not found (excluded by …)" messages."""
        self._infos: dict[str, tuple[bool, ...]] = {}

    def __bool__(self) -> bool:
        return bool(self.matcher)

    def _dir_info(self, rel: str) -> tuple[bool, ...]:
        info = self._infos.get(rel)
        if info is None:
            parent = rel.rpartition("/")[0]
            _, info = self.matcher.matches_with_parent(rel, self._dir_info(parent) if parent else None)
            self._infos[rel] = info
        return info

    def __call__(self, rel: str, is_dir: bool = False) -> bool:
        """Whether the pattern rules exclude `rel` (the root itself never is)."""
        if not rel:
            return False
        parent = rel.rpartition("/")[0]
        matched, info = self.matcher.matches_with_parent(rel, self._dir_info(parent) if parent else None)
        if is_dir:
            self._infos[rel] = info
        return matched

    def may_reinclude_below(self, rel: str) -> bool:
        """Could a `!` pattern keep something below the excluded directory `rel`? (Conservative.)"""
        return self.matcher.exclusions and self.matcher.may_match_below(rel, exclusion=True)

    def visible(self, host: str, rel: str, is_dir: bool) -> bool:
        """Whether the entry at `host` (context path `rel`) exists in the transferred context."""
        if not self(rel, is_dir):
            return True
        return is_dir and self._keeps_something(host, rel)

    def _keeps_something(self, host: str, rel: str) -> bool:
        if not self.may_reinclude_below(rel):
            return False
        for name, is_dir, path in _children(host):
            child = f"{rel}/{name}"
            if not self(child, is_dir) or (is_dir and self._keeps_something(path, child)):
                return True
        return False

    def not_found(self, path: str) -> ContextError:
        return ContextError(f'"{path}": not found (excluded by {self.label})')


def _children(host: str) -> Iterator[tuple[str, bool, str]]:
    try:
        with os.scandir(host) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False), e.path) for e in it]
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return iter(())
    return iter(entries)


def _hidden(flt: ContextFilter, root: str, path: str, host: str, is_dir: bool) -> bool:
    """Whether `.dockerignore` hides a source: the entry it names, or what it resolves to."""
    rel = os.path.relpath(host, root)
    if rel != "." and not flt.visible(host, rel, is_dir):
        return True
    lexical = path.strip("/")
    if lexical and lexical != rel:
        link = resolve_in_root(root, path, follow_final=False)
        try:
            st = os.lstat(link)
        except (FileNotFoundError, NotADirectoryError):
            return False
        link_rel = os.path.relpath(link, root)
        if link_rel != "." and not flt.visible(link, link_rel, stat.S_ISDIR(st.st_mode)):
            return True
    return False


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
    context_filter: ContextFilter | None = None,
) -> list[Selected]:
    """The entries `src` (an absolute in-root path, maybe a pattern) selects in `src_root`.

    With `context_filter`, what it excludes is treated as absent (`.dockerignore`).
    """
    root = os.path.abspath(src_root)
    src = clean(src)
    flt = context_filter if context_filter else None
    if allow_wildcard:
        static, pattern = gomatch.split_static_prefix(src)
        if pattern:
            return _select_wildcard(root, static, pattern, follow_symlinks, allow_empty_wildcard, src, flt)
        src = "/" + "/".join(gomatch.unescape(part) for part in static)
    return [_select_path(root, src, follow_symlinks, flt)]


def _select_path(root: str, path: str, follow_symlinks: bool, flt: ContextFilter | None = None) -> Selected:
    host = resolve_in_root(root, path, follow_final=follow_symlinks)
    try:
        st = os.lstat(host)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(path) from None
    if not is_within(root, host):  # resolve_in_root guarantees it; keep the invariant explicit
        raise ContextError(f'"{path}": escapes the source root')
    is_dir = stat.S_ISDIR(st.st_mode)
    if flt is not None and _hidden(flt, root, path, host, is_dir):
        raise flt.not_found(path)
    return Selected(rel=path.lstrip("/"), host_path=host, is_dir=is_dir, from_wildcard=False)


def _select_wildcard(
    root: str,
    static: list[str],
    pattern: list[str],
    follow_symlinks: bool,
    allow_empty: bool,
    src: str,
    flt: ContextFilter | None = None,
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
                        if flt is not None and flt(rel, True) and not flt.may_reinclude_below(rel):
                            continue  # nothing below an excluded directory can match
                        next_level.append((entry.path, rel))
                    continue
                if flt is not None and not flt.visible(entry.path, rel, entry.is_dir(follow_symlinks=False)):
                    continue
                sel = _wildcard_match(root, rel, entry, follow_symlinks)
                if flt is not None and sel.host_path != entry.path and _hidden(flt, root, "/" + rel, sel.host_path, sel.is_dir):
                    continue
                out.append(sel)
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
