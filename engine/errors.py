"""One exception tree for every error a user can cause or meet.

Errors carry their location (file and line, step, key path) as data and are turned
into a one-line message and an exit code only at the CLI edge (`engine.cli`), so no
module below the CLI prints or exits.
"""

from __future__ import annotations

from dataclasses import dataclass


class ShipyardError(Exception):
    """Base of every error shown to the user as a one-line message (no traceback)."""

    exit_code: int = 1

    def user_message(self) -> str:
        return str(self)


class UsageError(ShipyardError):
    """Bad command-line usage (unknown flag value, missing argument)."""

    exit_code = 2


@dataclass
class DockerfileError(ShipyardError):
    """A Dockerfile that cannot be parsed or lowered; names `file:line`."""

    message: str
    filename: str = "Dockerfile"
    line: int = 0

    def __post_init__(self) -> None:
        super().__init__(self.user_message())

    def user_message(self) -> str:
        where = f"{self.filename}:{self.line}" if self.line else self.filename
        return f"{where}: {self.message}"


class GraphError(ShipyardError):
    """An invalid build graph (a cycle, a reference to a missing stage)."""


class CacheError(ShipyardError):
    """A problem with the state directory: a corrupt blob, an unusable snapshot."""


class ImageNotFoundError(ShipyardError):
    """A name that is in no image store Shipyard can reach."""


class RuntimeBackendError(ShipyardError):
    """No container runtime could start, or a runtime misbehaved outside a step."""


class ExportError(ShipyardError):
    """An output (OCI layout, docker archive, local directory) could not be written."""


class ContextError(ShipyardError):
    """A build-context path that is missing or would leave the context root."""


@dataclass
class BuildStepError(ShipyardError):
    """A build step that failed: which step, where it came from, and its output's tail."""

    step: str
    message: str
    location: str = ""
    exit_status: int | None = None
    output_tail: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__init__(self.user_message())

    def user_message(self) -> str:
        where = f"{self.location}: " if self.location else ""
        status = f" (exit code {self.exit_status})" if self.exit_status is not None else ""
        return f"{where}{self.step}: {self.message}{status}"


class BuildCancelled(ShipyardError):
    """A step stopped because another step failed or the user interrupted the build."""

    exit_code = 130
