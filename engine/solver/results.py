"""What a vertex produced, shared by the executors of every op type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from engine.graph.ops import SCRATCH

OutputSink = Callable[[int, bytes], None]


@dataclass(frozen=True)
class Result:
    """What a vertex produced: a snapshot (None = empty filesystem) or a host directory."""

    snapshot: int | None
    created: float = 0.0
    context_path: str | None = None


EMPTY = Result(None)


def input_result(inputs: list[Result], index: int) -> Result:
    return EMPTY if index == SCRATCH else inputs[index]
