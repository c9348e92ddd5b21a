"""Long-lived containers at the runtime seam, on both backends: start, exec, pty, netns join, limits.

`start` returns once the command was exec'd (setup errors raise with Docker's
statuses), `exec` joins the running container, a terminal arrives as a pty
master, a pre-made network namespace is joined by path, and `close` leaves no
runtime state, cgroup or mount behind.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import time
from pathlib import Path

import pytest

from engine import linux
from engine.containers.network import NetworkNamespace
from engine.runtime import cgroups
from engine.runtime.base import (
    RESERVED_IDS,
    ContainerSetupError,
    ProcessSpec,
    Resources,
    Stdio,
)
from engine.runtime.builtin import BuiltinRuntime
from engine.runtime.oci import OciRuntime
from engine.runtime.procs import alive
from tests.helpers import require_root


@pytest.fixture
def rootfs(busybox_rootfs: Path, tmp_path: Path):
    require_root()
    layers = tmp_path / "overlay"
    upper, work, merged = layers / "upper", layers / "work", layers / "merged"
    for directory in (upper, work, merged):
        directory.mkdir(parents=True)
    linux.mount("overlay", str(merged), "overlay", 0, f"lowerdir={busybox_rootfs},upperdir={upper},workdir={work}")
    try:
        yield str(merged)
    finally:
        linux.umount(str(merged), linux.MNT_DETACH)


@pytest.fixture(params=["runc", "builtin"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir()
    backend = OciRuntime("runc", shutil.which("runc") or "runc", state) if request.param == "runc" else BuiltinRuntime(state)
    yield backend
    left = [p.name for p in (state / "runtime").iterdir() if p.name not in RESERVED_IDS] if (state / "runtime").exists() else []
    assert left == [], "per-container runtime state left behind"
    runc_state = state / "runtime" / "runc"
    assert not runc_state.exists() or list(runc_state.iterdir()) == []


def _read_until(fd: int, needle: bytes, timeout: float = 5.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    return data


def test_start_exec_signal_and_close(runtime, rootfs: str) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    out_r, out_w = os.pipe()
    namespace = NetworkNamespace()
    spec = ProcessSpec(
        args=("sh", "-c", "echo up; trap 'echo bye; exit 9' TERM; while :; do sleep 0.05; done"),
        network="netns",
        netns_path=namespace.path,
        hostname="box",
        resources=Resources(memory=64 << 20, cpu_quota=50000, cpu_period=100000),
    )
    process = runtime.start(rootfs, spec, container_id="ctr-a", stdio=Stdio(null, out_w, out_w))
    os.close(out_w)
    try:
        assert _read_until(out_r, b"up\n") == b"up\n"
        assert alive(process.handle.pid, process.handle.pid_start)
        with open(f"/proc/{process.handle.pid}/cgroup") as handle:
            assert "/shipyard/ctr-a" in handle.read(), "the container runs in its own cgroup"
        assert os.readlink(f"/proc/{process.handle.pid}/ns/net") == os.readlink(namespace.path)

        exec_r, exec_w = os.pipe()
        execd = runtime.exec(
            process.handle,
            ProcessSpec(args=("sh", "-c", "hostname; id -u; cat /proc/1/cmdline; exit 4"), uid=1000, gid=1000),
            stdio=Stdio(null, exec_w, exec_w),
        )
        os.close(exec_w)
        assert execd.wait() == 4
        execd.close()
        output = os.read(exec_r, 4096)
        os.close(exec_r)
        assert output.startswith(b"box\n1000\nsh\0-c\0echo up")

        with pytest.raises(ContainerSetupError) as missing:
            runtime.exec(process.handle, ProcessSpec(args=("no-such-tool",)), stdio=Stdio(null, null, null))
        assert missing.value.status == 127

        tty = runtime.exec(
            process.handle, ProcessSpec(args=("sh",), terminal=True, console_size=(33, 101)), stdio=Stdio(null, null, null)
        )
        os.write(tty.console, b"stty size; tty; exit 3\n")
        seen = _read_until(tty.console, b"/dev/pts/")
        assert tty.wait() == 3
        os.close(tty.console)
        tty.close()
        assert b"33 101" in seen and b"/dev/pts/" in seen

        process.signal(signal.SIGTERM)
        assert process.wait() == 9
        assert _read_until(out_r, b"bye\n").endswith(b"bye\n")
    finally:
        process.close()
        namespace.close()
        os.close(out_r)
        os.close(null)
    assert cgroups.container_dirs("ctr-a") == [], "the container's cgroups are removed"


def test_start_failures_have_docker_statuses(runtime, rootfs: str) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for args, status in ((("no-such-tool",), 127), (("/etc/passwd",), 126)):
            with pytest.raises(ContainerSetupError) as failure:
                runtime.start(rootfs, ProcessSpec(args=args, network="none"), container_id="ctr-b", stdio=Stdio(null, null, null))
            assert failure.value.status == status
    finally:
        os.close(null)


def test_a_terminal_for_the_container_itself(runtime, rootfs: str) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    process = runtime.start(
        rootfs,
        ProcessSpec(args=("sh",), network="none", terminal=True, console_size=(20, 70)),
        container_id="ctr-c",
        stdio=Stdio(null, null, null),
    )
    os.close(null)
    try:
        os.write(process.console, b"stty size; exit 6\n")
        assert b"20 70" in _read_until(process.console, b"20 70")
        assert process.wait() == 6
    finally:
        os.close(process.console)
        process.close()
