"""cgroup limits (`--memory`, `--cpus`) for containers, on cgroup v1, v2 or a hybrid of both.

runc applies limits itself from config.json; the builtin runtime creates the
cgroups here and moves its helper into them before the container's pid 1 is
forked. Both put a container at `shipyard/<id>` under each hierarchy's root (as
Docker uses `docker/<id>`). A limit that no mounted controller can enforce is an
error naming the limit, never silently ignored — a hybrid host often mounts the
v2 hierarchy with no controllers while v1 carries them all, so each controller
is looked up on its own.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass

from engine.errors import RuntimeBackendError
from engine.runtime.base import Resources

PARENT = "shipyard"
MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class Hierarchy:
    """Where a controller can be used: a v1 hierarchy's mountpoint, or the v2 one."""

    mountpoint: str
    version: int


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def hierarchies() -> dict[str, Hierarchy]:
    """controller name → the hierarchy that has it (v1 preferred on a hybrid host)."""
    found: dict[str, Hierarchy] = {}
    unified: str | None = None
    try:
        with open(MOUNTINFO) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return {}
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        fstype, options = tail[0], tail[2].split(",")
        if fields[3] != "/":
            continue  # a bind of a sub-cgroup (e.g. inside a container): not a root we can nest under
        if fstype == "cgroup":
            for option in options:
                found.setdefault(option, Hierarchy(_unescape(fields[4]), 1))
        elif fstype == "cgroup2" and unified is None:
            unified = _unescape(fields[4])
    if unified is not None:
        try:
            with open(os.path.join(unified, "cgroup.controllers")) as handle:
                controllers = handle.read().split()
        except OSError:
            controllers = []
        for controller in controllers:
            found.setdefault(controller, Hierarchy(unified, 2))
    return found


def needed_controllers(resources: Resources) -> list[str]:
    wanted = []
    if resources.memory:
        wanted.append("memory")
    if resources.cpu_quota:
        wanted.append("cpu")
    return wanted


_FLAG = {"memory": "--memory", "cpu": "--cpus"}


def check_available(resources: Resources) -> dict[str, Hierarchy]:
    """The hierarchies for the limits asked; a clear error for one that cannot be applied."""
    found = hierarchies()
    result = {}
    for controller in needed_controllers(resources):
        hierarchy = found.get(controller)
        if hierarchy is None:
            raise RuntimeBackendError(
                f"{_FLAG[controller]} cannot be applied: the {controller} cgroup controller is not available on this host"
            )
        if not os.access(hierarchy.mountpoint, os.W_OK):
            from engine.rootless import in_user_namespace

            if in_user_namespace():
                raise RuntimeBackendError(
                    f"{_FLAG[controller]} cannot be applied in rootless mode: the {controller} cgroup "
                    f"({hierarchy.mountpoint}) is not delegated to this user"
                )
            raise RuntimeBackendError(
                f"{_FLAG[controller]} cannot be applied: {hierarchy.mountpoint} is not writable by this user"
            )
        result[controller] = hierarchy
    return result


def swap_limit(resources: Resources) -> int:
    """memory+swap in bytes as Docker computes it; -1 for unlimited."""
    if resources.memory_swap == -1:
        return -1
    if resources.memory_swap:
        return resources.memory_swap
    return 2 * resources.memory


def oci_resources(resources: Resources) -> dict[str, object]:
    """The runtime-spec `linux.resources` entries for `resources` (devices excluded)."""
    out: dict[str, object] = {}
    if resources.memory:
        out["memory"] = {"limit": resources.memory, "swap": swap_limit(resources)}
    if resources.cpu_quota:
        out["cpu"] = {"quota": resources.cpu_quota, "period": resources.cpu_period or 100000}
    return out


def cgroups_path(container_id: str) -> str:
    return f"/{PARENT}/{container_id}"


def _write(path: str, value: str, what: str) -> None:
    try:
        with open(path, "w") as handle:
            handle.write(value)
    except OSError as exc:
        raise RuntimeBackendError(f"{what} cannot be applied: writing {path}: {exc.strerror}") from exc


def _enable_v2(mountpoint: str, controllers: list[str]) -> None:
    """Delegate the controllers down to shipyard/ (v2 needs each parent to pass them on)."""
    parent = os.path.join(mountpoint, PARENT)
    for directory in (mountpoint, parent):
        try:
            with open(os.path.join(directory, "cgroup.subtree_control"), "w") as handle:
                handle.write(" ".join("+" + c for c in controllers))
        except OSError as exc:
            raise RuntimeBackendError(
                f"cannot enable the {', '.join(controllers)} cgroup controller(s) in {directory}: {exc.strerror}"
            ) from exc


def create(container_id: str, resources: Resources) -> list[str]:
    """Make the container's cgroups with its limits; the directories (join them with `join`)."""
    found = check_available(resources)
    dirs: list[str] = []
    try:
        for mountpoint in sorted({h.mountpoint for h in found.values()}):
            version = next(h.version for h in found.values() if h.mountpoint == mountpoint)
            controllers = [c for c, h in found.items() if h.mountpoint == mountpoint]
            path = os.path.join(mountpoint, PARENT, container_id)
            os.makedirs(os.path.join(mountpoint, PARENT), exist_ok=True)
            if version == 2:
                _enable_v2(mountpoint, controllers)
            os.makedirs(path, exist_ok=True)
            dirs.append(path)
            if version == 1:
                _apply_v1(path, controllers, resources)
            else:
                _apply_v2(path, controllers, resources)
    except BaseException:
        remove_dirs(dirs)
        raise
    return dirs


def _apply_v1(path: str, controllers: list[str], resources: Resources) -> None:
    if "memory" in controllers:
        _write(os.path.join(path, "memory.limit_in_bytes"), str(resources.memory), "--memory")
        swap = swap_limit(resources)
        memsw = os.path.join(path, "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):  # only with swap accounting
            _write(memsw, str(swap), "--memory")
    if "cpu" in controllers:
        _write(os.path.join(path, "cpu.cfs_period_us"), str(resources.cpu_period or 100000), "--cpus")
        _write(os.path.join(path, "cpu.cfs_quota_us"), str(resources.cpu_quota), "--cpus")


def _apply_v2(path: str, controllers: list[str], resources: Resources) -> None:
    if "memory" in controllers:
        _write(os.path.join(path, "memory.max"), str(resources.memory), "--memory")
        swap = swap_limit(resources)
        swap_file = os.path.join(path, "memory.swap.max")
        if os.path.exists(swap_file):
            _write(swap_file, "max" if swap == -1 else str(max(0, swap - resources.memory)), "--memory")
    if "cpu" in controllers:
        _write(
            os.path.join(path, "cpu.max"), f"{resources.cpu_quota} {resources.cpu_period or 100000}", "--cpus"
        )


def join(dirs: list[str], pid: int) -> None:
    for path in dirs:
        _write(os.path.join(path, "cgroup.procs"), str(pid), "the container's cgroup")


def container_dirs(container_id: str) -> list[str]:
    """Every existing cgroup directory of the container, in any hierarchy."""
    roots = {h.mountpoint for h in hierarchies().values()}
    found = []
    for root in roots:
        path = os.path.join(root, PARENT, container_id)
        if os.path.isdir(path):
            found.append(path)
    return found


def remove_dirs(dirs: list[str], timeout: float = 2.0) -> None:
    """rmdir each cgroup; a cgroup whose last task is still exiting is busy for a moment."""
    deadline = time.monotonic() + timeout
    for path in dirs:
        while True:
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                    break
                time.sleep(0.02)


def remove(container_id: str) -> None:
    remove_dirs(container_dirs(container_id))
