"""Solver events and the bus renderers subscribe to.

Events are NamedTuples (cheap to define: the no-op rebuild path imports this module);
`at` is stamped by the bus when the publisher leaves it 0.

The solver publishes; the tty, plain and JSON renderers and the metadata writer
subscribe. Tests assert on events, not on terminal bytes.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, NamedTuple, Union


class VertexStarted(NamedTuple):
    vertex: str
    name: str
    at: float = 0.0


class VertexCached(NamedTuple):
    vertex: str
    name: str
    at: float = 0.0


class VertexCompleted(NamedTuple):
    vertex: str
    name: str
    duration: float
    error: str = ""
    at: float = 0.0


class VertexLog(NamedTuple):
    vertex: str
    stream: int
    data: bytes
    at: float = 0.0


class VertexStatus(NamedTuple):
    """Progress inside a vertex: bytes hashed, layers exported, files copied."""

    vertex: str
    label: str
    current: int
    total: int = 0
    at: float = 0.0


class BuildPlanned(NamedTuple):
    """How many vertices this build will report (for the `(done/total)` counter)."""

    total: int
    at: float = 0.0


class BuildMessage(NamedTuple):
    """A line for the user that belongs to no vertex (exports, the summary)."""

    text: str
    at: float = 0.0


Event = Union[VertexStarted, VertexCached, VertexCompleted, VertexLog, VertexStatus, BuildPlanned, BuildMessage]
Subscriber = Callable[[Event], None]


class EventBus:
    """Fan-out of events to subscribers, safe to publish from any thread."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.append(subscriber)

    def publish(self, event: Event) -> None:
        if not event.at:
            event = event._replace(at=time.time())
        with self._lock:
            for subscriber in self._subscribers:
                subscriber(event)
