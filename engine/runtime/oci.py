"""The OCI runtime backend: a bundle per run, handed to runc or crun.

Like BuildKit's runc worker: config.json is generated from the step (see
`ocispec`), `<runtime> run` runs in the foreground with our pipes as the
container's stdio, and the runtime's own log goes to a JSON file in the bundle so
its error line can be reported cleanly. On cancel the container is killed with
`kill <id> KILL` (pid 1 dying takes its pid namespace with it) and deleted.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

from engine.errors import BuildCancelled
from engine.runtime.base import (
    STATUS_CANNOT_EXECUTE,
    STATUS_NOT_FOUND,
    STATUS_RUNTIME_FAILED,
    ContainerSetupError,
    OutputCallback,
    ProcessSpec,
    check_container_id,
    check_spec,
)
from engine.runtime.etcfiles import write_etc_files
from engine.runtime.mountpoints import prepare_rootfs, remove_stubs
from engine.runtime.ocispec import build_config
from engine.runtime.supervise import run_front_process
from engine.runtime.workdir import container_dir

KILL_RETRY_SECONDS = 0.8


class OciRuntime:
    """runc or crun, driven through bundles under `state_root/runtime/<id>/`."""

    def __init__(self, name: str, binary: str, state_root: Path) -> None:
        self.name = name
        self.binary = binary
        self._dir = Path(state_root) / "runtime"
        self._root = str(self._dir / name)  # the runtime's own --root (container state)

    def _command(self, *args: str, log: str | None = None) -> list[str]:
        argv = [self.binary, "--root", self._root]
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
                remove_stubs(stubs)

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
