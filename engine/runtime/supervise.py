"""Start a runtime's front process, stream its output, wait for it, honour cancel.

Shared by every backend: the front process (`runc run`, crun, or the builtin
`nsinit.py` helper) gets /dev/null as stdin and two pipes as stdout/stderr, which a
reader thread drains into the caller's callback as chunks arrive. The calling
thread waits on a pidfd (exit is seen at once, no polling of the process) and
checks the cancel event between short waits. Stopping is backend specific (runc
kill, closing the builtin's control pipe), so the backend passes it in.
"""

from __future__ import annotations

import os
import select
import subprocess
import threading
from typing import Callable, Sequence

from engine.errors import BuildCancelled, RuntimeBackendError
from engine.runtime.base import OutputCallback

CANCEL_CHECK_SECONDS = 0.05
CHUNK = 65536
# How long output may keep flowing after the front process exited. Everything in
# the container dies with its pid namespace, so EOF normally follows at once.
DRAIN_SECONDS = 5.0


class OutputPump:
    """Reads the stdout and stderr pipes on one thread and hands chunks on."""

    def __init__(self, stdout_fd: int, stderr_fd: int, on_output: OutputCallback) -> None:
        self._fds = {stdout_fd: 1, stderr_fd: 2}
        self._on_output = on_output
        self._abandon = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="runtime-output", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _deliver(self, stream: int, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            self._on_output(stream, data)
        except BaseException as exc:  # keep draining so the container never blocks on a full pipe
            self.error = exc

    def _run(self) -> None:
        poller = select.poll()
        for fd in self._fds:
            poller.register(fd, select.POLLIN)
        try:
            while self._fds:
                events = poller.poll(200)
                for fd, _event in events:
                    data = os.read(fd, CHUNK)
                    if data:
                        self._deliver(self._fds[fd], data)
                    else:
                        poller.unregister(fd)
                        del self._fds[fd]
                        os.close(fd)
                if not events and self._abandon.is_set():
                    break
        finally:
            for fd in self._fds:
                os.close(fd)
            self._fds = {}

    def finish(self, timeout: float = DRAIN_SECONDS) -> None:
        """Wait for EOF on both pipes; give up (closing them) after `timeout`."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abandon.set()
            self._thread.join()


def exit_status(returncode: int) -> int:
    """Popen's returncode as a shell reports it: 128+N for a death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def run_front_process(
    argv: Sequence[str],
    *,
    on_output: OutputCallback,
    cancel: threading.Event,
    stop: Callable[[subprocess.Popen[bytes]], None],
    pass_fds: Sequence[int] = (),
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run `argv` to completion; its exit status, or `BuildCancelled` after `stop`.

    `started` runs once the process exists (e.g. to feed it its config); `stop`
    must make the process exit soon — it is followed by SIGKILL if it does not.
    """
    if cancel.is_set():
        raise BuildCancelled("cancelled before the container started")
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            pass_fds=tuple(pass_fds),
            close_fds=True,
            env=env if env is not None else {"PATH": os.environ.get("PATH", os.defpath)},
        )
    except OSError as exc:
        os.close(out_r)
        os.close(err_r)
        raise RuntimeBackendError(f"cannot start {argv[0]}: {exc.strerror or exc}") from exc
    finally:
        os.close(out_w)
        os.close(err_w)
    pump = OutputPump(out_r, err_r, on_output)
    pump.start()
    cancelled = False
    try:
        if started is not None:
            started(proc)
        cancelled = _wait(proc, cancel, stop)
    except BaseException:
        # Interrupted (e.g. KeyboardInterrupt): take the container down, not just the front process.
        if proc.poll() is None:
            try:
                stop(proc)
            finally:
                if proc.poll() is None:
                    proc.kill()
        proc.wait()
        pump.finish(timeout=1.0)
        raise
    pump.finish()
    if cancelled:
        raise BuildCancelled("container killed: the build was cancelled")
    if pump.error is not None:
        raise pump.error
    return exit_status(proc.returncode)


def _wait(proc: subprocess.Popen[bytes], cancel: threading.Event, stop: Callable[[subprocess.Popen[bytes]], None]) -> bool:
    """Wait for `proc`; True when it was stopped because `cancel` was set."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        timeout_ms = int(CANCEL_CHECK_SECONDS * 1000)
        while True:
            if poller.poll(timeout_ms):
                proc.wait()
                return False
            if cancel.is_set():
                stop(proc)
                try:
                    proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                return True
    finally:
        os.close(pidfd)
