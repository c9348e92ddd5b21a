"""RUN --mount lowering: typed `RunMount`s become `Mount`s of the `ExecOp` and its extra inputs.

(Placeholder until RUN --mount lands: the contract is below.)
"""

from __future__ import annotations

from typing import Callable

from engine.errors import DockerfileError
from engine.graph.ops import Mount
from engine.graph.vertex import Vertex
from frontends.dockerfile.mounts import RunMount


def lower_run_mounts(
    mounts: tuple[RunMount, ...],
    *,
    source_for: Callable[[str, int], Vertex],
    cwd: str,
    filename: str,
    line: int,
) -> tuple[list[Vertex], list[Mount], list[str]]:
    """(extra input vertices — input 1, 2, … of the exec —, their mounts, extra env "K=V").

    `source_for(from_, line)` gives the vertex a mount reads from: the build context
    for "", else a stage, a named context or an image.
    """
    if mounts:
        raise DockerfileError("RUN --mount is not supported yet", filename, line)
    return [], [], []
