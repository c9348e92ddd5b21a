"""The default (`bridge`) network: a network namespace per container, owned by its supervisor.

One thread of the supervisor unshares a fresh network namespace and stays in it:
the runtime joins it by path (`/proc/PID/task/TID/ns/net`), and the port proxy
asks that thread for sockets, which are created inside the container's network
(a socket keeps the namespace it was made in), so published ports reach the
container's loopback without any host network configuration. Outbound traffic
goes through `slirp4netns` when it is installed (a user-mode TCP/IP stack
behind a tap device: 10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3); without it
the container has loopback only. Both die with the supervisor.
"""

from __future__ import annotations

import os
import queue
import select
import shutil
import socket
import struct
import subprocess
import threading
from concurrent.futures import Future
from dataclasses import dataclass

from engine import linux
from engine.containers.errors import ContainerError

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
SLIRP_TIMEOUT_SECONDS = 10.0
SLIRP_ADDRESS = "10.0.2.100"
SLIRP_DNS = "10.0.2.3"


def loopback_up() -> None:
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


class NetworkNamespace:
    """A new network namespace held by one thread, which makes sockets inside it on request."""

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[int, int, Future[socket.socket]] | None] = queue.Queue()
        self._ready: Future[int] = Future()
        self._thread = threading.Thread(target=self._serve, name="netns", daemon=True)
        self._thread.start()
        self.tid = self._ready.result(timeout=10)
        self.path = f"/proc/{os.getpid()}/task/{self.tid}/ns/net"

    def _serve(self) -> None:
        try:
            linux.unshare(linux.CLONE_NEWNET)  # this thread only: network namespaces are per task
            loopback_up()
        except OSError as exc:
            self._ready.set_exception(ContainerError(f"cannot create the container's network namespace: {exc}"))
            return
        self._ready.set_result(threading.get_native_id())
        while True:
            request = self._requests.get()
            if request is None:
                return
            family, kind, result = request
            try:
                result.set_result(socket.socket(family, kind))
            except OSError as exc:
                result.set_exception(exc)

    def socket(self, family: int, kind: int) -> socket.socket:
        """A socket inside the namespace (connect it to reach the container's ports)."""
        result: Future[socket.socket] = Future()
        self._requests.put((family, kind, result))
        return result.result(timeout=10)

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(timeout=5)


@dataclass
class Slirp:
    """A running slirp4netns; closing `exit_w` (or our death) makes it exit."""

    process: subprocess.Popen[bytes]
    exit_w: int

    def close(self) -> None:
        os.close(self.exit_w)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_slirp(netns_path: str, log_path: str) -> Slirp | None:
    """Outbound connectivity for the namespace through slirp4netns; None when it is not installed."""
    binary = shutil.which("slirp4netns")
    if binary is None:
        return None
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        return None  # rootless on a host whose /dev/net/tun is root's only: loopback only
    exit_r, exit_w = os.pipe()
    ready_r, ready_w = os.pipe()
    try:
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [
                    binary,
                    "--configure",
                    "--mtu=65520",
                    "--disable-host-loopback",
                    f"--exit-fd={exit_r}",
                    f"--ready-fd={ready_w}",
                    "--netns-type=path",
                    netns_path,
                    "tap0",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(exit_r, ready_w),
            )
    except OSError as exc:
        os.close(exit_w)
        raise ContainerError(f"cannot start slirp4netns: {exc.strerror}") from exc
    finally:
        os.close(exit_r)
        os.close(ready_w)
    slirp = Slirp(process, exit_w)
    try:
        poller = select.poll()
        poller.register(ready_r, select.POLLIN)
        if not poller.poll(int(SLIRP_TIMEOUT_SECONDS * 1000)) or not os.read(ready_r, 1):
            slirp.close()
            raise ContainerError(f"slirp4netns did not configure the container's network (see {log_path})")
    finally:
        os.close(ready_r)
    return slirp


def hosts_content(hostname: str, address: str) -> str:
    return (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "ff00::0\tip6-mcastprefix\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n"
        f"{address}\t{hostname}\n"
    )


def resolv_content(network: str, slirp: bool) -> str:
    """slirp's DNS forwarder when it runs; otherwise the host's resolvers minus loopback ones
    (as Docker filters them: a container cannot reach the host's 127.0.0.53)."""
    if slirp:
        return f"nameserver {SLIRP_DNS}\n"
    try:
        with open("/etc/resolv.conf") as handle:
            lines = handle.read().splitlines()
    except OSError:
        lines = []
    if network == "host":
        return "\n".join(lines) + "\n"
    kept = [
        line
        for line in lines
        if not (line.split()[:1] == ["nameserver"] and line.split()[1:2] and line.split()[1].startswith(("127.", "::1")))
    ]
    if not any(line.startswith("nameserver") for line in kept):
        kept += ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]
    return "\n".join(kept) + "\n"


def write_etc_files(directory: str, hostname: str, network: str, slirp: bool) -> dict[str, str]:
    """/etc/hosts, /etc/resolv.conf and /etc/hostname for the container; target → host path."""
    address = SLIRP_ADDRESS if slirp else "127.0.1.1"
    files = {
        "/etc/hosts": hosts_content(hostname, address) if network != "host" else _host_file("/etc/hosts"),
        "/etc/resolv.conf": resolv_content(network, slirp),
        "/etc/hostname": hostname + "\n",
    }
    paths = {}
    for target, content in files.items():
        path = os.path.join(directory, os.path.basename(target))
        with open(path, "w") as handle:
            handle.write(content)
        paths[target] = path
    return paths


def _host_file(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return "127.0.0.1\tlocalhost\n"
