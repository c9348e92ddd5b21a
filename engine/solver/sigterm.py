"""SIGTERM during a solve: cancel it like Ctrl-C, but exit as docker does for SIGTERM.

Ctrl-C reaches the main thread as KeyboardInterrupt (exit 130). SIGTERM has no such
default in Python, so the handler cancels the solver, which kills its containers and
unwinds every step; the resulting BuildCancelled then carries 128 + SIGTERM = 143, the
status a shell or CI runner expects from a process stopped by SIGTERM.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator, Protocol

from engine.errors import BuildCancelled


class Cancellable(Protocol):
    def cancel(self) -> None: ...


@contextmanager
def cancel_on_sigterm(solver: Cancellable) -> Iterator[None]:
    """Within the block, SIGTERM cancels `solver`; the cancellation exits 143."""
    terminated: list[int] = []

    def on_sigterm(signum: int, _frame: object) -> None:
        terminated.append(signum)
        solver.cancel()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except BuildCancelled as exc:
        if terminated:
            exc.exit_code = 128 + signal.SIGTERM
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
