"""The builtin runtime: Linux namespaces and pivot_root, nothing but the kernel.

Each run launches a fresh `python -I -S nsinit.py` (see that module for the
container side) rather than forking the engine: the engine is multi-threaded, and
running Python after fork in such a process can deadlock. The helper gets the same
OCI config document runc would, so the two backends build identical containers.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import select
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

from engine.errors import BuildCancelled, RuntimeBackendError
from engine.runtime import cgroups
from engine.runtime.base import (
    STATUS_RUNTIME_FAILED,
    ContainerHandle,
    ContainerSetupError,
    OutputCallback,
    ProcessSpec,
    Stdio,
    check_container_id,
    check_spec,
)
from engine.runtime.console import receive_fd
from engine.runtime.etcfiles import write_etc_files
from engine.runtime.mountpoints import prepare_rootfs, remove_stubs
from engine.runtime.ocispec import build_config, process_config
from engine.runtime.procs import send_signal
from engine.runtime.supervise import exit_status, run_front_process
from engine.runtime.workdir import container_dir, remove_if_stale

NSINIT = str(Path(__file__).with_name("nsinit.py"))
# Importing (rather than running) nsinit lets Python reuse its cached bytecode:
# compiling the file on every container start would cost ~5 ms.
_BOOTSTRAP = "import sys; sys.path.append(sys.argv[1]); import nsinit; nsinit.main(sys.argv[2])"


def helper_python() -> str:
    """The interpreter that runs nsinit.py: ours, resolved past venv/pyenv shims."""
    return os.path.realpath(sys.executable)


class BuiltinRuntime:
    """Runs containers with nsinit.py; needs root, of the host or of a rootless user namespace."""

    name = "builtin"

    def __init__(self, state_root: Path) -> None:
        self._dir = Path(state_root) / "runtime"
        self._python = helper_python()

    def run(
        self,
        rootfs: str,
        spec: ProcessSpec,
        *,
        container_id: str,
        on_output: OutputCallback,
        cancel: threading.Event,
    ) -> int:
        check_container_id(container_id)
        check_spec(spec)
        if cancel.is_set():
            raise BuildCancelled("cancelled before the container started")
        rootfs = os.path.abspath(rootfs)
        with container_dir(self._dir, container_id) as workdir:
            fds: dict[str, int] = {}
            stubs: list[str] = []
            try:
                stubs = prepare_rootfs(rootfs, spec)
                hosts, resolv = write_etc_files(str(workdir), spec.hostname)
                config = build_config(rootfs, spec, hosts_file=hosts, resolv_file=resolv, cgroup_mount=False)
                payload = marshal.dumps(config.to_oci())
                fds["ctl_r"], fds["ctl_w"] = os.pipe()

                def started(_proc: subprocess.Popen[bytes]) -> None:
                    os.close(fds.pop("ctl_r"))
                    try:
                        _write_all(fds["ctl_w"], len(payload).to_bytes(8, "big") + payload)
                    except BrokenPipeError:
                        pass  # the helper died first; its stderr and status tell why

                def stop(proc: subprocess.Popen[bytes]) -> None:
                    if "ctl_w" in fds:
                        os.close(fds.pop("ctl_w"))  # the helper SIGKILLs pid 1; the namespace dies with it
                    try:
                        proc.wait(timeout=0.5)
                    except subprocess.TimeoutExpired:
                        proc.kill()

                return run_front_process(
                    [self._python, "-I", "-S", "-c", _BOOTSTRAP, os.path.dirname(NSINIT), str(fds["ctl_r"])],
                    on_output=on_output,
                    cancel=cancel,
                    stop=stop,
                    pass_fds=(fds["ctl_r"],),
                    started=started,
                    env={},
                )
            except ContainerSetupError as exc:
                on_output(2, f"shipyard: unable to start container process: {exc}\n".encode())
                return exc.status
            finally:
                for fd in fds.values():
                    os.close(fd)
                remove_stubs(stubs, rootfs)


    def start(self, rootfs: str, spec: ProcessSpec, *, container_id: str, stdio: Stdio) -> HelperProcess:
        """A long-lived container: returns once its command was exec'd (see `ContainerRuntime`)."""
        check_container_id(container_id)
        check_spec(spec)
        if not spec.resources.empty:
            cgroups.check_available(spec.resources)
        rootfs = os.path.abspath(rootfs)
        stack = contextlib.ExitStack()
        try:
            workdir = stack.enter_context(container_dir(self._dir, container_id))
            stubs = prepare_rootfs(rootfs, spec)
            stack.callback(remove_stubs, stubs, rootfs)
            hosts, resolv = write_etc_files(str(workdir), spec.hostname)
            config = build_config(rootfs, spec, hosts_file=hosts, resolv_file=resolv, cgroup_mount=False)
            dirs: list[str] = []
            if not spec.resources.empty:
                dirs = cgroups.create(container_id, spec.resources)
                stack.callback(cgroups.remove_dirs, dirs)
            return _launch(
                self._python,
                _START,
                config.to_oci(),
                stdio=stdio,
                terminal=spec.terminal,
                cgroup_dirs=dirs,
                runtime=self.name,
                container_id=container_id,
                cleanup=stack.close,
            )
        except BaseException:
            stack.close()
            raise


    def exec(self, handle: ContainerHandle, spec: ProcessSpec, *, stdio: Stdio) -> HelperProcess:
        """Another process in the running container `handle` names (nsenter-style, see nsinit)."""
        check_spec(spec)
        document = {"process": process_config(spec), "pid": handle.pid, "pidStart": handle.pid_start}
        return _launch(
            self._python,
            _EXEC,
            document,
            stdio=stdio,
            terminal=spec.terminal,
            cgroup_dirs=cgroups.container_dirs(handle.container_id),
            runtime=self.name,
            container_id=handle.container_id,
            cleanup=lambda: None,
        )


    def remove(self, container_id: str) -> None:
        """Runtime state of a container whose helper is gone (e.g. killed with its starter)."""
        remove_if_stale(self._dir, container_id)
        cgroups.remove(container_id)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# --- long-lived containers -------------------------------------------------------------

