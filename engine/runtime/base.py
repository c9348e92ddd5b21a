"""The one seam between the solver and whatever runs a container.

A `RUN` step needs exactly this: a prepared root directory, a process description
and a way to stream its output. Every backend (runc/crun through an OCI bundle, the
builtin namespace executor) implements `Runtime`, so tests swap one real backend for
another and the solver never learns which one it talks to.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Callable, Literal, Protocol

from engine.errors import RuntimeBackendError
from engine.fs.safepath import clean

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_HOSTNAME = "buildkitsandbox"

# Names inside state_root/runtime/ that belong to the runtimes themselves, so a
# container id may not take them for its per-container directory.
RESERVED_IDS = frozenset({"runc", "crun", "builtin", "probe.json", "probe-rootfs"})
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")

# Exit statuses for a process that never started, as Docker and shells report them.
STATUS_NOT_FOUND = 127
STATUS_CANNOT_EXECUTE = 126
STATUS_RUNTIME_FAILED = 125


@dataclass(frozen=True)
class BindMount:
    """A host path (`source`) made visible at `target` inside the container."""

    source: str
    target: str
    readonly: bool = True


@dataclass(frozen=True)
class TmpfsMount:
    """An empty tmpfs at `target`; `size` in bytes, 0 for the kernel default."""

    target: str
    size: int = 0


@dataclass(frozen=True)
class Resources:
    """cgroup limits for a container; 0 means "no limit" for every field.

    `memory_swap` is memory plus swap, as Docker's `--memory-swap`: 0 gives
    Docker's default (twice `memory`), -1 unlimited swap.
    """

    memory: int = 0
    memory_swap: int = 0
    cpu_quota: int = 0
    cpu_period: int = 0

    @property
    def empty(self) -> bool:
        return not (self.memory or self.cpu_quota)


NO_LIMITS = Resources()


@dataclass(frozen=True)
class ProcessSpec:
    """Everything about the process and its sandbox except the root filesystem.

    The fields after `security` serve long-lived containers (`shipyard run`):
    `network="netns"` joins the namespace at `netns_path` (made by the caller,
    who publishes ports into it); `terminal` gives the process a pty whose master
    the caller receives; `resources` are cgroup limits. Rootless mode needs no
    field: the engine itself runs as root of a user namespace (`engine.rootless`)
    and the backends adapt their config to it (`ocispec.default_mounts`).
    """

    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    hostname: str = DEFAULT_HOSTNAME
    network: Literal["host", "none", "netns"] = "host"
    mounts: tuple[BindMount | TmpfsMount, ...] = ()
    readonly_rootfs: bool = False
    security: Literal["sandbox", "insecure"] = "sandbox"
    netns_path: str = ""
    terminal: bool = False
    console_size: tuple[int, int] = (0, 0)
    resources: Resources = NO_LIMITS


OutputCallback = Callable[[int, bytes], None]


class Runtime(Protocol):
    """Runs one process in a fresh container on `rootfs` and waits for it.

    `run` returns the exit status (128+N when killed by signal N), streams stdout
    (fd 1) and stderr (fd 2) to `on_output` from a reader thread, and raises
    `BuildCancelled` promptly after `cancel` is set, with everything cleaned up.
    """

    name: str

    def run(
        self,
        rootfs: str,
        spec: ProcessSpec,
        *,
        container_id: str,
        on_output: OutputCallback,
        cancel: threading.Event,
    ) -> int: ...


class ContainerSetupError(RuntimeBackendError):
    """A container that could not be set up for reasons its spec or rootfs caused.

    Backends report it like runc reports a failed start: the message on the
    process's stderr and a non-zero status (127 not found, 126 cannot execute,
    125 anything else), so the solver shows it as the step's failure.
    """

    def __init__(self, message: str, status: int = STATUS_RUNTIME_FAILED) -> None:
        super().__init__(message)
        self.status = status


def process_env(spec: ProcessSpec) -> tuple[str, ...]:
    """The environment as the process sees it: PATH defaults like runc's callers do."""
    if any(entry.startswith("PATH=") for entry in spec.env):
        return spec.env
    return (f"PATH={DEFAULT_PATH}",) + spec.env


