"""Solver events and the bus renderers subscribe to.

The solver publishes; the tty, plain and JSON renderers and the metadata writer
subscribe. Tests assert on events, not on terminal bytes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Union


@dataclass(frozen=True)
class VertexStarted:
    vertex: str
    name: str
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class VertexCached:
    vertex: str
    name: str
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class VertexCompleted:
    vertex: str
    name: str
    duration: float
    error: str = ""
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class VertexLog:
    vertex: str
    stream: int
    data: bytes
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class VertexStatus:
    """Progress inside a vertex: bytes hashed, layers exported, files copied."""

    vertex: str
    label: str
    current: int
    total: int = 0
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class BuildPlanned:
    """How many vertices this build will report (for the `(done/total)` counter)."""

    total: int
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class BuildMessage:
    """A line for the user that belongs to no vertex (exports, the summary)."""

    text: str
    at: float = field(default_factory=time.time)


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
        with self._lock:
            for subscriber in self._subscribers:
                subscriber(event)
