"""`.dockerignore`: the context paths a build never sees, chosen and read as BuildKit does.

Which file (BuildKit's `dockerui`): `<Dockerfile>.dockerignore` beside the Dockerfile
wins (`-f app.Dockerfile` → `app.Dockerfile.dockerignore`; the default `Dockerfile` →
`Dockerfile.dockerignore`), else `.dockerignore` at the context root. A Dockerfile
read from stdin has only the latter. The build reads the Dockerfile and the ignore
file itself, so ignoring them (Docker's own advice) hides them from COPY/ADD only.

How it is read (moby/patternmatcher `ignorefile.ReadAll`): a UTF-8 BOM is dropped;
a line whose first character is `#` is a comment (`  #x` is a pattern); lines are
trimmed (Go's `TrimSpace`) and blank ones skipped; `!` marks an exception (spaces
after it trimmed too); each pattern is `filepath.Clean`ed (so `a/../b` is `b` and
`./x` is `x`) and loses one leading `/` (patterns are relative to the context root).
Matching itself is moby's pattern matcher (`engine.fs.patterns`: `*`, `?`, `**`,
the parent-directory rule, last match wins), applied by `ContextFilter`.

This module is on every build's start-up path: it reads at most two small files and
compiles nothing until a filter is asked for.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterable
from typing import NamedTuple, Self

from engine.errors import UsageError

DEFAULT_NAME = ".dockerignore"
MAX_LINE_BYTES = 64 * 1024
"""bufio.Scanner's default token limit: BuildKit fails on a longer line."""

_BOM = "\ufeff"
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


class IgnorePatterns(tuple):  # type: ignore[type-arg]
    """A tuple of patterns that remembers the file it came from (`source`).

    It travels as `BuildParams.exclude_patterns` / `LocalSource.exclude_patterns`
    (plain tuple semantics, so equality and digests ignore `source`), letting an
    executor say which file hid a path. A copy made with `tuple(...)` loses the name
    and messages fall back to `.dockerignore`.
    """

    source: str

    def __new__(cls, patterns: Iterable[str] = (), source: str = DEFAULT_NAME) -> Self:
        obj = super().__new__(cls, patterns)
        obj.source = source
        return obj

    def __getnewargs__(self) -> tuple[tuple[str, ...], str]:
        return tuple(self), self.source


class IgnoreFile(NamedTuple):
    """The ignore file a build uses: its host path (None when there is none), shown name, patterns.

    (A NamedTuple rather than a frozen dataclass: it is made on every build's start-up path.)
    """

    path: str | None
    name: str
    patterns: IgnorePatterns


def _go_clean(path: str) -> str:
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def read_patterns(data: bytes | str, name: str = DEFAULT_NAME) -> IgnorePatterns:
    """The patterns of an ignore file's content (moby's `ignorefile.ReadAll`)."""
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    patterns: list[str] = []
    for number, line in enumerate(text.split("\n")):
        line = line.removesuffix("\r")
        if len(line.encode("utf-8", "surrogateescape")) > MAX_LINE_BYTES:
            raise UsageError(f"failed parsing {name}: line {number + 1} is longer than {MAX_LINE_BYTES} bytes")
        if number == 0 and line.startswith(_BOM):
            line = line[1:]
        if line.startswith("#"):
            continue
        pattern = line.strip(_GO_SPACE)
        if not pattern:
            continue
        invert = pattern[0] == "!"
        if invert:
            pattern = pattern[1:].strip(_GO_SPACE)
        if pattern:
            pattern = _go_clean(pattern)
            if len(pattern) > 1 and pattern[0] == "/":
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return IgnorePatterns(patterns, name)


def find_ignore_file(context: str, dockerfile: str | None) -> tuple[str, str] | None:
    """(host path, shown name) of the ignore file for a build, or None.

    `dockerfile` is the Dockerfile's host path, None when it comes from stdin.
    """
    if dockerfile:
        beside = dockerfile + ".dockerignore"
        if os.path.isfile(beside):
            return beside, os.path.basename(beside)
    default = os.path.join(context, DEFAULT_NAME)
    if os.path.isfile(default):
        return default, DEFAULT_NAME
    return None


def load_ignore(context: str, dockerfile: str | None) -> IgnoreFile:
    """Read the build's ignore file; an unreadable or malformed one is a UsageError."""
    found = find_ignore_file(context, dockerfile)
    if found is None:
        return IgnoreFile(None, DEFAULT_NAME, IgnorePatterns((), DEFAULT_NAME))
    path, name = found
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UsageError(f"failed to read {name}: {exc.strerror}") from None
    patterns = read_patterns(data, name)
    if patterns:
        _validate(patterns, name)
    return IgnoreFile(path, name, patterns)


def _validate(patterns: IgnorePatterns, name: str) -> None:
    from engine.fs.gomatch import BadPatternError
    from engine.fs.patterns import PatternMatcher

    try:
        PatternMatcher(patterns)
    except BadPatternError as exc:
        raise UsageError(f"failed parsing {name}: {exc}") from None


def context_filter(patterns: Iterable[str], label: str | None = None):  # type: ignore[no-untyped-def]
    """A `ContextFilter` for `patterns` (None when there are none).

    The filter is the predicate `cache.checksum.ContextHasher` takes (`(rel, is_dir)
    -> excluded`) and what the copy paths use to treat excluded entries as absent.
    """
    patterns = tuple(patterns) if not isinstance(patterns, tuple) else patterns
    if not patterns:
        return None
    from engine.fs.selection import ContextFilter

    name = label or getattr(patterns, "source", None) or DEFAULT_NAME
    return ContextFilter(patterns, name)


def exclude_factory(label: str = DEFAULT_NAME) -> Callable[[tuple[str, ...]], Callable[[str, bool], bool] | None]:
    """The `exclude_factory` for `cache.checksum.ContextHashers`: patterns → filter."""

    def make(patterns: tuple[str, ...]) -> Callable[[str, bool], bool] | None:
        return context_filter(patterns, label)

    return make
