"""Executing an `ExecOp` (a RUN): a container on a writable snapshot of its root input.

This is the one place that starts a build container, so the entitlements a step
needs (`--network=host`, `--security=insecure`) are checked here too, whatever
checked them before. Extra mounts come from `engine.solver.mounts`; everything they
set up is undone (and their mountpoints removed from the rootfs) before the new
layer is committed, so no mount, stub, secret or cache content lands in a layer.
"""

from __future__ import annotations

import secrets
import threading
from contextlib import ExitStack
from typing import TYPE_CHECKING, Mapping

from engine.errors import BuildStepError
from engine.graph.ops import ExecOp
from engine.solver.context import Engine
from engine.solver.results import OutputSink, Result, input_result
from engine.solver.session import BuildSession, entitlement_error, needed_entitlements

if TYPE_CHECKING:
    from engine.fs.selection import ContextFilter


def run_exec(
    engine: Engine,
    op: ExecOp,
    inputs: list[Result],
    *,
    name: str,
    on_output: OutputSink,
    cancel: threading.Event,
    session: BuildSession,
    context_filters: "Mapping[int, ContextFilter] | None" = None,
) -> int:
    """Run `op`; `context_filters` (`.dockerignore` per local-context input) shape bind mounts."""
    from engine.runtime.base import ProcessSpec
    from engine.runtime.users import resolve_user
    from engine.solver.mounts import prepare_mounts

    for entitlement, flag in needed_entitlements(op):
        if entitlement not in session.entitlements:
            raise entitlement_error(entitlement, flag)
    runtime = engine.runtime
    root = input_result(inputs, op.root_mount().input)
    snapshotter = engine.snapshotter
    active = snapshotter.prepare(root.snapshot)
    try:
        with ExitStack() as stack:
            user = resolve_user(active.root, op.user)
            env = list(op.env) + list(op.proxy_env)
            if not any(e.startswith("HOME=") for e in env):
                env.append(f"HOME={user.home}")
            prepared = prepare_mounts(engine, op, inputs, active.root, session, stack, cancel, context_filters)
            env = _with_overrides(env, prepared.env)
            spec = ProcessSpec(
                args=op.args,
                env=tuple(env),
                cwd=op.cwd,
                uid=user.uid,
                gid=user.gid,
                additional_gids=user.additional_gids,
                hostname=op.hostname or "buildkitsandbox",
                network="none" if op.network == "none" else "host",  # "default" is the host's network here
                mounts=prepared.mounts,
                security=op.security,
            )
            status = runtime.run(
                active.root, spec, container_id="sy-" + secrets.token_hex(6), on_output=on_output, cancel=cancel
            )
        if status != 0:
            raise BuildStepError(
                step=name,
                message=f"process \"{' '.join(op.args)}\" did not complete successfully",
                exit_status=status,
            )
        return snapshotter.commit(active)
    except BaseException:
        snapshotter.abort(active)
        raise


def _with_overrides(env: list[str], extra: tuple[str, ...]) -> list[str]:
    """`env` with the variables of `extra` (secrets exposed with `env=`) replacing their namesakes."""
    if not extra:
        return env
    names = {item.partition("=")[0] for item in extra}
    return [item for item in env if item.partition("=")[0] not in names] + list(extra)
