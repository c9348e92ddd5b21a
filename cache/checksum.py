"""Content digests of the paths a COPY selects — the heart of content-based caching.

A file's digest covers its type, permission bits, owner, symlink target and content
bytes — never its mtime — and a directory's digest is a Merkle hash over its header
and its children's names and digests (BuildKit's `contenthash` shape). A COPY keys on
the digest of exactly the paths it selects, so an edit elsewhere in the context is a
cache hit.

For a local context, `ContextHasher` consults the persistent stat cache: a file whose
(size, mtime_ns, ctime_ns, inode, mode) match a trusted entry is not read at all. An
entry is trusted only when it was hashed more than the filesystem's timestamp
granularity after the file's last change (git's racy-file rule); otherwise the file is
hashed again, so a same-size edit in the same clock tick is never missed.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import stat
import threading
import time
from typing import Callable, Iterable, Sequence

from cache.index import CacheIndex, StatRow
from engine.fs.selection import ContextFilter, Selected, select_sources

READ_CHUNK = 1 << 20
SMALL_FILE = 1 << 16

# A file digest is H(header ‖ content digest); the header names the entry type.
_TYPE_FILE = "0"
_TYPE_LINK = "2"
_TYPE_DIR = "5"
_TYPE_OTHER = "x"


def _sha256_file(path: str) -> str:
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if size <= SMALL_FILE:
            return hashlib.sha256(f.read()).hexdigest()
        hasher = hashlib.sha256()
        buf = bytearray(READ_CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            hasher.update(view[:n])
        return hasher.hexdigest()


def entry_digest(kind: str, mode: int, uid: int, gid: int, extra: str) -> str:
    """Digest of one entry from its header fields and its content digest/link target."""
    header = f"{kind}\0{stat.S_IMODE(mode):o}\0{uid}\0{gid}\0{extra}"
    return hashlib.sha256(header.encode("utf-8", "surrogateescape")).hexdigest()


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return _TYPE_FILE
    if stat.S_ISLNK(mode):
        return _TYPE_LINK
    if stat.S_ISDIR(mode):
        return _TYPE_DIR
    return _TYPE_OTHER


def _granularity_table() -> list[tuple[str, str]]:
    """(mount point, fs type) from /proc/self/mountinfo, longest mount point first."""
    mounts: list[tuple[str, str]] = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) >= 5 and right:
                    mounts.append((fields[4].replace("\\040", " "), right.split()[0]))
    except OSError:
        return []
    mounts.sort(key=lambda m: len(m[0]), reverse=True)
    return mounts


_FINE_FS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs", "ramfs", "bcachefs"}
_COARSE_FS = {"vfat", "msdos", "exfat", "fat"}


def timestamp_granularity_ns(path: str) -> int:
    """How far apart two changes must be to get different timestamps on `path`'s fs.

    Local Linux filesystems stamp with the kernel's coarse clock (one tick, ≤10 ms at
    HZ=100): 20 ms is a safe margin. FAT keeps 2 s. Network and FUSE filesystems are
    unknown quantities: 1 s.
    """
    real = os.path.realpath(path)
    for mount_point, fstype in _granularity_table():
        if real == mount_point or real.startswith(mount_point.rstrip("/") + "/"):
            if fstype in _FINE_FS:
                return 20_000_000
            if fstype in _COARSE_FS:
                return 2_000_000_000
            return 1_000_000_000
    return 1_000_000_000


class HashStats:
    """Counters of one hasher's work (a plain class: this module is on the no-op path)."""

    __slots__ = ("files_hashed", "bytes_hashed", "files_from_stat_cache")

    def __init__(self) -> None:
        self.files_hashed = 0
        self.bytes_hashed = 0
        self.files_from_stat_cache = 0


