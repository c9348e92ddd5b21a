"""`--call=outline|targets|check` and `shipyard dockerfile parse` (placeholder; contract below)."""

from __future__ import annotations

from engine.errors import UsageError
from frontends.dockerfile.parser import Dockerfile


def print_parsed(path: str, *, as_json: bool) -> int:
    raise UsageError("shipyard dockerfile parse is not implemented yet")


def run_call(kind: str, dockerfile: Dockerfile, build_args: dict[str, str], target: str) -> int:
    """Print what `--call=KIND` asks for; returns the exit code (check: 1 when a check fails with error=true)."""
    raise UsageError(f"--call={kind} is not implemented yet")
