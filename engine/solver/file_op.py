"""Executing a `FileOp` (COPY, ADD, WORKDIR's mkdir, heredoc files) on a snapshot.

Copies from a build context see it as BuildKit transfers it: what `.dockerignore`
excludes does not exist (`filters`, by input index). ADD's `attempt_unpack` extracts
each selected local archive into the destination instead of copying it (BuildKit's
`attemptUnpackDockerCompatibility`): a regular file whose content — after gzip,
bzip2, xz or zstd decompression, detected by magic bytes, not by name — starts with
a valid tar header. Extraction is root-scoped (`engine.fs.extract`, "oci" mode:
`.wh.` names are plain files, as Docker writes them); the archive's owners are kept
unless `--chown` is given, which then owns every extracted entry.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
from contextlib import ExitStack
from typing import TYPE_CHECKING, Mapping

from engine.errors import ShipyardError
from engine.fs.safepath import is_within, relative_to_root, resolve_in_root
from engine.graph.ops import CopyAction, FileOp, MkdirAction, MkfileAction, Owner, RmAction
from engine.solver.context import Engine
from engine.solver.results import Result, input_result

if TYPE_CHECKING:
    from engine.fs.selection import ContextFilter, Selected


def run_file(
    engine: Engine, op: FileOp, inputs: list[Result], filters: "Mapping[int, ContextFilter] | None" = None
) -> int:
    filters = filters or {}
    direct = _try_direct_copy(engine, op, inputs, filters)
    if direct is not None:
        return direct
    snapshotter = engine.snapshotter
    base = input_result(inputs, op.base)
    active = snapshotter.prepare(base.snapshot)
    try:
        with ExitStack() as stack:
            views: dict[int, str] = {}

            def source_root(index: int) -> str:
                if index not in views:
                    source = input_result(inputs, index)
                    views[index] = source.context_path or stack.enter_context(snapshotter.view(source.snapshot))
                return views[index]

            for action in op.actions:
                match action:
                    case CopyAction():
                        from_context = input_result(inputs, action.source).context_path is not None
                        flt = filters.get(action.source) if from_context else None
                        _copy(source_root(action.source), active.root, action, from_context, flt)
                    case MkdirAction():
                        _mkdir(active.root, action)
                    case MkfileAction():
                        _mkfile(active.root, action)
                    case RmAction():
                        _rm(active.root, action)
        return snapshotter.commit(active)
    except BaseException:
        snapshotter.abort(active)
        raise


def _select_all(src_root: str, action: CopyAction, flt: "ContextFilter | None" = None) -> "list[Selected]":
    from engine.fs.selection import select_sources

    selected = []
    for src in action.src:
        selected.extend(
            select_sources(
                src_root,
                src,
                allow_wildcard=action.allow_wildcard,
                follow_symlinks=action.follow_symlinks,
                allow_empty_wildcard=action.allow_empty_wildcard,
                context_filter=flt,
            )
        )
    return selected


def _copy_options(  # type: ignore[no-untyped-def]
    action: CopyAction,
    owner: tuple[int, int] | None,
    from_context: bool,
    flt: "ContextFilter | None" = None,
    **hooks: object,
):
    from engine.fs.copy import CopyOptions

    return CopyOptions(
        context_filter=flt,
        owner=owner,
        preserve_owner=not from_context,
        mode=action.mode,
        mode_str=action.mode_str,
        dir_contents_only=action.dir_contents_only,
        create_dest_path=action.create_dest_path,
        include_patterns=action.include_patterns,
        exclude_patterns=action.exclude_patterns,
        parents=action.parents,
        **hooks,  # type: ignore[arg-type]
    )


def _try_direct_copy(
    engine: Engine, op: FileOp, inputs: list[Result], filters: "Mapping[int, ContextFilter]"
) -> int | None:
    """A single COPY written straight into a fresh layer, when the base allows (see direct_copy)."""
    from engine.fs.copy import copy_into
    from engine.solver import direct_copy

    if len(op.actions) != 1 or not isinstance(op.actions[0], CopyAction) or os.environ.get("SHIPYARD_NO_DIRECT_COPY"):
        return None
    action = op.actions[0]
    base, source = input_result(inputs, op.base), input_result(inputs, action.source)
    flt = filters.get(action.source) if source.context_path is not None else None
    snapshotter = engine.snapshotter
    with ExitStack() as stack:
        src_root = source.context_path or stack.enter_context(snapshotter.view(source.snapshot))
        base_root = stack.enter_context(snapshotter.view(base.snapshot))
        selected = _select_all(src_root, action, flt)
        planned = action
        if action.attempt_unpack:
            if any(not sel.is_dir and is_archive(sel.host_path) for sel in selected):
                return None  # extraction goes through the general path
            planned = dataclasses.replace(action, attempt_unpack=False)
        plan = direct_copy.plan_direct(base_root, planned, selected)
        if plan is None:
            return None
        owner = resolve_owner(base_root, action.owner)
        reuse = None
        hooks: dict[str, object] = {}
        if source.context_path is not None:
            lineage = direct_copy.lineage_of(action, source.context_path)
            reuse = direct_copy.LayerReuse(engine.index, str(engine.state.layers), lineage, source.context_path)
            hooks = {"reuse": reuse.candidate, "on_file": reuse.copied}
        active = snapshotter.prepare_layer(base.snapshot)
        try:
            direct_copy.recreate_dirs(active.root, plan)
            options = _copy_options(action, owner, source.context_path is not None, flt, **hooks)
            copy_into(src_root, selected, active.root, action.dest, options)
            direct_copy.restore_ancestor_times(active.root, plan)
            snapshot = snapshotter.commit(active)
        except BaseException:
            snapshotter.abort(active)
            raise
    if reuse is not None:
        reuse.record(active.root, engine.index.snapshot(snapshot).layer.id)
    return snapshot


def resolve_owner(root: str, owner: Owner | None) -> tuple[int, int] | None:
    """`--chown` semantics: names from the destination's /etc files; a lone user means gid = uid."""
    if owner is None:
        return None
    from engine.runtime.users import resolve_user

    if not owner.group:
        uid = resolve_user(root, owner.user).uid
        return uid, uid
    resolved = resolve_user(root, f"{owner.user}:{owner.group}")
    return resolved.uid, resolved.gid


