"""Executing a `FileOp` (COPY, ADD, WORKDIR's mkdir, heredoc files) on a snapshot."""

from __future__ import annotations

import os
import shutil
import stat
from contextlib import ExitStack

from engine.errors import ShipyardError
from engine.fs.safepath import resolve_in_root
from engine.graph.ops import CopyAction, FileOp, MkdirAction, MkfileAction, Owner, RmAction
from engine.solver.context import Engine
from engine.solver.results import Result, input_result


def run_file(engine: Engine, op: FileOp, inputs: list[Result]) -> int:
    direct = _try_direct_copy(engine, op, inputs)
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
                        _copy(source_root(action.source), active.root, action, from_context)
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


def _select_all(src_root: str, action: CopyAction) -> list:  # type: ignore[type-arg]
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
            )
        )
    return selected


def _copy_options(action: CopyAction, owner: tuple[int, int] | None, from_context: bool, **hooks: object):  # type: ignore[no-untyped-def]
    from engine.fs.copy import CopyOptions

    return CopyOptions(
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


def _try_direct_copy(engine: Engine, op: FileOp, inputs: list[Result]) -> int | None:
    """A single COPY written straight into a fresh layer, when the base allows (see direct_copy)."""
    from engine.fs.copy import copy_into
    from engine.solver import direct_copy

    if len(op.actions) != 1 or not isinstance(op.actions[0], CopyAction) or os.environ.get("SHIPYARD_NO_DIRECT_COPY"):
        return None
    action = op.actions[0]
    base, source = input_result(inputs, op.base), input_result(inputs, action.source)
    snapshotter = engine.snapshotter
    with ExitStack() as stack:
        src_root = source.context_path or stack.enter_context(snapshotter.view(source.snapshot))
        base_root = stack.enter_context(snapshotter.view(base.snapshot))
        selected = _select_all(src_root, action)
        plan = direct_copy.plan_direct(base_root, action, selected)
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
            copy_into(src_root, selected, active.root, action.dest, _copy_options(action, owner, source.context_path is not None, **hooks))
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


def _copy(src_root: str, dest_root: str, action: CopyAction, from_context: bool) -> None:
    from engine.fs.copy import copy_into

    selected = _select_all(src_root, action)
    copy_into(src_root, selected, dest_root, action.dest, _copy_options(action, resolve_owner(dest_root, action.owner), from_context))


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
