"""The CLI's side of interactive containers: raw terminal mode and signals as events.

Signals that must reach the container (Ctrl-C without a tty, SIGTERM from a
process manager) and window-size changes arrive as bytes on a pipe
(`signal.set_wakeup_fd`), so the one-threaded copy loops of `run` and `exec`
handle them between reads and writes instead of inside an arbitrary frame.
"""

from __future__ import annotations

import contextlib
import os
import signal
import termios
import tty
from collections.abc import Iterator

# What reaches the container, as docker's sig-proxy does (job control stays the CLI's own).
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


@contextlib.contextmanager
def raw_terminal(fd: int, enabled: bool) -> Iterator[None]:
    """`fd` in raw mode (keys go to the container, Ctrl-C included), restored afterwards."""
    if not enabled or not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)  # not TCSAFLUSH: keys typed ahead belong to the container
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class SignalPipe:
    """Delivers the signals it catches as bytes on `fileno()`."""

    def __init__(self, signals: tuple[int, ...]) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        os.set_blocking(self._read, False)
        self._signals = signals
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalPipe:
        self._old_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for signum in self._signals:
            self._previous[signum] = signal.signal(signum, lambda _n, _f: None)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._old_fd)
        os.close(self._read)
        os.close(self._write)

    def fileno(self) -> int:
        return self._read

    def drain(self) -> list[int]:
        try:
            return list(os.read(self._read, 256))
        except BlockingIOError:
            return []
