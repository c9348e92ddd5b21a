"""Copy selected source entries into a destination root with Docker/BuildKit COPY rules.

The destination root *is* the container's `/` (an overlay mount), so every path the
user names is resolved inside it; below the resolved destination nothing is ever
followed: entries are created with O_EXCL/O_NOFOLLOW semantics and a symlink where a
directory should be is an error (BuildKit: "cannot copy to non-directory"). Sources
are read without following links either (a symlink inside a copied tree is copied as
a link), so nothing outside the source root is read.

Placement rules (tonistiigi/fsutil `copy.Copy`, BuildKit's `docopy`):

- a dest ending in `/` (or `/.`) is a directory: created with its parents;
- a directory source copies its *contents* into dest (created if missing);
  a file source goes to `dest/<name>` when dest is an existing directory (after
  resolving symlinks inside the root), otherwise to dest itself;
- several sources need a dest that ends in `/`;
- existing files are replaced, existing directories merged; a file cannot replace a
  directory and a directory cannot replace a non-directory;
- created parent directories are 0755 and belong to `--chown`'s owner if given;
- mode bits (setuid/setgid/sticky included), atime/mtime, xattrs (except
  `trusted.overlay.*`, best effort), symlinks (target unchanged), hardlinks between
  copied files, fifos/sockets/devices are kept; `--chmod` replaces or edits the mode
  of everything copied, but not of a destination directory that already existed
  (BuildKit only resets that directory's timestamps to the source directory's).

Deliberate differences from BuildKit:
- several sources with a dest without a trailing `/` are an error, as in the classic
  builder and the Dockerfile reference (BuildKit silently overwrites, moby/buildkit#1853);
  a wildcard with a single match may still name a file;
- `--exclude` also applies to a file source's own name (`COPY --exclude=*.txt hom* d/`
  does what the reference says; BuildKit matches only below each source);
- directories created only to reach included entries (`--parents`, `!` exceptions)
  get their source metadata after their children, so their mtime is the source's.

Speed: the main thread walks the tree (one `scandir` per directory; regular files are
recognised from the directory entry's type, without a `stat`), creates directories,
symlinks and special files, and queues regular files in batches; a few threads open
each file pair, `fstat` the source, create the destination, copy the data in the
kernel (`copy_file_range`, `sendfile` fallback) and set owner, mode, xattrs and times
through the descriptor. Directory metadata is applied at the very end, children
before parents, once no entry is added any more (so directory mtimes survive).
"""

from __future__ import annotations

import errno
import os
import posixpath
import queue
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from engine.errors import ContextError, ShipyardError
from engine.fs.chmod import Chmod, parse_chmod
from engine.fs.patterns import MatchInfo, PatternMatcher
from engine.fs.safepath import clean, is_within, relative_to_root, resolve_in_root
from engine.fs.selection import ContextFilter, Selected

MULTIPLE_SOURCES_MESSAGE = (
    "When using COPY with more than one source file, the destination must be a directory and end with a /"
)

_O_SRC = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # never block on a fifo
_O_DST = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_BATCH_FILES = 16
_CHUNK = 1 << 30
_META_NONE, _META_MODE, _META_TIMES, _META_FULL = 0, 1, 2, 3


class CopyError(ShipyardError):
    """A COPY that cannot be carried out (type conflict at the destination, I/O error)."""


