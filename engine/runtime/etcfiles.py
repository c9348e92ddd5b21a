"""The /etc/hosts and /etc/resolv.conf a container sees, written per container.

They are generated beside the container's state (never in the rootfs) and bound
read-only over the rootfs's own, as BuildKit does, so a RUN step can neither change
the host's files nor leave build-time name resolution baked into a layer.
"""

from __future__ import annotations

import os

HOST_RESOLV_CONF = "/etc/resolv.conf"
FALLBACK_RESOLV_CONF = b"nameserver 8.8.8.8\nnameserver 8.8.4.4\n"


def hosts_content(hostname: str) -> bytes:
    return f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n".encode()


def resolv_content() -> bytes:
    """The host's resolver config; public resolvers when the host has none (as Docker)."""
    try:
        with open(HOST_RESOLV_CONF, "rb") as src:
            data = src.read(1 << 20)
    except OSError:
        return FALLBACK_RESOLV_CONF
    return data if b"nameserver" in data else FALLBACK_RESOLV_CONF


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def write_etc_files(directory: str, hostname: str) -> tuple[str, str]:
    """Write `hosts` and `resolv.conf` into `directory`; returns their paths."""
    hosts = os.path.join(directory, "hosts")
    resolv = os.path.join(directory, "resolv.conf")
    _write(hosts, hosts_content(hostname))
    _write(resolv, resolv_content())
    return hosts, resolv
