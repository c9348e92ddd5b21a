"""The engine's debug log: `<state>/logs/shipyard.log`, shared safely by concurrent builds.

concurrent-log-handler does the cross-process locking and rotation, but importing it
(and portalocker's package-metadata lookup) costs ~90 ms — most of a no-op rebuild's
budget. So records are buffered in memory and the handler is attached off the
critical path: in a background thread once a build has been running for a while
(long builds then log to the file as they go, and lose nothing if killed), or, for
a short build, in a short-lived forked writer after the result is printed, so the
user never waits for it and the import never competes with starting containers.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

LOGGER_NAME = "shipyard"
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3
ATTACH_AFTER_SECONDS = 3.0


class _Buffer(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class DebugLog:
    def __init__(self, logs_dir: Path, level: int = logging.DEBUG) -> None:
        self.path = logs_dir / "shipyard.log"
        self.logger = logging.getLogger(LOGGER_NAME)
        self.logger.setLevel(level)
        self.logger.propagate = False
        self._buffer = _Buffer()
        self.logger.addHandler(self._buffer)
        self._attached = False
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def _file_handler(self) -> logging.Handler:
        from concurrent_log_handler import ConcurrentRotatingFileHandler

        handler = ConcurrentRotatingFileHandler(str(self.path), maxBytes=MAX_BYTES, backupCount=BACKUPS)
        handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(threadName)s %(levelname)s %(message)s"))
        return handler

    def attach(self) -> None:
        """Start writing to the file now (flushing what was buffered)."""
        with self._lock:
            if self._attached:
                return
            handler = self._file_handler()
            for record in self._buffer.records:
                handler.handle(record)
            self.logger.addHandler(handler)
            self.logger.removeHandler(self._buffer)
            self._buffer.records.clear()
            self._attached = True

    def attach_later(self, delay: float = ATTACH_AFTER_SECONDS) -> None:
        """Attach the file handler in the background if the build is still running after `delay`."""
        with self._lock:
            if self._attached or self._timer is not None:
                return
            self._timer = threading.Timer(delay, self.attach)
            self._timer.daemon = True
            self._timer.start()

    def finish(self) -> None:
        """Make sure every record reaches the file, without keeping the user waiting."""
        timer = self._timer
        if timer is not None:
            timer.cancel()
            if timer.is_alive():
                timer.join()  # it fired: let it finish attaching, then flush below
        with self._lock:
            pending = not self._attached and bool(self._buffer.records)
        if not pending:
            for handler in list(self.logger.handlers):
                handler.flush()
            return
        try:
            pid = os.fork()
        except OSError:
            self.attach()
            return
        if pid == 0:  # the writer: detached from the terminal and the caller's pipes
            try:
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.setsid()
                self.attach()
                for handler in list(self.logger.handlers):
                    handler.flush()
                    handler.close()
            finally:
                os._exit(0)