_START = "import sys; sys.path.append(sys.argv[1]); import nsinit; nsinit.main(*sys.argv[2:])"
_EXEC = "import sys; sys.path.append(sys.argv[1]); import nsinit; nsinit.exec_main(*sys.argv[2:])"
REPORT_TIMEOUT_SECONDS = 60.0
_ERROR_PREFIX = b"shipyard: unable to start container process: "


class HelperProcess:
    """A container process behind its nsinit helper, which is our child and exits with its status.

    Closing the control pipe makes the helper SIGKILL the process: `close()` on a
    still-running process kills it, and so does the death of the process holding it.
    """

    def __init__(
        self,
        handle: ContainerHandle,
        helper: subprocess.Popen[bytes],
        ctl_w: int,
        console: int | None,
        cleanup: Callable[[], None],
    ) -> None:
        self.handle = handle
        self.console = console
        self._helper = helper
        self._ctl_w = ctl_w
        self._pidfd = os.pidfd_open(helper.pid)
        self._cleanup = cleanup
        self._closed = False

    def fileno(self) -> int:
        return self._pidfd

    def poll(self) -> int | None:
        code = self._helper.poll()
        return None if code is None else exit_status(code)

    def wait(self) -> int:
        return exit_status(self._helper.wait())

    def signal(self, signum: int) -> None:
        send_signal(self.handle.pid, self.handle.pid_start, signum)

    def detach(self) -> None:
        """Let the process outlive us (`exec -d`): the helper stops watching its control pipe."""
        if not self._closed:
            _write_all(self._ctl_w, b"detach")
            self._closed = True
            os.close(self._ctl_w)
            os.close(self._pidfd)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            os.close(self._ctl_w)
            try:
                self._helper.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._helper.kill()
                self._helper.wait()
            os.close(self._pidfd)
        finally:
            self._cleanup()