def _copy(src_root: str, dest_root: str, action: CopyAction, from_context: bool, flt: "ContextFilter | None" = None) -> None:
    from engine.fs.copy import MULTIPLE_SOURCES_MESSAGE, CopyError, copy_into

    selected = _select_all(src_root, action, flt)
    owner = resolve_owner(dest_root, action.owner)
    options = _copy_options(action, owner, from_context, flt)
    if action.attempt_unpack:
        archives = [not sel.is_dir and is_archive(sel.host_path) for sel in selected]
        if any(archives):
            dest = action.dest
            if len(selected) > 1 and not (dest.endswith(("/", "/.")) or dest in ("", ".")):
                raise CopyError(MULTIPLE_SOURCES_MESSAGE)
            for sel, archive in zip(selected, archives):
                if archive:
                    unpack_archive(sel.host_path, dest_root, dest, owner)
                else:
                    copy_into(src_root, [sel], dest_root, dest, options)
            return
    copy_into(src_root, selected, dest_root, action.dest, options)


def is_archive(path: str) -> bool:
    """BuildKit's `isArchivePath`: a regular file whose decompressed content opens with a tar header."""
    from engine.fs.tarformat import TarReader
    from engine.oci.compress import decompress_stream

    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with open(path, "rb") as f:
            stream = decompress_stream(f)
            try:
                return TarReader(stream).next() is not None
            finally:
                stream.close()
    except Exception:  # noqa: BLE001 - unreadable, not decompressible or not tar: copied as a file
        return False


