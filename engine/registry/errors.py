"""Errors from talking to registries, one line each: what was asked, of whom, and the answer.

They live here rather than in `engine.errors` so the registry package stays one
self-contained seam; they are still `ShipyardError`s, rendered once at the CLI edge.
"""

from __future__ import annotations

from engine.errors import ShipyardError


class RegistryError(ShipyardError):
    """A registry request that failed: `status` is the HTTP status (None: no answer at all)."""

    def __init__(self, message: str, *, status: int | None = None, host: str = "", code: str = "") -> None:
        self.message = message
        self.status = status
        self.host = host
        self.code = code
        super().__init__(message)


class RegistryNotFoundError(RegistryError):
    """The registry answered 404: no such manifest, tag, blob or repository."""


class RegistryAuthError(RegistryError):
    """The registry refused the credentials we have (401/403), or wants some and we have none."""


class RegistryConfigError(ShipyardError):
    """A config file (shipyard's TOML, docker's config.json) that cannot be used; names the file and key."""
