"""Build checks: BuildKit's lint rules over a parsed Dockerfile (placeholder; contract below)."""

from __future__ import annotations

from dataclasses import dataclass

from frontends.dockerfile.parser import Dockerfile


@dataclass(frozen=True)
class CheckWarning:
    rule: str
    message: str
    location: str
    url: str = ""

    def line(self) -> str:
        return f"{self.location}: {self.rule}: {self.message}"


def run_checks(dockerfile: Dockerfile, build_args: dict[str, str], target: str = "") -> list[CheckWarning]:
    return []
