"""What every frontend produces, and the one thing it asks of the engine.

A frontend turns a build file into a graph (`engine.graph`) plus, beside it, the
image config of each result. It never talks to the solver or the cache; to learn a
base image's digest and config it asks an `ImageResolver` (BuildKit's metadata
resolver), which the engine implements over its image store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from engine.graph.ops import VertexMeta
from engine.graph.vertex import Vertex
from engine.oci.image import Image


@dataclass(frozen=True)
class ResolvedImage:
    ref: str
    """The normalized reference (`docker.io/library/busybox:latest`)."""
    manifest_digest: str
    image: Image


class ImageResolver(Protocol):
    def resolve(self, ref: str) -> ResolvedImage:
        """The image a FROM or COPY --from names; raises ImageNotFoundError."""
        ...


@dataclass(frozen=True)
class StepInfo:
    """One step as the user sees it: `[app 2/3] COPY sub/ /sub/`, its vertex and line."""

    vertex: str
    name: str
    location: str
    stage: str
    keyword: str = ""
    """The instruction (`FROM`, `RUN`, …): a FROM step's vertex belongs to the base stage."""


@dataclass(frozen=True)
class LoweredBuild:
    target: Vertex
    image: Image
    """The target's image config and history; diff_ids and times are the exporter's."""
    meta: dict[str, list[VertexMeta]]
    steps: tuple[StepInfo, ...]
    stage: str
