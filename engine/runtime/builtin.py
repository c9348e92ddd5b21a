"""The builtin runtime: Linux namespaces and pivot_root, nothing but the kernel.

Each run launches a fresh `python -I -S nsinit.py` (see that module for the
container side) rather than forking the engine: the engine is multi-threaded, and
running Python after fork in such a process can deadlock. The helper gets the same
OCI config document runc would, so the two backends build identical containers.
"""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
import threading
from pathlib import Path

from engine.errors import BuildCancelled
from engine.runtime.base import (
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

NSINIT = str(Path(__file__).with_name("nsinit.py"))
# Importing (rather than running) nsinit lets Python reuse its cached bytecode:
# compiling the file on every container start would cost ~5 ms.
_BOOTSTRAP = "import sys; sys.path.append(sys.argv[1]); import nsinit; nsinit.main(sys.argv[2])"


def helper_python() -> str:
    """The interpreter that runs nsinit.py: ours, resolved past venv/pyenv shims."""
    return os.path.realpath(sys.executable)


class BuiltinRuntime:
    """Runs containers with nsinit.py; needs root (the kernel does the rest)."""

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
                remove_stubs(stubs)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
