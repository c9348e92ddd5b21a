"""Linux capabilities by name and number, and the sets a container gets.

`sandbox` steps get Docker's default set (what `docker run` and BuildKit give a
RUN step); `insecure` gets every capability this process itself holds — asking a
runtime for one we lack would make it fail with EPERM instead of starting.
"""

from __future__ import annotations

import functools

CAP_NAMES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

DOCKER_DEFAULT_CAPS: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)


@functools.cache
def held_capabilities() -> frozenset[str]:
    """The capabilities in this process's bounding set (what a child can still get)."""
    mask = 0
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"CapBnd:"):
                    mask = int(line.split()[1], 16)
                    break
    except OSError:
        return frozenset()
    return frozenset(name for bit, name in enumerate(CAP_NAMES) if mask >> bit & 1)


def capabilities_for(security: str) -> tuple[str, ...]:
    """The capability names a container's process gets in this security mode."""
    held = held_capabilities()
    if security == "insecure":
        return tuple(name for name in CAP_NAMES if name in held)
    return tuple(name for name in DOCKER_DEFAULT_CAPS if name in held)


def cap_number(name: str) -> int:
    return CAP_NAMES.index(name)
