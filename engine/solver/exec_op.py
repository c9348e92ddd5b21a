"""Executing an `ExecOp` (a RUN): a container on a writable snapshot of its root input."""

from __future__ import annotations

import secrets
import threading
from contextlib import ExitStack

from engine.errors import BuildStepError
from engine.fs.safepath import resolve_in_root
from engine.graph.ops import ExecOp
from engine.solver.context import Engine
from engine.solver.results import OutputSink, Result, input_result
from engine.solver.session import BuildSession


def run_exec(
    engine: Engine,
    op: ExecOp,
    inputs: list[Result],
    *,
    name: str,
    on_output: OutputSink,
    cancel: threading.Event,
    session: BuildSession,
) -> int:
    from engine.runtime.base import BindMount, ProcessSpec, TmpfsMount
    from engine.runtime.users import resolve_user

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
            mounts: list[BindMount | TmpfsMount] = []
            for mount in op.mounts:
                if mount.target == "/":
                    continue
                if mount.type == "tmpfs":
                    mounts.append(TmpfsMount(mount.target, mount.tmpfs_size))
                elif mount.type == "bind":
                    source = input_result(inputs, mount.input)
                    base = source.context_path or stack.enter_context(snapshotter.view(source.snapshot))
                    mounts.append(BindMount(resolve_in_root(base, mount.selector), mount.target, mount.readonly))
            network = "none" if op.network == "none" else "host"
            spec = ProcessSpec(
                args=op.args,
                env=tuple(env),
                cwd=op.cwd,
                uid=user.uid,
                gid=user.gid,
                additional_gids=user.additional_gids,
                hostname=op.hostname or "buildkitsandbox",
                network=network,
                mounts=tuple(mounts),
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