def _read_report(fd: int, helper: subprocess.Popen[bytes]) -> tuple[tuple[int, int], bytes | None, int]:
    """((pid, start time), error message or None, status) from the helper's report pipe, read to EOF."""
    chunks = []
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        if not poller.poll(int(REPORT_TIMEOUT_SECONDS * 1000)):
            raise ContainerSetupError("the container did not start within a minute")
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    data = b"".join(chunks)
    pid = (0, 0)
    if data.startswith(b"pid "):
        line, _, data = data.partition(b"\n")
        _, number, started = line.split()
        pid = (int(number), int(started))
    if data.startswith(b"ok\n"):
        return pid, None, 0
    if data.startswith(b"fail "):
        line, _, message = data.partition(b"\n")
        return pid, message, int(line[5:])
    status = exit_status(helper.wait())
    return pid, data or f"the container helper exited with status {status}".encode(), status or STATUS_RUNTIME_FAILED


def _setup_error(message: bytes, status: int) -> ContainerSetupError:
    text = message.strip()
    if text.startswith(_ERROR_PREFIX):
        text = text[len(_ERROR_PREFIX) :]
    return ContainerSetupError(text.decode("utf-8", "replace").splitlines()[0] if text else "setup failed", status)


def _launch(
    python: str,
    bootstrap: str,
    document: dict[str, object],
    *,
    stdio: Stdio,
    terminal: bool,
    cgroup_dirs: list[str],
    runtime: str,
    container_id: str,
    cleanup: Callable[[], None],
) -> HelperProcess:
    """Start an nsinit helper in `bootstrap` mode and wait until its process was exec'd."""
    payload = marshal.dumps(document)
    ctl_r, ctl_w = os.pipe()
    rep_r, rep_w = os.pipe()
    parent_sock = child_sock = None
    if terminal:
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    console_fd = child_sock.fileno() if child_sock is not None else -1
    helper: subprocess.Popen[bytes] | None = None
    try:
        argv = [python, "-I", "-S", "-c", bootstrap, os.path.dirname(NSINIT), str(ctl_r), str(rep_w), str(console_fd)]
        try:
            helper = subprocess.Popen(
                argv,
                stdin=stdio.stdin,
                stdout=stdio.stdout,
                stderr=stdio.stderr,
                pass_fds=tuple(fd for fd in (ctl_r, rep_w, console_fd) if fd >= 0),
                env={},
            )
        except OSError as exc:
            raise RuntimeBackendError(f"cannot start the container helper: {exc.strerror or exc}") from exc
        os.close(ctl_r)
        os.close(rep_w)
        ctl_r = rep_w = -1
        if child_sock is not None:
            child_sock.close()
            child_sock = None
        if cgroup_dirs:
            cgroups.join(cgroup_dirs, helper.pid)  # before the config: pid 1 is forked after it
        try:
            _write_all(ctl_w, len(payload).to_bytes(8, "big") + payload)
        except BrokenPipeError:
            pass  # the helper died first; its report tells why
        (pid, pid_start), error, status = _read_report(rep_r, helper)
        if error is not None:
            raise _setup_error(error, status)
        console = receive_fd(parent_sock) if parent_sock is not None else None
        process = HelperProcess(ContainerHandle(runtime, container_id, pid, pid_start), helper, ctl_w, console, cleanup)
        ctl_w = -1
        return process
    except BaseException:
        if ctl_w >= 0:
            os.close(ctl_w)  # kills the process if it got that far
            ctl_w = -1
        if helper is not None:
            try:
                helper.wait(timeout=5)
            except subprocess.TimeoutExpired:
                helper.kill()
                helper.wait()
        raise
    finally:
        for fd in (ctl_r, rep_w, rep_r):
            if fd >= 0:
                os.close(fd)
        if ctl_w >= 0:
            os.close(ctl_w)
        for sock in (parent_sock, child_sock):
            if sock is not None:
                sock.close()

