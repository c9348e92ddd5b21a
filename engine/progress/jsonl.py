"""Solver events as JSON lines, one object per event, for machines."""

from __future__ import annotations

import json
import threading
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


def event_to_dict(event: Event) -> dict[str, object]:
    match event:
        case VertexStarted(vertex=v, name=name, at=at):
            return {"type": "started", "vertex": v, "name": name, "time": at}
        case VertexCached(vertex=v, name=name, at=at):
            return {"type": "cached", "vertex": v, "name": name, "time": at}
        case VertexCompleted(vertex=v, name=name, duration=d, error=error, at=at):
            out: dict[str, object] = {"type": "completed", "vertex": v, "name": name, "duration_s": round(d, 6), "time": at}
            if error:
                out["error"] = error
            return out
        case VertexLog(vertex=v, stream=stream, data=data, at=at):
            return {"type": "log", "vertex": v, "stream": stream, "data": data.decode("utf-8", "replace"), "time": at}
        case VertexStatus(vertex=v, label=label, current=current, total=total, at=at):
            return {"type": "status", "vertex": v, "label": label, "current": current, "total": total, "time": at}
        case BuildPlanned(total=total, at=at):
            return {"type": "planned", "total": total, "time": at}
        case BuildMessage(text=text, at=at):
            return {"type": "message", "text": text, "time": at}
    raise TypeError(f"unknown event {event!r}")


class JsonRenderer:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = json.dumps(event_to_dict(event), separators=(",", ":"))
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()
