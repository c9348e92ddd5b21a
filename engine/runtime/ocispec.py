"""The container a RUN step gets, as one value, and its OCI runtime-spec form.

Both backends start from the same `ContainerConfig`: runc/crun read it as a bundle's
config.json, and the builtin runtime hands the very same document to `nsinit.py`,
which implements the subset of the OCI runtime spec we generate. One definition of
the sandbox (mounts, namespaces, capabilities, masked paths) keeps the backends
interchangeable. The defaults follow BuildKit's runc worker (containerd's default
spec without /run, read-only /etc/hosts and /etc/resolv.conf binds) and Docker's
default capability set and masked paths.
"""

from __future__ import annotations

import functools
import posixpath
import resource
from dataclasses import dataclass
from typing import Any

from engine.runtime.base import BindMount, ProcessSpec, TmpfsMount, process_env
from engine.rootless import in_user_namespace
from engine.runtime.caps import capabilities_for, held_capabilities
from engine.fs.safepath import clean

WANTED_NOFILE = 1048576

MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)


@dataclass(frozen=True)
class MountEntry:
    """One OCI mount: options are the runtime-spec strings (`rbind`, `ro`, `size=…`)."""

    destination: str
    type: str
    source: str
    options: tuple[str, ...] = ()

    def to_oci(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "type": self.type,
            "source": self.source,
            "options": list(self.options),
        }


