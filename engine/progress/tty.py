"""BuildKit's tty progress, drawn with rich: a live header, one row per step, log tails.

`[+] Building 3.2s (12/15)`, then ` => [app 2/3] RUN make   1.2s`, `=> CACHED [...]`,
and the last lines of each running step's output under its row. rich is imported
only here, so builds that print plain progress never pay for it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
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

LOG_LINES = 6


@dataclass
class _Row:
    name: str
    started: float = 0.0
    duration: float | None = None
    cached: bool = False
    error: str = ""
    status: str = ""
    logs: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    partial: str = ""


class TtyRenderer:
    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=out, stderr=True, highlight=False)
        self._rows: dict[str, _Row] = {}
        self._lock = threading.Lock()
        self._start = time.time()
        self._total = 0
        self._finished = False
        self._messages: list[str] = []
        self._live = Live(console=self.console, refresh_per_second=8, transient=False, get_renderable=self._render)
        self._live.start()

    def __call__(self, event: Event) -> None:
        with self._lock:
            match event:
                case VertexStarted(vertex=v, name=name, at=at):
                    self._rows[v] = _Row(name, started=at)
                case VertexCached(vertex=v, name=name):
                    self._rows[v] = _Row(name, cached=True, duration=0.0)
                case VertexLog(vertex=v, data=data):
                    row = self._rows.get(v)
                    if row is not None:
                        text = row.partial + data.decode("utf-8", "replace")
                        *lines, row.partial = text.split("\n")
                        row.logs.extend(lines)
                case VertexStatus(vertex=v, label=label, current=current, total=total):
                    row = self._rows.get(v)
                    if row is not None:
                        row.status = f"{label} {current}{'/' + str(total) if total else ''}"
                case VertexCompleted(vertex=v, duration=duration, error=error):
                    row = self._rows.setdefault(v, _Row(event.name))
                    row.duration = duration
                    row.error = error
                case BuildPlanned(total=total):
                    self._total = total
                case BuildMessage(text=text):
                    self._messages.append(text)

    def close(self) -> None:
        with self._lock:
            self._finished = True
        self._live.refresh()
        self._live.stop()

    def _render(self):  # type: ignore[no-untyped-def]
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            now = time.time()
            done = sum(1 for r in self._rows.values() if r.duration is not None)
            total = max(self._total, len(self._rows))
            state = "FINISHED" if self._finished else ""
            grid = Table.grid(expand=True)
            grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
            grid.add_column(justify="right", no_wrap=True)
            grid.add_row(Text(f"[+] Building {now - self._start:.1f}s ({done}/{total}) {state}".rstrip(), style="bold"), "")
            rows = list(self._rows.values())
            height = max(self.console.size.height - 2, 5)
            if not self._finished and len(rows) > height:
                running = [r for r in rows if r.duration is None]
                rows = (rows[: max(height - len(running), 0)] + running)[-height:]
            for row in rows:
                if row.cached:
                    grid.add_row(Text(f" => CACHED {row.name}", style="blue"), Text("0.0s", style="blue"))
                    continue
                elapsed = row.duration if row.duration is not None else now - row.started
                style = "red" if row.error else ("blue" if row.duration is not None else "bold")
                prefix = " => ERROR " if row.error else " => "
                grid.add_row(Text(prefix + row.name, style=style), Text(f"{elapsed:.1f}s", style=style))
                if row.duration is None or row.error:
                    if row.status:
                        grid.add_row(Text(f" => => {row.status}", style="dim"), "")
                    for line in row.logs:
                        grid.add_row(Text(f" => => # {line}", style="dim"), "")
            for message in self._messages:
                grid.add_row(Text(message), "")
            return grid