@dataclass(frozen=True)
class CopyOptions:
    owner: tuple[int, int] | None = None
    """--chown resolved to numbers by the caller; None = see preserve_owner."""
    preserve_owner: bool = True
    """False: everything becomes 0:0 (COPY from the build context) unless owner is set."""
    mode: int | None = None
    """--chmod octal; applies to files and dirs copied."""
    mode_str: str = ""
    """--chmod symbolic (u+x…), BuildKit semantics (see engine.fs.chmod)."""
    dir_contents_only: bool = True
    """COPY dir/ dest copies the *contents* of dir."""
    create_dest_path: bool = True
    include_patterns: tuple[str, ...] = ()
    """Only paths (relative to each source) matching these are copied (--parents)."""
    exclude_patterns: tuple[str, ...] = ()
    """Paths (relative to each source) matching these are skipped (--exclude)."""
    context_filter: ContextFilter | None = None
    """`.dockerignore` of the source root: what it excludes (paths relative to the
    source *root*, not to each source) does not exist for this copy."""
    parents: bool = False
    """COPY --parents; dest is always a directory. With include_patterns (BuildKit's
    lowering, see selection.split_parents) each source is the pivot directory before
    `/./` (or `/`), the patterns are the rest of the COPY source, and a pattern without
    wildcards must exist (BuildKit's required paths) unless the pivot came from a
    wildcard. Without include_patterns each source lands at dest/<rel>, its parent
    directories recreated from the source tree."""
    timestamp_ns: int | None = None
    """Set atime/mtime of everything copied to this instant (SOURCE_DATE_EPOCH)."""
    reuse: Callable[[str, os.stat_result], str | None] | None = None
    """Given a source file and its lstat, a path to an identical immutable file to hard-link
    instead of copying bytes (an earlier layer of the same COPY), or None. The oracle
    vouches for content and xattrs; the copier still checks that the candidate's size,
    owner, mode and mtime are exactly what a copy would have."""
    on_file: Callable[[str, str, os.stat_result], None] | None = None
    """Called (from worker threads) with (source, destination, source stat) for every
    regular file copied or linked, so the caller can remember where each one went."""


