"""Receiving a container's pty master, and sizing it.

A container that asks for a terminal gets a pty made inside its own devpts
instance; the runtime hands the master to whoever started it over a unix socket
with SCM_RIGHTS — runc's `--console-socket` protocol, which the builtin runtime
speaks too. Socket paths are limited to 108 bytes, so the listening socket lives
in a fresh private directory under the system temp dir, not in the state root.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import struct
import tempfile
import termios
from collections.abc import Callable, Iterator

from engine.errors import RuntimeBackendError

RECEIVE_TIMEOUT_SECONDS = 30.0


def receive_fd(sock: socket.socket, timeout: float = RECEIVE_TIMEOUT_SECONDS) -> int:
    """One fd sent over a connected unix socket."""
    sock.settimeout(timeout)
    try:
        _msg, fds, _flags, _addr = socket.recv_fds(sock, 4096, 4)
    except (TimeoutError, OSError) as exc:
        raise RuntimeBackendError(f"the container's terminal never arrived: {exc}") from exc
    if not fds:
        raise RuntimeBackendError("the container's terminal never arrived")
    for extra in fds[1:]:
        os.close(extra)
    os.set_inheritable(fds[0], False)
    return fds[0]


@contextlib.contextmanager
def console_socket(enabled: bool) -> Iterator[tuple[str | None, Callable[[], int]]]:
    """(path for --console-socket, a function returning the received master fd)."""
    if not enabled:

        def nothing() -> int:
            raise RuntimeBackendError("no terminal was asked for")

        yield None, nothing
        return
    directory = tempfile.mkdtemp(prefix="shipyard-console-")
    path = os.path.join(directory, "sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(1)

        def receive() -> int:
            listener.settimeout(RECEIVE_TIMEOUT_SECONDS)
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError) as exc:
                raise RuntimeBackendError(f"the container's terminal never arrived: {exc}") from exc
            with conn:
                return receive_fd(conn)

        yield path, receive
    finally:
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)


def set_winsize(fd: int, rows: int, cols: int) -> None:
    if rows > 0 and cols > 0:
        try:
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        except OSError:
            pass


def get_winsize(fd: int) -> tuple[int, int]:
    """(rows, cols) of a terminal, (0, 0) when `fd` is not one."""
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return 0, 0
    return rows, cols
