"""The OCI runtime backend: a bundle per run, handed to runc or crun.

Like BuildKit's runc worker: config.json is generated from the step (see
`ocispec`), `<runtime> run` runs in the foreground with our pipes as the
container's stdio, and the runtime's own log goes to a JSON file in the bundle so
its error line can be reported cleanly. On cancel the container is killed with
`kill <id> KILL` (pid 1 dying takes its pid namespace with it) and deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

from engine.errors import BuildCancelled
from engine.rootless import in_user_namespace
from engine.runtime import cgroups
from engine.runtime.base import (
    STATUS_CANNOT_EXECUTE,
    STATUS_NOT_FOUND,
    STATUS_RUNTIME_FAILED,
    ContainerHandle,
    ContainerSetupError,
    OutputCallback,
    ProcessSpec,
    Stdio,
    check_container_id,
    check_spec,
)
from engine.runtime.console import console_socket
from engine.runtime.etcfiles import write_etc_files
from engine.runtime.mountpoints import prepare_rootfs, remove_stubs
from engine.runtime.ocispec import build_config, process_config
from engine.runtime.procs import become_subreaper, exited, send_signal, start_time, wait_child
from engine.runtime.supervise import run_front_process
from engine.runtime.workdir import container_dir, remove_if_stale

KILL_RETRY_SECONDS = 0.8


class OciRuntime:
    """runc or crun, driven through bundles under `state_root/runtime/<id>/`."""

    def __init__(self, name: str, binary: str, state_root: Path) -> None:
        self.name = name
        self.binary = binary
        self._dir = Path(state_root) / "runtime"
        self._root = str(self._dir / name)  # the runtime's own --root (container state)
        self._rootless = in_user_namespace()

    def _command(self, *args: str, log: str | None = None) -> list[str]:
        argv = [self.binary, "--root", self._root]
        if self._rootless and self.name == "runc":
            # Root of our user namespace, not of the host: runc's rootless cgroup
            # manager then skips the cgroups it may not create (there are no limits
            # to apply: `start` refuses them without a writable cgroup).
            argv += ["--rootless", "true"]
        if log is not None:
            argv += ["--log", log, "--log-format", "json"]
        return argv + list(args)

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
        with container_dir(self._dir, container_id) as bundle:
            log = str(bundle / "runtime.log")
            stubs: list[str] = []
            try:
                stubs = prepare_rootfs(rootfs, spec)
                hosts, resolv = write_etc_files(str(bundle), spec.hostname)
                config = build_config(rootfs, spec, hosts_file=hosts, resolv_file=resolv, cgroup_mount=True)
                with open(bundle / "config.json", "w") as handle:
                    json.dump(config.to_oci(), handle)
                status = run_front_process(
                    self._command("run", "--bundle", str(bundle), "--no-new-keyring", container_id, log=log),
                    on_output=on_output,
                    cancel=cancel,
                    stop=lambda proc: self._kill(container_id, proc),
                )
                if status != 0:
                    failure = runtime_error(log)
                    if failure:
                        return classify_failure(failure)
                return status
            except ContainerSetupError as exc:
                on_output(2, f"shipyard: unable to start container process: {exc}\n".encode())
                return exc.status
            finally:
                # `run` deletes the container when its process exits; not when it was killed.
                if os.path.exists(os.path.join(self._root, container_id)):
                    self._delete(container_id)
                remove_stubs(stubs, rootfs)

    # --- long-lived containers (containerd-shim's way: create, start, reap as subreaper) ---

    def start(self, rootfs: str, spec: ProcessSpec, *, container_id: str, stdio: Stdio) -> "OciProcess":
        """`<runtime> create` then `start`; the caller becomes a subreaper so the
        container's pid 1 is its child once create exits, and its status is ours to reap."""
        check_container_id(container_id)
        check_spec(spec)
        if not spec.resources.empty:
            cgroups.check_available(spec.resources)
        rootfs = os.path.abspath(rootfs)
        stack = contextlib.ExitStack()
        try:
            bundle = stack.enter_context(container_dir(self._dir, container_id))
            stubs = prepare_rootfs(rootfs, spec)
            stack.callback(remove_stubs, stubs, rootfs)
            hosts, resolv = write_etc_files(str(bundle), spec.hostname)
            config = build_config(
                rootfs,
                spec,
                hosts_file=hosts,
                resolv_file=resolv,
                cgroup_mount=True,
                cgroups_path="" if self._rootless and spec.resources.empty else cgroups.cgroups_path(container_id),
            )
            with open(bundle / "config.json", "w") as handle:
                json.dump(config.to_oci(), handle)
            log = str(bundle / "runtime.log")
            pid_file = str(bundle / "init.pid")
            stack.callback(self._delete, container_id)
            become_subreaper()
            with console_socket(spec.terminal) as (socket_path, receive):
                args = ["create", "--bundle", str(bundle), "--pid-file", pid_file, "--no-new-keyring"]
                if socket_path is not None:
                    args += ["--console-socket", socket_path]
                self._invoke(args + [container_id], log, stdio)
                console = receive() if socket_path is not None else None
            pid = _read_pid(pid_file)
            pid_start = start_time(pid)
            try:
                self._invoke(["start", container_id], log, None)
                if pid_start is None:
                    raise ContainerSetupError("the container exited as it started")
            except BaseException:
                if console is not None:
                    os.close(console)
                raise
            return OciProcess(ContainerHandle(self.name, container_id, pid, pid_start), console, stack.close)
        except BaseException:
            stack.close()
            raise

    def exec(self, handle: ContainerHandle, spec: ProcessSpec, *, stdio: Stdio) -> "OciProcess":
        """`<runtime> exec --detach`: the process is reparented to us (a subreaper) to be reaped."""
        check_spec(spec)
        self._dir.mkdir(parents=True, exist_ok=True)
        scratch = self._dir / f".exec-{handle.container_id[:12]}-{secrets.token_hex(6)}"
        scratch.mkdir()
        try:
            process_file = str(scratch / "process.json")
            with open(process_file, "w") as out:
                json.dump(process_config(spec), out)
            pid_file = str(scratch / "exec.pid")
            log = str(scratch / "runtime.log")
            become_subreaper()
            with console_socket(spec.terminal) as (socket_path, receive):
                args = ["exec", "--detach", "--pid-file", pid_file, "--process", process_file]
                if socket_path is not None:
                    args += ["--console-socket", socket_path]
                self._invoke(args + [handle.container_id], log, stdio)
                console = receive() if socket_path is not None else None
            pid = _read_pid(pid_file)
        finally:
            for name in ("process.json", "exec.pid", "runtime.log"):
                with contextlib.suppress(OSError):
                    os.unlink(scratch / name)
            with contextlib.suppress(OSError):
                os.rmdir(scratch)
        pid_start = start_time(pid)
        if pid_start is None:  # already gone: reap it and report its status
            status = wait_child(pid, timeout=1.0)
            return OciProcess(ContainerHandle(self.name, handle.container_id, pid, 0), console, lambda: None, status)
        return OciProcess(ContainerHandle(self.name, handle.container_id, pid, pid_start), console, lambda: None)

    def remove(self, container_id: str) -> None:
        """Runtime state of a container whose starter is gone: `delete --force` and the bundle."""
        remove_if_stale(self._dir, container_id)
        cgroups.remove(container_id)

    def _invoke(self, args: list[str], log: str, stdio: Stdio | None) -> None:
        """Run one runtime command; a failure becomes a `ContainerSetupError` with Docker's status."""
        with contextlib.suppress(OSError):
            os.unlink(log)
        done = subprocess.run(
            self._command(*args, log=log),
            stdin=stdio.stdin if stdio else subprocess.DEVNULL,
            stdout=stdio.stdout if stdio else subprocess.DEVNULL,
            stderr=stdio.stderr if stdio else subprocess.PIPE,
        )
        if done.returncode != 0:
            message = runtime_error(log) or f"{self.name} {args[0]} exited with status {done.returncode}"
            raise ContainerSetupError(_strip_runtime_prefix(message), classify_failure(message))

    def _kill(self, container_id: str, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the container; retry while it is still being created."""
        deadline = time.monotonic() + KILL_RETRY_SECONDS
        while proc.poll() is None and time.monotonic() < deadline:
            done = subprocess.run(
                self._command("kill", container_id, "KILL"),
                stdin=subprocess.DEVNULL,
                capture_output=True,
            )
            if done.returncode == 0:
                return
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()

    def _delete(self, container_id: str) -> None:
        subprocess.run(
            self._command("delete", "--force", container_id),
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )


def runtime_error(log_path: str) -> str:
    """The runtime's last error message from its JSON log, or ''."""
    try:
        with open(log_path, "rb") as handle:
            lines = handle.read(1 << 20).splitlines()
    except OSError:
        return ""
    message = ""
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal") and entry.get("msg"):
            message = str(entry["msg"])
    return message


def classify_failure(message: str) -> int:
    """Docker's statuses for a container that never ran its command."""
    lowered = message.lower()
    not_found = "executable file not found" in lowered or "not found in $path" in lowered
    if not_found or ("exec:" in lowered and "no such file or directory" in lowered):
        return STATUS_NOT_FOUND
    if "permission denied" in lowered or "exec format error" in lowered or "is a directory" in lowered:
        return STATUS_CANNOT_EXECUTE
    return STATUS_RUNTIME_FAILED


def _read_pid(path: str) -> int:
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError) as exc:
        raise ContainerSetupError(f"the runtime did not report the container's pid: {exc}") from exc