@dataclass(frozen=True)
class CopyStats:
    """What a copy created: regular files (and their bytes), dirs, links, special files."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    special: int = 0
    bytes: int = 0


def copy_into(src_root: str, sources: Sequence[Selected], dest_root: str, dest: str, opts: CopyOptions) -> CopyStats:
    """Copy `sources` (from select_sources on `src_root`) to `dest` inside `dest_root`.

    `dest` is an absolute path inside `dest_root` (the container's `/`); a trailing
    `/` makes it a directory. Raises CopyError (placement conflicts, I/O errors, with
    paths shown inside their roots), ContextError (a source that vanished or lies
    outside `src_root`) or ChmodError / BadPatternError for bad options.
    """
    if not sources:
        return CopyStats()
    dir_intent = dest.endswith(("/", "/.")) or dest in ("", ".")
    if len(sources) > 1 and not dir_intent:
        raise CopyError(MULTIPLE_SOURCES_MESSAGE)
    chmod: Chmod | None = None
    if opts.mode_str:
        chmod = parse_chmod(opts.mode_str)
    elif opts.mode is not None:
        if not 0 <= opts.mode <= 0o7777:
            raise CopyError(f"invalid chmod mode {opts.mode:#o}: must be between 0 and 07777")
        chmod = Chmod(text=f"{opts.mode:o}", mode=opts.mode)
    include = PatternMatcher(opts.include_patterns) if opts.include_patterns else None
    exclude = PatternMatcher(opts.exclude_patterns) if opts.exclude_patterns else None
    copier = _Copier(
        os.path.abspath(src_root), os.path.abspath(dest_root), opts, chmod, include or None, exclude or None
    )
    try:
        try:
            copier.run(sources, clean(dest), dir_intent)
        except BaseException:
            copier.pool.abort()
            raise
        copier.pool.close()
        return copier.stats()
    except OSError as err:
        raise CopyError(copier.describe(err)) from None


@dataclass(frozen=True)
class _Meta:
    """How a copied entry's owner, mode and times derive from its source `stat`."""

    owner: tuple[int, int] | None
    preserve_owner: bool
    chmod: Chmod | None
    timestamp_ns: int | None
    chown: bool
    """Whether ownership can be set at all (root, possibly in a user namespace)."""
    reuse: Callable[[str, os.stat_result], str | None] | None = None
    on_file: Callable[[str, str, os.stat_result], None] | None = None

    def ids(self, st: os.stat_result) -> tuple[int, int]:
        if self.owner is not None:
            return self.owner
        if self.preserve_owner:
            return st.st_uid, st.st_gid
        return 0, 0

    def perm(self, st: os.stat_result) -> int:
        if self.chmod is None:
            return stat.S_IMODE(st.st_mode)
        return self.chmod.apply(st.st_mode)

    def times(self, st: os.stat_result) -> tuple[int, int]:
        ts = self.timestamp_ns
        if ts is not None:
            return ts, ts
        return st.st_atime_ns, st.st_mtime_ns


class _Frame:
    """A source directory being copied (an explicit stack instead of recursion).

    A plain slotted class, not a dataclass: one is made per directory on the walk's
    hot path, and this module is imported on every build.
    """

    __slots__ = (
        "created",
        "dst",
        "entries",
        "exc",
        "fresh",
        "inc",
        "index",
        "materialized",
        "meta",
        "rel",
        "src",
        "st",
    )

    def __init__(
        self,
        src: str,
        dst: str,
        st: os.stat_result,
        rel: str,
        materialized: bool,
        created: bool,
        meta: int,
        inc: MatchInfo,
        exc: MatchInfo,
        fresh: bool = False,
    ) -> None:
        self.src = src
        self.dst = dst
        self.st = st
        self.rel = rel
        """Path relative to the copied source (what include/exclude patterns see)."""
        self.materialized = materialized
        """The destination directory exists (lazily created when only some children match)."""
        self.created = created
        self.meta = meta
        """What to apply once the copy is done: _META_NONE, _MODE, _TIMES or _FULL."""
        self.inc = inc
        self.exc = exc
        self.fresh = fresh
        """Created by this copy, so no child can already exist."""
        self.entries: list[tuple[str, os.stat_result | None]] | None = None
        """(name, lstat) of the children; no stat for regular files (the workers fstat)."""
        self.index = 0


class _Copier:
    def __init__(
        self,
        src_root: str,
        dest_root: str,
        opts: CopyOptions,
        chmod: Chmod | None,
        include: PatternMatcher | None,
        exclude: PatternMatcher | None,
    ) -> None:
        self.src_root = src_root
        self.dest_root = dest_root
        self.opts = opts
        self.chmod = chmod
        self.include = include
        self.exclude = exclude
        self.hidden = opts.context_filter if opts.context_filter else None
        self._ctx_base = ""
        """The copied source's path relative to the source root (for `hidden`)."""
        self.can_chown = os.geteuid() == 0
        self.meta = _Meta(
            opts.owner, opts.preserve_owner, chmod, opts.timestamp_ns, self.can_chown, opts.reuse, opts.on_file
        )
        self.pool = _DataPool(self.meta)
        self.finished: list[_Frame] = []
        """Copied directories in post-order; their metadata is applied last."""
        self.n_dirs = self.n_links = self.n_special = self.n_reused = 0

    # -- bookkeeping -------------------------------------------------------------

    def stats(self) -> CopyStats:
        return CopyStats(
            files=self.pool.files + self.n_reused,
            dirs=self.n_dirs,
            symlinks=self.n_links,
            hardlinks=self.pool.hardlinks,
            special=self.n_special,
            bytes=self.pool.bytes,
        )

    def describe(self, err: OSError) -> str:
        """An OSError as one line, with host paths shown inside their roots."""
        what = err.strerror or str(err)
        name = err.filename
        if isinstance(name, str):
            for root, label in ((self.dest_root, "destination"), (self.src_root, "source")):
                if is_within(root, name):
                    return f"copy failed: {what}: {label} {relative_to_root(root, name)}"
        return f"copy failed: {what}"

    def _in_dest(self, host: str) -> str:
        return relative_to_root(self.dest_root, host)

    # -- the walk ------------------------------------------------------------------

    def run(self, sources: Sequence[Selected], dest: str, dir_intent: bool) -> None:
        if not self.opts.create_dest_path:
            parent = resolve_in_root(self.dest_root, posixpath.dirname(dest))
            if not os.path.isdir(parent):
                raise CopyError(f"failed to stat {dest}: no such file or directory")
        for i, sel in enumerate(sources):
            if i:
                # Files of the previous source may still be being created by the
                # workers; a later source must see (and replace) them. Hardlinks are
                # kept within one source, like BuildKit's per-source copier.
                self.pool.drain()
                self.pool.inodes.clear()
            self._copy_source(sel, dest, dir_intent)
        # Directory metadata goes last, once no worker adds entries any more:
        # children before parents, later sources after earlier ones.
        self.pool.drain()
        for frame in self.finished:
            self._finish_dir(frame)

    def _copy_source(self, sel: Selected, dest: str, dir_intent: bool) -> None:
        if not is_within(self.src_root, sel.host_path):
            raise ContextError(f'"/{sel.rel}": escapes the source root')
        base = os.path.relpath(sel.host_path, self.src_root)
        self._ctx_base = "" if base == "." else base
        try:
            st = os.lstat(sel.host_path)
        except (FileNotFoundError, NotADirectoryError):
            raise ContextError(f'"/{sel.rel}": not found') from None
        is_dir = stat.S_ISDIR(st.st_mode)
        name = posixpath.basename(sel.rel)
        if not is_dir and self.exclude is not None and self.exclude.matches(name):
            return
        if self.opts.parents and not self.opts.include_patterns:
            self._copy_with_parents(sel, st, dest)
            return
        contents = self.opts.dir_contents_only or self.opts.parents
        if dir_intent or self.opts.parents:
            self._mkdir_all(dest)
        else:
            self._mkdir_all(posixpath.dirname(dest))
        target = resolve_in_root(self.dest_root, dest)
        try:
            dst_st: os.stat_result | None = os.lstat(target)
        except (FileNotFoundError, NotADirectoryError):
            dst_st = None
        if dst_st is not None and ((not contents and is_dir) or (not is_dir and stat.S_ISDIR(dst_st.st_mode))):
            target = os.path.join(target, name) if name else target
        if contents and is_dir and dst_st is None:
            self._mkdir_all(self._in_dest(target))
        else:
            self._mkdir_all(posixpath.dirname(self._in_dest(target)))
        if self.opts.parents and not sel.from_wildcard:
            self._check_required(sel)
        self._copy_top(sel.host_path, st, target)

    def _check_required(self, sel: Selected) -> None:
        """BuildKit's required paths: a --parents source without wildcards must exist."""
        for pattern in self.opts.include_patterns:
            p = pattern.strip()
            if not p or p.startswith("!") or any(c in p for c in "*?[\\"):
                continue
            path = clean(f"{sel.rel}/{p}")
            host = resolve_in_root(self.src_root, path, follow_final=False)
            if not os.path.lexists(host):
                raise ContextError(f'"{path}": not found')
            if self.hidden is not None:
                rel = os.path.relpath(host, self.src_root)
                if not self.hidden.visible(host, rel, os.path.isdir(host) and not os.path.islink(host)):
                    raise self.hidden.not_found(path)

    def _copy_with_parents(self, sel: Selected, st: os.stat_result, dest: str) -> None:
        """--parents without a pivot: recreate the source's parent dirs below dest."""
        dst = self._mkdir_all(dest)
        parts = [p for p in sel.rel.split("/") if p]
        ancestors: list[_Frame] = []
        for depth, part in enumerate(parts[:-1]):
            src_dir = resolve_in_root(self.src_root, "/" + "/".join(parts[: depth + 1]))
            dst = os.path.join(dst, part)
            try:
                dst_st = os.lstat(dst)
            except FileNotFoundError:
                dst_st = None
            if dst_st is not None:
                if not stat.S_ISDIR(dst_st.st_mode):
                    raise CopyError(f"cannot copy to non-directory: {self._in_dest(dst)}")
                continue
            os.mkdir(dst, 0o700)
            self.n_dirs += 1
            try:
                parent_st = os.lstat(src_dir)
            except FileNotFoundError:
                parent_st = None
            if parent_st is not None and stat.S_ISDIR(parent_st.st_mode):
                ancestors.append(_Frame(src_dir, dst, parent_st, "", True, True, _META_FULL, (), ()))
            else:
                os.chmod(dst, 0o755)
        target = os.path.join(dst, parts[-1]) if parts else dst
        if stat.S_ISDIR(st.st_mode):
            try:
                existing = os.lstat(target)
            except FileNotFoundError:
                existing = None
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                raise CopyError(f"cannot copy to non-directory: {self._in_dest(target)}")
            created = existing is None
            if created:
                os.mkdir(target, 0o700)
                self.n_dirs += 1
            self._walk(_Frame(sel.host_path, target, st, "", True, created, _META_FULL, (), (), fresh=created))
        else:
            self._copy_leaf(sel.host_path, st, target, fresh=False)
        self.finished.extend(reversed(ancestors))

    def _copy_top(self, src: str, st: os.stat_result, target: str) -> None:
        if not stat.S_ISDIR(st.st_mode):
            self._copy_leaf(src, st, target, fresh=False)
            return
        try:
            existing = os.lstat(target)
        except FileNotFoundError:
            existing = None
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            raise CopyError(f"cannot copy to non-directory: {self._in_dest(target)}")
        created = existing is None
        if created:
            os.mkdir(target, 0o700)
            self.n_dirs += 1
        meta = _META_FULL if created else _META_TIMES
        self._walk(_Frame(src, target, st, "", True, created, meta, (), (), fresh=created))

    def _mkdir_all(self, path: str) -> str:
        """Create `path` (in-root) and missing parents as 0755 dirs; the resolved host path."""
        host = resolve_in_root(self.dest_root, path)
        rel = os.path.relpath(host, self.dest_root)
        if rel == ".":
            return host
        cur = self.dest_root
        for part in rel.split("/"):
            cur = os.path.join(cur, part)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                os.mkdir(cur, 0o755)
                os.chmod(cur, 0o755)
                if self.opts.owner is not None and self.can_chown:
                    os.chown(cur, *self.opts.owner, follow_symlinks=False)
                if self.opts.timestamp_ns is not None:
                    ts = self.opts.timestamp_ns
                    os.utime(cur, ns=(ts, ts), follow_symlinks=False)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise CopyError(
                    f"cannot create directory {self._in_dest(host)}: {self._in_dest(cur)} is not a directory"
                )
        return host

    def _walk(self, top: _Frame) -> None:
        stack = [top]
        include, exclude = self.include, self.exclude
        while stack:
            frame = stack[-1]
            if frame.entries is None:
                frame.entries = _list_dir(frame.src)
            entries = frame.entries
            descended = False
            while frame.index < len(entries):
                name, st = entries[frame.index]
                frame.index += 1
                rel = f"{frame.rel}/{name}" if frame.rel else name
                included = True
                inc: MatchInfo = ()
                exc: MatchInfo = ()
                if include is not None:
                    included, inc = include.matches_with_parent(rel, frame.inc or None)
                excluded = False
                if exclude is not None:
                    excluded, exc = exclude.matches_with_parent(rel, frame.exc or None)
                    if excluded:
                        included = False
                hidden = ""
                if self.hidden is not None:
                    ctx_rel = f"{self._ctx_base}/{rel}" if self._ctx_base else rel
                    if self.hidden(ctx_rel, st is not None and stat.S_ISDIR(st.st_mode)):
                        hidden = ctx_rel
                        included = False
                src = f"{frame.src}/{name}"
                dst = f"{frame.dst}/{name}"
                if st is not None and stat.S_ISDIR(st.st_mode):
                    if not included and not self._may_descend(rel, included, excluded, inc, hidden):
                        continue
                    child = _Frame(src, dst, st, rel, False, False, _META_FULL if included else _META_NONE, inc, exc)
                    if included:
                        self._materialize(stack)
                        self._enter_dir(child, frame.fresh)
                    stack.append(child)
                    descended = True
                    break
                if not included:
                    continue
                if not frame.materialized:
                    self._materialize(stack)
                if st is None and self.meta.reuse is not None:
                    st = os.lstat(src)  # a reuse candidate is judged by its stat
                if st is None:
                    if not frame.fresh:
                        self._clear_target(dst)
                    self.pool.add((src, dst))
                else:
                    self._copy_leaf(src, st, dst, frame.fresh)
            if descended:
                continue
            stack.pop()
            frame.entries = None
            if frame.materialized and frame.meta != _META_NONE:
                self.finished.append(frame)

    def _may_descend(self, rel: str, included: bool, excluded: bool, inc: MatchInfo, hidden: str = "") -> bool:
        """Could anything below this not-copied directory still be copied?

        `hidden` is the directory's context path when `.dockerignore` excludes it.
        """
        if self.include is not None and not any(inc) and not self.include.may_match_below(rel):
            return False
        if excluded:
            assert self.exclude is not None
            if not (self.exclude.exclusions and self.exclude.may_match_below(rel, exclusion=True)):
                return False
        if hidden:
            assert self.hidden is not None
            return self.hidden.may_reinclude_below(hidden)
        return True

    def _enter_dir(self, frame: _Frame, parent_fresh: bool) -> None:
        """Create (or merge into) the destination directory of a nested source dir."""
        existing: os.stat_result | None = None
        if not parent_fresh:
            try:
                existing = os.lstat(frame.dst)
            except FileNotFoundError:
                existing = None
        if existing is None:
            os.mkdir(frame.dst, 0o700)
            frame.created = frame.fresh = True
            frame.meta = _META_FULL
            self.n_dirs += 1
        elif not stat.S_ISDIR(existing.st_mode):
            raise CopyError(f"cannot copy to non-directory: {self._in_dest(frame.dst)}")
        elif frame.meta == _META_NONE:
            # An existing directory only on the way to matching entries takes the
            # source's mode (BuildKit's overwriteTargetMetadata) and nothing else.
            frame.meta = _META_MODE
        frame.materialized = True

    def _materialize(self, stack: list[_Frame]) -> None:
        """Create the not-yet-created ancestors of an entry that matched a pattern."""
        parent_fresh = False
        for frame in stack:
            if not frame.materialized:
                self._enter_dir(frame, parent_fresh)
            parent_fresh = frame.fresh

    def _finish_dir(self, frame: _Frame) -> None:
        if frame.meta == _META_FULL:
            self._dir_meta(frame.src, frame.st, frame.dst, full=True)
        elif frame.meta == _META_TIMES:
            os.utime(frame.dst, ns=self.meta.times(frame.st), follow_symlinks=False)
        elif frame.meta == _META_MODE:
            os.chmod(frame.dst, self.meta.perm(frame.st))

    def _dir_meta(self, src: str, st: os.stat_result, dst: str, *, full: bool) -> None:
        if full:
            if self.can_chown:
                os.chown(dst, *self.meta.ids(st), follow_symlinks=False)
            os.chmod(dst, self.meta.perm(st))
            _copy_xattrs(src, dst)
        os.utime(dst, ns=self.meta.times(st), follow_symlinks=False)

    def _clear_target(self, dst: str) -> None:
        """BuildKit's ensureEmptyFileTarget: remove a non-directory, refuse a directory."""
        try:
            st = os.lstat(dst)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise CopyError(f"cannot replace to directory {self._in_dest(dst)} with file")
        os.unlink(dst)

    def _link_reused(self, src: str, st: os.stat_result, dst: str) -> bool:
        """Hard-link an identical file of an earlier layer instead of copying it, when allowed.

        The oracle vouches for content and xattrs (it only offers files whose source is
        untouched since, ctime included); the copier checks that the candidate has exactly
        the size, owner, mode and mtime a fresh copy would get.
        """
        meta = self.meta
        if st.st_nlink > 1 or meta.reuse is None:
            return False
        candidate = meta.reuse(src, st)
        if candidate is None:
            return False
        try:
            cst = os.lstat(candidate)
            if (
                not stat.S_ISREG(cst.st_mode)
                or cst.st_size != st.st_size
                or stat.S_IMODE(cst.st_mode) != meta.perm(st)
                or cst.st_mtime_ns != meta.times(st)[1]
                or (meta.chown and (cst.st_uid, cst.st_gid) != meta.ids(st))
            ):
                return False
            os.link(candidate, dst, follow_symlinks=False)
        except OSError:
            return False
        self.n_reused += 1
        if meta.on_file is not None:
            meta.on_file(src, dst, st)
        return True

    def _copy_leaf(self, src: str, st: os.stat_result, dst: str, fresh: bool) -> None:
        """Copy a non-directory entry, replacing whatever non-directory is at `dst`."""
        mode = st.st_mode
        if not fresh:
            self._clear_target(dst)
        if stat.S_ISREG(mode):
            if self.meta.reuse is not None and self._link_reused(src, st, dst):
                return
            self.pool.add((src, dst))
            return
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), dst)
            self.n_links += 1
            if self.can_chown:
                os.chown(dst, *self.meta.ids(st), follow_symlinks=False)
            _copy_xattrs(src, dst)
            os.utime(dst, ns=self.meta.times(st), follow_symlinks=False)
            return
        # fifo, socket, character or block device
        os.mknod(dst, stat.S_IFMT(mode) | 0o600, st.st_rdev)
        self.n_special += 1
        if self.can_chown:
            os.chown(dst, *self.meta.ids(st), follow_symlinks=False)
        os.chmod(dst, self.meta.perm(st))
        _copy_xattrs(src, dst)
        os.utime(dst, ns=self.meta.times(st), follow_symlinks=False)


