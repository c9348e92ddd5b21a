"""Errors about containers (part of the one `ShipyardError` tree)."""

from __future__ import annotations

from engine.errors import ShipyardError


class ContainerError(ShipyardError):
    """A container operation that cannot be done (a name in use, a running container to remove)."""


class NoSuchContainer(ContainerError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"No such container: {ref}")


class PortInUse(ContainerError):
    """A published host port that another process already has."""