def unpack_archive(archive: str, dest_root: str, dest: str, owner: tuple[int, int] | None) -> None:
    """Extract a (possibly compressed) tar into directory `dest` inside `dest_root`.

    The destination and its missing parents are created 0755 (owned by `owner` when
    given). Members keep the archive's owners, modes and times; with `owner`, every
    member becomes theirs (BuildKit overrides the header's ids with `--chown`).
    """
    from engine.fs.extract import LayerLimitError, extract_layer
    from engine.limits import load_limits
    from engine.oci.compress import DecompressionLimitError, decompress_stream

    limits = load_limits()
    target = _make_dirs(dest_root, dest, owner)
    with open(archive, "rb") as f:
        stream = decompress_stream(f, max_bytes=limits.layer_bytes)
        try:
            extract_layer(stream, target, mode="oci", max_bytes=limits.layer_bytes, max_entries=limits.layer_entries)
        except (DecompressionLimitError, LayerLimitError) as exc:
            raise limits.exceeded(f"ADD {os.path.basename(archive)}", exc) from None
        finally:
            stream.close()
    if owner is not None:
        _chown_members(archive, target, owner, limits.layer_bytes)


def _make_dirs(root: str, path: str, owner: tuple[int, int] | None) -> str:
    host = resolve_in_root(root, path)
    rel = os.path.relpath(host, root)
    current = root
    for part in [] if rel == "." else rel.split("/"):
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            os.chmod(current, 0o755)
            _chown(current, owner)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ShipyardError(f"cannot unpack into {path}: {relative_to_root(root, current)} is not a directory")
    return host


def _chown_members(archive: str, target: str, owner: tuple[int, int], max_bytes: int) -> None:
    """Give every extracted member `owner`, then restore its mode (chown clears setuid bits)."""
    from engine.fs.extract import member_components
    from engine.fs.tarformat import SYMTYPE, TarReader
    from engine.oci.compress import decompress_stream

    with open(archive, "rb") as f:
        stream = decompress_stream(f, max_bytes=max_bytes)
        try:
            reader = TarReader(stream)
            while (header := reader.next()) is not None:
                comps = [os.fsdecode(c) for c in member_components(header.name)]
                if not comps:
                    continue
                parent = resolve_in_root(target, "/" + "/".join(comps[:-1]))
                path = os.path.join(parent, comps[-1])
                if not is_within(target, path) or not os.path.lexists(path):
                    continue
                os.chown(path, owner[0], owner[1], follow_symlinks=False)
                if header.typeflag != SYMTYPE and not os.path.islink(path):
                    os.chmod(path, header.mode & 0o7777)
        finally:
            stream.close()


def _chown(path: str, owner: tuple[int, int] | None) -> None:
    if owner is not None:
        os.chown(path, owner[0], owner[1], follow_symlinks=False)


def _mkdir(root: str, action: MkdirAction) -> None:
    owner = resolve_owner(root, action.owner)
    target = resolve_in_root(root, action.path)
    if os.path.isdir(target):
        return
    missing: list[str] = []
    probe = target
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    if not action.make_parents and len(missing) > 1:
        raise ShipyardError(f"mkdir {action.path}: parent directory does not exist")
    for path in reversed(missing):
        os.mkdir(path)
        os.chmod(path, action.mode)
        _chown(path, owner)


def _mkfile(root: str, action: MkfileAction) -> None:
    target = resolve_in_root(root, action.path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as f:
        f.write(action.data)
    os.chmod(target, action.mode)
    _chown(target, resolve_owner(root, action.owner))


def _rm(root: str, action: RmAction) -> None:
    target = resolve_in_root(root, action.path, follow_final=False)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        if action.allow_not_found:
            return
        raise ShipyardError(f"rm {action.path}: not found") from None
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(target)
    else:
        os.unlink(target)
