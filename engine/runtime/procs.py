"""Processes named by (pid, start time), so a recycled pid is never signalled by mistake.

Long-lived containers outlive the command that started them; later commands
(`ps`, `stop`, `rm`, `exec`) find their processes from recorded pids. A pid alone
can be reused once its process is gone, so every record carries the start time
from /proc/PID/stat, and every action goes through a pidfd opened and then
checked against it: once the pidfd is open it pins that very process.
"""

from __future__ import annotations

import os
import select
import signal
import time

PR_SET_CHILD_SUBREAPER = 36


def start_time(pid: int, *, alive: bool = False) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot), or None when there is no such
    process (with `alive`, also when it is a zombie: it exists but will never run again)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return None if alive and fields[0] in (b"Z", b"X") else int(fields[19])
    except (IndexError, ValueError):
        return None


def open_pidfd(pid: int, pid_start: int) -> int | None:
    """A pidfd for the process (pid, pid_start) if it still exists (even as a zombie)."""
    if pid <= 0:
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if start_time(pid) != pid_start:
        os.close(fd)
        return None
    return fd


def exited(pidfd: int) -> bool:
    """Whether the process behind `pidfd` has exited (a pidfd polls readable then)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def alive(pid: int, pid_start: int) -> bool:
    fd = open_pidfd(pid, pid_start)
    if fd is None:
        return False
    try:
        return not exited(fd)
    finally:
        os.close(fd)


def send_signal(pid: int, pid_start: int, signum: int) -> bool:
    """Signal the process if it is still the one recorded; False when it is gone."""
    fd = open_pidfd(pid, pid_start)
    if fd is None:
        return False
    try:
        signal.pidfd_send_signal(fd, signum)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def wait_gone(pid: int, pid_start: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for the process to exit; True when it has."""
    fd = open_pidfd(pid, pid_start)
    if fd is None:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout * 1000))))
    finally:
        os.close(fd)


def become_subreaper() -> None:
    """Adopt orphaned descendants (containerd-shim's trick), so that a container
    process created by a runtime that then exits is our child and its exit status ours."""
    from engine import linux

    linux.libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def wait_child(pid: int, timeout: float | None = None) -> int | None:
    """The exit status (128+N for signal N) of child `pid`; None when still running after `timeout`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, 0 if deadline is None else os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(0.01)