def check_spec(spec: ProcessSpec) -> None:
    """Reject specs no runtime can honour, with the same message for every backend."""
    if not spec.args or not spec.args[0]:
        raise RuntimeBackendError("container process has no command")
    for value in spec.args + spec.env:
        if "\0" in value:
            raise RuntimeBackendError("container command or environment contains a NUL byte")
    if not spec.cwd.startswith("/"):
        raise RuntimeBackendError(f"working directory {spec.cwd!r} is not absolute")
    for mount in spec.mounts:
        if not mount.target.startswith("/") or clean(mount.target) == "/":
            raise RuntimeBackendError(f"mount target {mount.target!r} is not an absolute path below /")
        if isinstance(mount, BindMount) and not mount.source.startswith("/"):
            raise RuntimeBackendError(f"bind mount source {mount.source!r} is not absolute")
    if spec.network not in ("host", "none", "netns"):
        raise RuntimeBackendError(f"unknown network mode {spec.network!r}")
    if (spec.network == "netns") != bool(spec.netns_path) or (spec.netns_path and not spec.netns_path.startswith("/")):
        raise RuntimeBackendError("network mode netns needs an absolute namespace path (and only it takes one)")
    if spec.security not in ("sandbox", "insecure"):
        raise RuntimeBackendError(f"unknown security mode {spec.security!r}")


def check_container_id(container_id: str) -> None:
    """Ids name directories and runc state; keep them to runc's own alphabet."""
    if not _ID_RE.match(container_id) or container_id in RESERVED_IDS:
        raise RuntimeBackendError(f"invalid container id {container_id!r}")


# --- long-lived containers (`shipyard run`) -------------------------------------------


@dataclass(frozen=True)
class Stdio:
    """The file descriptors a container process gets as 0, 1 and 2 (ignored with a terminal)."""

    stdin: int
    stdout: int
    stderr: int


@dataclass(frozen=True)
class ContainerHandle:
    """What any process needs to find a started container (or exec'd process) again.

    `pid` is the host pid of the process; `pid_start` its start time in clock
    ticks since boot (/proc/PID/stat), so a recycled pid is never mistaken for it.
    """

    runtime: str
    container_id: str
    pid: int
    pid_start: int


class ContainerProcess(Protocol):
    """A started container's init, or a process exec'd into one.

    `fileno()` becomes readable when the process has exited (for select/poll);
    `console` is the pty master when the spec asked for a terminal (the caller
    owns it). `close()` releases what the runtime holds for the process (for a
    container's init: its runtime state) once it has exited.
    """

    handle: ContainerHandle
    console: int | None

    def fileno(self) -> int: ...

    def poll(self) -> int | None: ...

    def wait(self) -> int: ...

    def signal(self, signum: int) -> None: ...

    def detach(self) -> None:
        """Leave the process running on its own (`exec -d`); nothing else may be called after."""
        ...

    def close(self) -> None: ...


class ContainerRuntime(Runtime, Protocol):
    """A runtime that also runs long-lived containers, as `shipyard run` needs.

    `start` returns once the container's process has been exec'd (setup errors
    raise `ContainerSetupError` with Docker's 125/126/127 status). `exec` starts
    another process in a running container. `remove` cleans the runtime's state
    for a container whose process is gone, from any process (e.g. after the
    process that started it was killed).
    """

    def start(self, rootfs: str, spec: ProcessSpec, *, container_id: str, stdio: Stdio) -> ContainerProcess: ...

    def exec(self, handle: ContainerHandle, spec: ProcessSpec, *, stdio: Stdio) -> ContainerProcess: ...

    def remove(self, container_id: str) -> None: ...