def _list_dir(path: str) -> list[tuple[str, os.stat_result | None]]:
    """Sorted (name, lstat) of a directory opened without following a symlink.

    Regular files get no stat here (None): their type comes from the directory entry
    (or a stat Python does itself when the filesystem does not report types), and
    the worker that copies them fstats the open source instead.
    """
    fd = os.open(path, _O_DIR)
    try:
        with os.scandir(fd) as it:
            entries = [
                (e.name, None if e.is_file(follow_symlinks=False) else e.stat(follow_symlinks=False)) for e in it
            ]
    finally:
        os.close(fd)
    entries.sort(key=_entry_key)
    return entries


def _entry_key(item: tuple[str, object]) -> bytes:
    return os.fsencode(item[0])


def _copy_xattrs(src: str, dst: str) -> None:
    """Best effort, like BuildKit (which logs and ignores xattr errors)."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        if name.startswith("trusted.overlay."):
            continue
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            pass


_Job = tuple[str, str]
"""(source path, destination path) of one regular file."""


class _DataPool:
    """Creates and fills regular files on a few threads, in batches.

    Creating inodes and copying data are the expensive parts of a copy, and both
    happen in system calls that release the GIL, so a few threads overlap them. A
    worker opens the source (O_NOFOLLOW|O_NONBLOCK), fstats it, creates the
    destination (O_CREAT|O_EXCL|O_NOFOLLOW), copies the data in the kernel and sets
    owner, mode, xattrs and times through the descriptor. A source with several links
    is created once and linked for the other names (under a lock, so the entry exists
    before anyone links to it). `drain` waits until every queued file is complete.
    """

    def __init__(self, meta: _Meta, threads: int | None = None) -> None:
        self.meta = meta
        self.threads = threads or min(4, (os.cpu_count() or 1) + 1)
        self.files = 0
        self.bytes = 0
        self.hardlinks = 0
        self.inodes: dict[tuple[int, int], str] = {}
        self._batch: list[_Job] = []
        self._queue: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(self.threads * 4)
        self._workers: list[threading.Thread] = []
        self._error: BaseException | None = None
        self._pending = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def add(self, job: _Job) -> None:
        self._batch.append(job)
        if len(self._batch) >= _BATCH_FILES:
            self._flush()

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        if self._error is not None:
            raise self._error
        if not self._workers:
            for i in range(self.threads):
                t = threading.Thread(target=self._work, name=f"copy-data-{i}", daemon=True)
                t.start()
                self._workers.append(t)
        self._slots.acquire()
        with self._lock:
            self._pending += 1
        self._queue.put(batch)

    def drain(self) -> None:
        """Wait until every file added so far is complete; re-raise a worker error."""
        if not self._workers:
            batch, self._batch = self._batch, []
            if self._error is None:
                self._run(batch)  # a small copy: no threads at all
        else:
            self._flush()
            with self._idle:
                while self._pending:
                    self._idle.wait()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop after an error elsewhere: drop queued work, raise nothing."""
        self._batch = []
        self._error = self._error or _Aborted()
        self._stop()

    def close(self) -> None:
        """Finish every queued file and stop the workers; re-raise a worker error."""
        try:
            self.drain()
        finally:
            self._stop()

    def _stop(self) -> None:
        for _ in self._workers:
            self._queue.put(None)
        for t in self._workers:
            t.join()
        self._workers.clear()

    def _work(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            try:
                if self._error is None:
                    self._run(batch)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                with self._lock:
                    if self._error is None:
                        self._error = err
            finally:
                self._slots.release()
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _run(self, batch: list[_Job]) -> None:
        files = nbytes = links = 0
        try:
            for src, dst in batch:
                copied = self._copy_file(src, dst)
                if copied < 0:
                    links += 1
                else:
                    files += 1
                    nbytes += copied
        finally:
            with self._lock:
                self.files += files
                self.bytes += nbytes
                self.hardlinks += links

    def _copy_file(self, src: str, dst: str) -> int:
        """Copy one regular file; the number of bytes, or -1 when it became a hardlink."""
        meta = self.meta
        sfd = os.open(src, _O_SRC)
        dfd = -1
        try:
            st = os.fstat(sfd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "source changed during the copy (no longer a regular file)", src)
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                with self._lock:
                    first = self.inodes.get(key)
                    if first is None:
                        dfd = os.open(dst, _O_DST, 0o600)
                        self.inodes[key] = dst
                if first is not None:
                    try:
                        os.link(first, dst, follow_symlinks=False)
                        return -1
                    except FileNotFoundError:
                        pass  # the first copy was replaced meanwhile: copy the data again
            if dfd < 0:
                dfd = os.open(dst, _O_DST, 0o600)
            size = st.st_size
            if size:
                _copy_data(sfd, dfd, size)
            if meta.chown:
                os.fchown(dfd, *meta.ids(st))
            os.fchmod(dfd, meta.perm(st))
            for name in os.listxattr(sfd):
                if not name.startswith("trusted.overlay."):
                    try:
                        os.setxattr(dfd, name, os.getxattr(sfd, name))
                    except OSError:
                        pass
            os.utime(dfd, ns=meta.times(st))
            if meta.on_file is not None and st.st_nlink == 1:
                meta.on_file(src, dst, st)
            return size
        finally:
            os.close(sfd)
            if dfd >= 0:
                os.close(dfd)


class _Aborted(Exception):
    """Marks a pool whose remaining work is to be dropped."""


_use_copy_file_range = hasattr(os, "copy_file_range")


def _copy_data(sfd: int, dfd: int, size: int) -> None:
    global _use_copy_file_range
    done = 0
    if _use_copy_file_range:
        try:
            while done < size:
                n = os.copy_file_range(sfd, dfd, min(size - done, _CHUNK))
                if n == 0:
                    return
                done += n
            return
        except OSError as err:
            if done or err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EPERM):
                raise
            if err.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
                _use_copy_file_range = False
    while done < size:
        n = os.sendfile(dfd, sfd, None, min(size - done, _CHUNK))
        if n == 0:
            return
        done += n
