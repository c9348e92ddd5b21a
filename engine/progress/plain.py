"""BuildKit's plain progress: an append-only log (`#5 [2/3] RUN make`, `#5 DONE 0.4s`).

For CI logs and pipes. Never truncates output lines (BuildKit once did: moby/buildkit#1412).
"""

from __future__ import annotations

import threading
import time
from typing import TextIO

from engine.progress.events import (
    BuildMessage,
    BuildPlanned,
    Event,
    VertexCached,
    VertexCompleted,
    VertexLog,
    VertexStarted,
    VertexStatus,
)


class PlainRenderer:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._numbers: dict[str, int] = {}
        self._started: dict[str, float] = {}
        self._partial: dict[str, str] = {}
        self._lock = threading.Lock()

    def _number(self, vertex: str) -> int:
        if vertex not in self._numbers:
            self._numbers[vertex] = len(self._numbers) + 1
        return self._numbers[vertex]

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._handle(event)
            self.out.flush()

    def _handle(self, event: Event) -> None:
        match event:
            case VertexStarted(vertex=v, name=name, at=at):
                self._started[v] = at
                self.out.write(f"#{self._number(v)} {name}\n")
            case VertexCached(vertex=v, name=name):
                n = self._number(v)
                self.out.write(f"#{n} {name}\n#{n} CACHED\n\n")
            case VertexLog(vertex=v, data=data, at=at):
                n = self._number(v)
                elapsed = at - self._started.get(v, at)
                text = self._partial.pop(v, "") + data.decode("utf-8", "replace")
                *lines, rest = text.split("\n")
                if rest:
                    self._partial[v] = rest
                for line in lines:
                    self.out.write(f"#{n} {elapsed:.3f} {line}\n")
            case VertexStatus(vertex=v, label=label, current=current, total=total):
                n = self._number(v)
                self.out.write(f"#{n} {label} {current}{'/' + str(total) if total else ''}\n")
            case VertexCompleted(vertex=v, duration=duration, error=error):
                n = self._number(v)
                rest = self._partial.pop(v, "")
                if rest:
                    self.out.write(f"#{n} {time.time() - self._started.get(v, time.time()):.3f} {rest}\n")
                if error:
                    self.out.write(f"#{n} ERROR: {error}\n\n")
                else:
                    self.out.write(f"#{n} DONE {duration:.1f}s\n\n")
            case BuildMessage(text=text):
                self.out.write(text + "\n")
            case BuildPlanned():
                pass