@dataclass(frozen=True)
class ContainerConfig:
    """Everything a runtime needs to start one container."""

    rootfs: str
    readonly_root: bool
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    hostname: str
    bounding_caps: tuple[str, ...]
    effective_caps: tuple[str, ...]
    nofile: int
    mounts: tuple[MountEntry, ...]
    namespaces: tuple[str, ...]
    masked_paths: tuple[str, ...]
    readonly_paths: tuple[str, ...]
    all_devices: bool
    # Long-lived containers only (defaults keep a build step's document unchanged).
    terminal: bool = False
    console_size: tuple[int, int] = (0, 0)
    netns_path: str = ""
    resources: tuple[tuple[str, Any], ...] = ()
    cgroups_path: str = ""

    def to_oci(self) -> dict[str, Any]:
        """The runtime-spec document (config.json) for this container."""
        user: dict[str, Any] = {"uid": self.uid, "gid": self.gid}
        if self.additional_gids:
            user["additionalGids"] = list(self.additional_gids)
        namespaces: list[dict[str, str]] = []
        for kind in self.namespaces:
            entry = {"type": kind}
            if kind == "network" and self.netns_path:
                entry["path"] = self.netns_path
            namespaces.append(entry)
        resources: dict[str, Any] = {"devices": [{"allow": self.all_devices, "access": "rwm"}]}
        resources.update(dict(self.resources))
        linux: dict[str, Any] = {
            "namespaces": namespaces,
            "maskedPaths": list(self.masked_paths),
            "readonlyPaths": list(self.readonly_paths),
            "resources": resources,
        }
        if self.cgroups_path:
            linux["cgroupsPath"] = self.cgroups_path
        process: dict[str, Any] = {
            "terminal": self.terminal,
            "user": user,
            "args": list(self.args),
            "env": list(self.env),
            "cwd": self.cwd,
            "capabilities": {
                "bounding": list(self.bounding_caps),
                "effective": list(self.effective_caps),
                "permitted": list(self.effective_caps),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": self.nofile, "soft": self.nofile}],
            "noNewPrivileges": False,
        }
        if self.terminal and all(self.console_size):
            process["consoleSize"] = {"height": self.console_size[0], "width": self.console_size[1]}
        return {
            "ociVersion": "1.0.2",
            "process": process,
            "root": {"path": self.rootfs, "readonly": self.readonly_root},
            "hostname": self.hostname,
            "mounts": [mount.to_oci() for mount in self.mounts],
            "linux": linux,
        }


@functools.cache
def nofile_limit() -> int:
    """Docker's NOFILE limit when this process may grant it, else its own hard limit.

    Raising a hard limit needs CAP_SYS_RESOURCE; without it runc would refuse to
    start every container, so we give the most we are allowed to.
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard >= WANTED_NOFILE:
        return WANTED_NOFILE
    # Root of a user namespace holds CAP_SYS_RESOURCE only there; rlimits are the host's.
    if "CAP_SYS_RESOURCE" in held_capabilities() and not in_user_namespace():
        return WANTED_NOFILE
    return hard


def default_mounts(spec: ProcessSpec, *, cgroup: bool) -> list[MountEntry]:
    """runc's defaults; in rootless mode adjusted as `runc spec --rootless` adjusts them.

    A user namespace may mount sysfs only in a network namespace it owns, and no
    cgroup v1 hierarchy at all, so /sys is the host's, bound read-only, and there is
    no /sys/fs/cgroup of the container's own; devpts loses `gid=5` when the map has
    no gid 5 (a single-id map).
    """
    if in_user_namespace():
        return _rootless_mounts(spec)
    sys_mode = "rw" if spec.security == "insecure" else "ro"
    mounts = [
        MountEntry("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
        MountEntry("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
        MountEntry(
            "/dev/pts",
            "devpts",
            "devpts",
            ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"),
        ),
        MountEntry("/dev/shm", "tmpfs", "shm", ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")),
        MountEntry("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
        MountEntry("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", sys_mode)),
    ]
    if cgroup:
        mounts.append(
            MountEntry("/sys/fs/cgroup", "cgroup", "cgroup", ("nosuid", "noexec", "nodev", "relatime", sys_mode))
        )
    return mounts


def _rootless_mounts(spec: ProcessSpec) -> list[MountEntry]:
    from engine.rootless import mapped, read_map

    pts = ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620")
    if mapped(5, read_map("/proc/self/gid_map")):
        pts += ("gid=5",)
    sys_mode = "rw" if spec.security == "insecure" else "ro"
    return [
        MountEntry("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
        MountEntry("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
        MountEntry("/dev/pts", "devpts", "devpts", pts),
        MountEntry("/dev/shm", "tmpfs", "shm", ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")),
        MountEntry("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
        MountEntry("/sys", "bind", "/sys", ("rbind", "nosuid", "noexec", "nodev", sys_mode)),
    ]


def spec_mount(mount: BindMount | TmpfsMount) -> MountEntry:
    if isinstance(mount, BindMount):
        return MountEntry(clean(mount.target), "bind", mount.source, ("rbind", "ro" if mount.readonly else "rw"))
    options: tuple[str, ...] = ("nosuid",)
    if mount.size > 0:
        options += (f"size={mount.size}",)
    return MountEntry(clean(mount.target), "tmpfs", "tmpfs", options)


def dedup_mounts(mounts: list[MountEntry]) -> tuple[MountEntry, ...]:
    """A later mount on the same destination replaces the earlier one in place (BuildKit)."""
    result: list[MountEntry] = []
    seen: dict[str, int] = {}
    for mount in mounts:
        key = posixpath.normpath(mount.destination)
        if key in seen:
            result[seen[key]] = mount
        else:
            seen[key] = len(result)
            result.append(mount)
    return tuple(result)


def build_config(
    rootfs: str,
    spec: ProcessSpec,
    *,
    hosts_file: str,
    resolv_file: str,
    cgroup_mount: bool,
    cgroups_path: str = "",
) -> ContainerConfig:
    """The container for `spec` on `rootfs`, with the per-container /etc files given.

    `cgroups_path` places a long-lived container's cgroups (runc applies
    `spec.resources` there); a build step leaves both to the runtime's defaults.
    """
    caps = capabilities_for(spec.security)
    mounts = default_mounts(spec, cgroup=cgroup_mount)
    mounts.append(MountEntry("/etc/resolv.conf", "bind", resolv_file, ("rbind", "ro")))
    mounts.append(MountEntry("/etc/hosts", "bind", hosts_file, ("rbind", "ro")))
    mounts.extend(spec_mount(mount) for mount in spec.mounts)
    namespaces = ("pid", "ipc", "uts", "mount") + (("network",) if spec.network in ("none", "netns") else ())
    resources: tuple[tuple[str, Any], ...] = ()
    if not spec.resources.empty:
        from engine.runtime.cgroups import oci_resources

        resources = tuple(oci_resources(spec.resources).items())
    insecure = spec.security == "insecure"
    return ContainerConfig(
        rootfs=rootfs,
        readonly_root=spec.readonly_rootfs,
        args=spec.args,
        env=process_env(spec),
        cwd=clean(spec.cwd),
        uid=spec.uid,
        gid=spec.gid,
        additional_gids=spec.additional_gids,
        hostname=spec.hostname,
        bounding_caps=caps,
        # Like Docker: a non-root user keeps the bounding set but holds no capability.
        effective_caps=caps if spec.uid == 0 else (),
        nofile=nofile_limit(),
        mounts=dedup_mounts(mounts),
        namespaces=namespaces,
        masked_paths=() if insecure else MASKED_PATHS,
        readonly_paths=() if insecure else READONLY_PATHS,
        all_devices=insecure,
        terminal=spec.terminal,
        console_size=spec.console_size,
        netns_path=spec.netns_path if spec.network == "netns" else "",
        resources=resources,
        cgroups_path=cgroups_path,
    )


def process_config(spec: ProcessSpec) -> dict[str, Any]:
    """The runtime-spec `process` document alone, for a process exec'd into a running container."""
    config = build_config("/", spec, hosts_file="/dev/null", resolv_file="/dev/null", cgroup_mount=False)
    return config.to_oci()["process"]
