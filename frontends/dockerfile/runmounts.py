"""RUN --mount lowering: typed `RunMount`s become `Mount`s of the `ExecOp` and its extra inputs.

BuildKit's `dispatchRunMounts` (with `dispatchSecret` and `dispatchSSH`) decides the
defaults that depend on the step rather than on the mount's text, and so does this:

- targets of bind, cache and tmpfs mounts are relative to the WORKDIR, and none may
  be `/` (`invalid mount target "/"`);
- a bind mount reads the build context unless `from=` names a stage or an image; a
  cache mount without `from=` starts empty (BuildKit's `scratch`);
- `source=` is a path inside what is mounted, cleaned and made absolute;
- a cache id defaults to the target as written (`path.Clean(target)`);
- a secret's id is `source`, else `id`, else the target's base name, and its file
  lands at `/run/secrets/<id>` unless `env=` alone asks for an environment variable;
- an ssh socket defaults to id `default` at `/run/buildkit/ssh_agent.<n>`, and the
  first one becomes `SSH_AUTH_SOCK` unless the stage already sets that variable.

Secret values and ssh sockets are not inputs of the graph: only their ids are in the
op, so changing a secret's value never changes a cache key.
"""

from __future__ import annotations

import posixpath
from typing import Callable, Collection

from engine.errors import DockerfileError
from engine.graph.ops import SCRATCH, Mount
from engine.graph.vertex import Vertex
from frontends.dockerfile.mounts import RunMount

SECRET_MODE = 0o400
SSH_MODE = 0o600


def lower_run_mounts(
    mounts: tuple[RunMount, ...],
    *,
    source_for: Callable[[str, int], Vertex],
    cwd: str,
    filename: str,
    line: int,
    env_keys: Collection[str] = (),
    first_input: int = 1,
) -> tuple[list[Vertex], list[Mount], list[str]]:
    """(extra input vertices — input `first_input`, … of the exec —, their mounts, extra env "K=V").

    `source_for(from_, line)` gives the vertex a mount reads from: the build context
    for "", else a stage, a named context or an image. `env_keys` are the variables the
    step's environment already has (an existing `SSH_AUTH_SOCK` is kept).
    """
    inputs: list[Vertex] = []

    def input_of(from_: str) -> int:
        vertex = source_for(from_, line)
        for position, existing in enumerate(inputs):
            if existing.digest == vertex.digest:
                return first_input + position
        inputs.append(vertex)
        return first_input + len(inputs) - 1

    def fail(message: str) -> DockerfileError:
        return DockerfileError(message, filename, line)

    out: list[Mount] = []
    env: list[str] = []
    ssh_targets: list[str] = []
    for mount in mounts:
        if mount.unexpanded:
            raise fail(f"mount {mount.spec!r} was not expanded")  # the lowering expands every RUN first
        if mount.type == "secret":
            out.append(_secret(mount, fail))
            continue
        if mount.type == "ssh":
            lowered = _ssh(mount, len(ssh_targets), fail)
            ssh_targets.append(lowered.target)
            out.append(lowered)
            continue
        target = mount_target(mount.target, cwd)
        if target == "/":
            raise fail(f'invalid mount target "{target}"')
        selector = clean_path(mount.source)
        if mount.type == "tmpfs":
            out.append(Mount(target=target, type="tmpfs", tmpfs_size=mount.size or 0))
        elif mount.type == "cache":
            out.append(
                Mount(
                    target=target,
                    input=input_of(mount.from_) if mount.from_ else SCRATCH,
                    selector=selector,
                    readonly=mount.readonly,
                    type="cache",
                    cache_id=mount.id or go_clean(mount.target),
                    sharing=mount.sharing or "shared",  # type: ignore[arg-type]
                    mode=mount.mode,
                    uid=mount.uid,
                    gid=mount.gid,
                )
            )
        else:
            out.append(
                Mount(target=target, input=input_of(mount.from_), selector=selector, readonly=mount.readonly, type="bind")
            )
    if ssh_targets and "SSH_AUTH_SOCK" not in env_keys:
        env.append(f"SSH_AUTH_SOCK={ssh_targets[0]}")
    return inputs, out, env


def _secret(mount: RunMount, fail: Callable[[str], DockerfileError]) -> Mount:
    secret_id = mount.source or mount.id
    if not secret_id:
        if not mount.target:
            raise fail("one of source, target required")
        secret_id = posixpath.basename(mount.target.rstrip("/")) or mount.target
    target = clean_path(mount.target) if mount.target else ""
    if mount.env is None and not target:
        target = "/run/secrets/" + posixpath.basename(secret_id)
    if target == "/":
        raise fail(f'invalid mount target "{target}"')
    return Mount(
        target=target,
        readonly=True,
        type="secret",
        secret_id=secret_id,
        mode=SECRET_MODE if mount.mode is None else mount.mode,
        uid=mount.uid or 0,
        gid=mount.gid or 0,
        required=mount.required,
        env=mount.env or "",
    )


def _ssh(mount: RunMount, number: int, fail: Callable[[str], DockerfileError]) -> Mount:
    if mount.source:
        raise fail("ssh does not support source")
    target = clean_path(mount.target) if mount.target else f"/run/buildkit/ssh_agent.{number}"
    if target == "/":
        raise fail(f'invalid mount target "{target}"')
    return Mount(
        target=target,
        readonly=True,
        type="ssh",
        mode=SSH_MODE if mount.mode is None else mount.mode,
        uid=mount.uid or 0,
        gid=mount.gid or 0,
        required=mount.required,
        ssh_id=mount.id or "default",
    )


def go_clean(path: str) -> str:
    """Go's `path.Clean` (`""` → `.`, no leading `/` added)."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def clean_path(path: str) -> str:
    """`path.Join("/", path)`: absolute and clean, `..` never above `/`."""
    cleaned = posixpath.normpath("/" + path)
    return "/" + cleaned.lstrip("/")


def mount_target(target: str, cwd: str) -> str:
    """A mount target made absolute against the WORKDIR, as BuildKit joins it."""
    if go_clean(target).startswith("/"):
        return clean_path(target)
    return clean_path(posixpath.join(cwd or "/", target))