class ContextHasher:
    """Digests of selections inside one local context directory, via the stat cache.

    Thread-safe: several COPYs of one build may hash the same context at once. Changed
    stat rows are written back by `flush()` at the end of key computation.
    """

    def __init__(
        self,
        index: CacheIndex,
        root: str,
        excluded: Callable[[str, bool], bool] | None = None,
    ) -> None:
        self.index = index
        self.root = os.path.realpath(root)
        self.excluded = excluded
        self._lock = threading.Lock()
        self._cache: dict[str, StatRow] | None = None
        self._dirty: dict[str, StatRow] = {}
        self._granularity = timestamp_granularity_ns(self.root)
        self._memo: dict[str, str] = {}
        self._fingerprints: dict[str, tuple[str, str, int]] = {}
        matcher = getattr(excluded, "matcher", None)
        patterns = [(p.text, p.exclusion) for p in matcher.patterns] if matcher is not None else None
        # A digest depends on the exclude rules too: they are part of what a fingerprint stands for.
        self._patterns_tag = "" if excluded is None else "\0excludes:" + hashlib.sha256(repr(patterns or id(excluded)).encode()).hexdigest()
        self.stats = HashStats()

    def _rows(self) -> dict[str, StatRow]:
        if self._cache is None:
            self._cache = self.index.load_stat_cache(self.root)
        return self._cache

    def flush(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, {}
            fingerprints, self._fingerprints = self._fingerprints, {}
        self.index.save_stat_cache(self.root, dirty, fingerprints)

    # ---------------------------------------------------------------- entries

    def _file_digest(self, rel: str, path: str, st: os.stat_result) -> str:
        rows = self._rows()
        row = rows.get(rel)
        if (
            row is not None
            and row.size == st.st_size
            and row.mtime_ns == st.st_mtime_ns
            and row.ctime_ns == st.st_ctime_ns
            and row.ino == st.st_ino
            and row.mode == st.st_mode
            and row.hashed_ns > max(st.st_mtime_ns, st.st_ctime_ns) + self._granularity
        ):
            self.stats.files_from_stat_cache += 1
            return row.digest
        hashed_ns = time.time_ns()
        mode = st.st_mode
        if stat.S_ISREG(mode):
            digest = entry_digest(_TYPE_FILE, mode, 0, 0, _sha256_file(path))
            self.stats.files_hashed += 1
            self.stats.bytes_hashed += st.st_size
        elif stat.S_ISLNK(mode):
            digest = entry_digest(_TYPE_LINK, mode, 0, 0, os.readlink(path))
        else:
            digest = entry_digest(_TYPE_OTHER, mode, 0, 0, f"{stat.S_IFMT(mode)}:{st.st_rdev}")
        new_row = StatRow(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, mode, digest, hashed_ns)
        with self._lock:
            rows[rel] = new_row
            self._dirty[rel] = new_row
        return digest

    def _scan(self, rel: str, path: str, st: os.stat_result) -> _Node:
        """Stat (never read) a selected entry and everything below it, as a tree to digest."""
        if not stat.S_ISDIR(st.st_mode):
            return _Node(rel, path, st, None)
        children: list[tuple[str, _Node]] = []
        with os.scandir(path) as it:
            entries = list(it)
        entries.sort(key=_by_name)
        prefix = rel + "/" if rel else ""
        for entry in entries:
            child_rel = prefix + entry.name
            child_st = entry.stat(follow_symlinks=False)
            if self._skip(child_rel, child_st):
                continue
            node = self._scan(child_rel, entry.path, child_st)
            if node.children == [] and self._excluded_dir(child_rel, child_st):
                continue  # an excluded directory with nothing re-included below it
            children.append((entry.name, node))
        return _Node(rel, path, st, children)

    def _skip(self, rel: str, st: os.stat_result) -> bool:
        """An excluded entry. An excluded directory is still walked when a `!` pattern may
        re-include something below it; otherwise (node_modules, .git) it is never entered."""
        if self.excluded is None:
            return False
        if not stat.S_ISDIR(st.st_mode):
            return self.excluded(rel, False)
        if not self.excluded(rel, True):
            return False
        may = getattr(self.excluded, "may_reinclude_below", None)
        return may is not None and not may(rel)

    def _excluded_dir(self, rel: str, st: os.stat_result) -> bool:
        return self.excluded is not None and self.excluded(rel, True)

    def _stat_walk(self, rel: str, path: str, flat: list[object]) -> None:
        """The fingerprint's walk: the lean twin of `_scan` (same entries, no tree built).

        Each directory's children are followed by a None, so the pre-order list is
        unambiguous without joining path strings.
        """
        with os.scandir(path) as it:
            entries = list(it)
        entries.sort(key=_by_name)
        excluded = self.excluded
        append = flat.append
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            mode = st.st_mode
            if excluded is not None:
                child_rel = f"{rel}/{entry.name}" if rel else entry.name
                if self._skip(child_rel, st):
                    continue
            else:
                child_rel = ""
            append((entry.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, mode))
            if stat.S_ISDIR(mode):
                self._stat_walk(child_rel, entry.path, flat)
        append(None)

    def _digest(self, node: _Node) -> str:
        if node.children is None:
            return self._file_digest(node.rel, node.path, node.st)
        hasher = hashlib.sha256()
        hasher.update(entry_digest(_TYPE_DIR, node.st.st_mode, 0, 0, "").encode())
        for name, child in node.children:
            hasher.update(b"\0" + name.encode("utf-8", "surrogateescape") + b"\0" + self._digest(child).encode())
        return hasher.hexdigest()

    def _select(self, sources: Sequence[str], follow_symlinks: bool, allow_wildcard: bool) -> list[tuple[str, str, str, str]]:
        """(source, selected name, path relative to the root, host path) for every selected entry."""
        out = []
        flt = self.excluded if isinstance(self.excluded, ContextFilter) else None
        for src in sources:
            for sel in select_sources(
                self.root, src, allow_wildcard=allow_wildcard, follow_symlinks=follow_symlinks, context_filter=flt
            ):
                rel = os.path.relpath(sel.host_path, self.root)
                out.append((src, sel.rel, "" if rel == "." else rel, sel.host_path))
        return out

    def _stat_fingerprint(self, selected: list[tuple[str, str, str, str]]) -> tuple[str, int]:
        flat: list[object] = []
        for src, name, rel, path in selected:
            st = os.lstat(path)
            flat.append((src, name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode))
            if stat.S_ISDIR(st.st_mode):
                self._stat_walk(rel, path, flat)
        return _fingerprint(flat)

    def digest_selection(
        self, sources: Sequence[str], *, follow_symlinks: bool = True, allow_wildcard: bool = True
    ) -> str:
        """One digest for every path the sources select, in order, with their names.

        A fingerprint of the selection's stat data comes first: when it equals the one
        recorded with the last digest (and that record is not racy), the digest is
        reused without loading a single stat-cache row.
        """
        selector = f"{follow_symlinks}:{allow_wildcard}:" + "\0".join(sources) + self._patterns_tag
        cached = self._memo.get(selector)
        if cached is not None:
            return cached
        started_ns = time.time_ns()
        selected = self._select(sources, follow_symlinks, allow_wildcard)
        fingerprint, newest = self._stat_fingerprint(selected)
        known = self.index.get_fingerprint(self.root, selector)
        if known is not None and known[0] == fingerprint and newest + self._granularity < known[2]:
            digest = known[1]
        else:
            hasher = hashlib.sha256()
            current_src = None
            for src, name, rel, path in selected:
                if src != current_src:
                    hasher.update(b"src\0" + src.encode() + b"\0")
                    current_src = src
                node = self._scan(rel, path, os.lstat(path))
                hasher.update(name.encode("utf-8", "surrogateescape") + b"\0" + self._digest(node).encode() + b"\0")
            for src in sources:  # a source that selected nothing (empty wildcard) still counts
                if src not in {s for s, _, _, _ in selected}:
                    hasher.update(b"src\0" + src.encode() + b"\0")
            digest = "sha256:" + hasher.hexdigest()
            with self._lock:
                self._fingerprints[selector] = (fingerprint, digest, started_ns)
        self._memo[selector] = digest
        return digest


class _Node:
    """A scanned entry: stat data, and children (name, node) for a directory."""

    __slots__ = ("rel", "path", "st", "children")

    def __init__(self, rel: str, path: str, st: os.stat_result, children: list[tuple[str, "_Node"]] | None) -> None:
        self.rel = rel
        self.path = path
        self.st = st
        self.children = children


def _by_name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _fingerprint(flat: list[object]) -> tuple[str, int]:
    """A hash of every selected entry's name and stat data, and the newest change time seen.

    marshal serializes the whole list in C; its bytes are stable for equal data on one
    Python version, which is all a local fingerprint needs (another version just misses).
    """
    newest = max((max(item[-4], item[-3]) for item in flat if item is not None), default=0)  # type: ignore[index]
    return hashlib.sha256(marshal.dumps(flat)).hexdigest(), newest


class ContextHashers:
    """One `ContextHasher` per (context directory, exclude patterns) for a whole command.

    The whole-build memo check and the solver ask for the same selections; sharing the
    hashers means the second ask is a dictionary lookup, not another walk.
    """

    def __init__(
        self, index: CacheIndex, exclude_factory: Callable[[tuple[str, ...]], Callable[[str, bool], bool] | None] | None = None
    ) -> None:
        self.index = index
        self.exclude_factory = exclude_factory
        self._hashers: dict[tuple[str, tuple[str, ...]], ContextHasher] = {}
        self._lock = threading.Lock()

    def get(self, path: str, patterns: tuple[str, ...] = ()) -> ContextHasher:
        key = (os.path.realpath(path), tuple(patterns))
        with self._lock:
            hasher = self._hashers.get(key)
            if hasher is None:
                predicate = self.exclude_factory(key[1]) if self.exclude_factory and key[1] else None
                hasher = ContextHasher(self.index, key[0], predicate)
                self._hashers[key] = hasher
            return hasher

    def flush(self) -> None:
        for hasher in list(self._hashers.values()):
            hasher.flush()


def tree_digest(root: str, selections: Iterable[Selected]) -> str:
    """Digest of selections inside an immutable snapshot view (real owners count)."""
    hasher = hashlib.sha256()
    for sel in selections:
        hasher.update(sel.rel.encode("utf-8", "surrogateescape") + b"\0" + _tree_entry(sel.host_path, sel.is_dir).encode() + b"\0")
    return "sha256:" + hasher.hexdigest()


def _tree_entry(path: str, follow: bool) -> str:
    st = os.stat(path) if follow else os.lstat(path)
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        hasher = hashlib.sha256()
        hasher.update(entry_digest(_TYPE_DIR, mode, st.st_uid, st.st_gid, "").encode())
        with os.scandir(path) as it:
            for entry in sorted(it, key=lambda e: e.name):
                hasher.update(
                    b"\0" + entry.name.encode("utf-8", "surrogateescape") + b"\0" + _tree_entry(entry.path, False).encode()
                )
        return hasher.hexdigest()
    if stat.S_ISREG(mode):
        return entry_digest(_TYPE_FILE, mode, st.st_uid, st.st_gid, _sha256_file(path))
    if stat.S_ISLNK(mode):
        return entry_digest(_TYPE_LINK, mode, st.st_uid, st.st_gid, os.readlink(path))
    return entry_digest(_TYPE_OTHER, mode, st.st_uid, st.st_gid, f"{stat.S_IFMT(mode)}:{st.st_rdev}")
