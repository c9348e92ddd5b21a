"""One exception tree for every error a user can cause or meet.

(Plain classes rather than dataclasses: this module is imported by every command,
and defining dataclasses costs start-up time.)

Errors carry their location (file and line, step, key path) as data and are turned
into a one-line message and an exit code only at the CLI edge (`engine.cli`), so no
module below the CLI prints or exits.
"""

from __future__ import annotations


class ShipyardError(Exception):
    """Base of every error shown to the user as a one-line message (no traceback)."""

    exit_code: int = 1

    def user_message(self) -> str:
        return str(self)


class UsageError(ShipyardError):
    """Bad command-line usage (unknown flag value, missing argument)."""

    exit_code = 2


class DockerfileError(ShipyardError):
    """A Dockerfile that cannot be parsed or lowered; names `file:line`."""

    def __init__(self, message: str, filename: str = "Dockerfile", line: int = 0) -> None:
        self.message = message
        self.filename = filename
        self.line = line
        super().__init__(self.user_message())

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and (self.message, self.filename, self.line) == (other.message, other.filename, other.line)  # type: ignore[attr-defined]
        )

    __hash__ = Exception.__hash__

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, {self.filename!r}, {self.line!r})"

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


class BuildStepError(ShipyardError):
    """A build step that failed: which step, where it came from, and its output's tail."""

    def __init__(
        self,
        step: str,
        message: str,
        location: str = "",
        exit_status: int | None = None,
        output_tail: tuple[str, ...] = (),
    ) -> None:
        self.step = step
        self.message = message
        self.location = location
        self.exit_status = exit_status
        self.output_tail = output_tail
        super().__init__(self.user_message())

    def user_message(self) -> str:
        where = f"{self.location}: " if self.location else ""
        status = f" (exit code {self.exit_status})" if self.exit_status is not None else ""
        return f"{where}{self.step}: {self.message}{status}"


class BuildCancelled(ShipyardError):
    """A step stopped because another step failed or the user interrupted the build."""

    exit_code = 130
