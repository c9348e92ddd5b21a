"""Hard limits on what one Dockerfile may make the frontend do (reliability.md §11).

A Dockerfile is untrusted input to a process running as root on a CI fleet. Without
limits, a few kilobytes can make the frontend use gigabytes or run for hours: chained
`ARG b=$a$a`, `ARG c=$b$b`, … doubles a value per line (each value is capped at
1 MiB by the shell lexer, but a thousand 1 MiB values are a gigabyte); a million
`LABEL` keys make every later instruction slower (moby/moby#38986 OOMed the daemon);
thousands of chained stages copy ever-longer histories. BuildKit has no such limits;
these are far above anything a hand-written or generated Dockerfile needs, and each
fails at once with an error that names the limit.

Cycles (`COPY --from` a stage that depends on this one) are reported by the lowering
with the cycle's path; recursion never grows with the input (the stage order is
`graphlib`'s).
"""

from __future__ import annotations

from typing import Mapping

from engine.errors import DockerfileError
from frontends.dockerfile.shell_lexer import ExpansionError, ShellLex, WordResult

MAX_DOCKERFILE_BYTES = 16 << 20
"""The whole file, heredocs included (the largest real ones are a few hundred KiB)."""
MAX_INSTRUCTIONS = 10_000
MAX_STAGES = 1_000
MAX_KEYS = 1_000
"""ARG, ENV and LABEL keys per stage: every instruction costs time proportional to them."""
MAX_EXPANSION_BYTES = 32 << 20
"""How much variable expansion may *add* over the words it expands, summed over the build."""


def check_size(text: str, filename: str) -> None:
    """Refuse a Dockerfile too large to parse in bounded memory (before parsing it)."""
    if len(text) > MAX_DOCKERFILE_BYTES // 4 and len(text.encode("utf-8", "surrogateescape")) > MAX_DOCKERFILE_BYTES:
        raise DockerfileError(f"the Dockerfile is larger than the limit of {MAX_DOCKERFILE_BYTES >> 20} MiB", filename)


def check_counts(instructions: int, stages: int, filename: str, line: int) -> None:
    """Refuse a Dockerfile with more instructions or stages than the limits (`line`: where it went over)."""
    if instructions > MAX_INSTRUCTIONS:
        raise DockerfileError(f"more than {MAX_INSTRUCTIONS} instructions (the limit)", filename, line)
    if stages > MAX_STAGES:
        raise DockerfileError(f"more than {MAX_STAGES} build stages (the limit)", filename, line)


def check_keys(kind: str, count: int, filename: str, line: int) -> None:
    """Refuse a stage with more than MAX_KEYS ARG, ENV or LABEL keys (`kind`)."""
    if count > MAX_KEYS:
        raise DockerfileError(f"more than {MAX_KEYS} {kind} keys in one stage (the limit)", filename, line)


class BudgetedLex(ShellLex):
    """A shell lexer that counts what expansion adds, across every word of a build.

    Each word is already capped (`ShellLex.max_size`); this caps the sum, so a chain of
    ARGs that each expand to the cap cannot add up to gigabytes. Only growth counts: a
    word that expands to no more than itself costs nothing.
    """

    __slots__ = ("budget",)

    def __init__(self, escape: str = "\\", *, budget: int = MAX_EXPANSION_BYTES, **options: bool) -> None:
        super().__init__(escape, **options)  # type: ignore[arg-type]
        self.budget = budget

    def _check(self) -> None:
        """Refuse at once once the budget is spent: a caller that keeps going after the
        error (the build checks report it and carry on) must not pay for more expansion."""
        if self.budget < 0:
            raise ExpansionError(
                f"variable expansion in this Dockerfile exceeds the limit of {MAX_EXPANSION_BYTES >> 20} MiB in total"
            )

    def _spend(self, word: str, produced: int) -> None:
        grew = produced - len(word)
        if grew > 0:
            self.budget -= grew
            self._check()

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        self._check()
        result = super().process_word(word, env)
        self._spend(word, len(result))
        return result

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        self._check()
        result = super().process_words(word, env)
        self._spend(word, sum(map(len, result)))
        return result

    def process_word_with_matches(self, word: str, env: Mapping[str, str]) -> WordResult:
        self._check()
        result = super().process_word_with_matches(word, env)
        self._spend(word, len(result.result))
        return result