def _strip_runtime_prefix(message: str) -> str:
    """runc's "runc create failed: unable to start container process: X" → X."""
    for marker in ("unable to start container process: ", "exec failed: "):
        if marker in message:
            return message.split(marker, 1)[1]
    return message


class OciProcess:
    """A container's pid 1 (or an exec'd process) that is our child through the subreaper."""

    def __init__(
        self, handle: ContainerHandle, console: int | None, cleanup: Callable[[], None], status: int | None = None
    ) -> None:
        self.handle = handle
        self.console = console
        self._cleanup = cleanup
        self._status = status
        self._pidfd = -1
        if status is None:
            try:
                self._pidfd = os.pidfd_open(handle.pid)
            except OSError:
                self._status = wait_child(handle.pid, timeout=1.0) or 0
        if self._pidfd < 0:
            self._pidfd = os.eventfd(1)  # always readable: the process is already gone
        self._closed = False

    def fileno(self) -> int:
        return self._pidfd

    def poll(self) -> int | None:
        if self._status is None and exited(self._pidfd):
            self._status = wait_child(self.handle.pid, timeout=1.0)
            if self._status is None:
                self._status = STATUS_RUNTIME_FAILED
        return self._status

    def wait(self) -> int:
        if self._status is None:
            status = wait_child(self.handle.pid)
            self._status = STATUS_RUNTIME_FAILED if status is None else status
        return self._status

    def signal(self, signum: int) -> None:
        if self._status is None:
            send_signal(self.handle.pid, self.handle.pid_start, signum)

    def detach(self) -> None:
        """Let the process outlive us (`exec -d`): it is not killed, and init reaps it."""
        if not self._closed:
            self._closed = True
            os.close(self._pidfd)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._status is None:
                self.signal(9)
                self.wait()
            os.close(self._pidfd)
        finally:
            self._cleanup()
