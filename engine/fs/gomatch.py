"""Go's `path.Match` / `filepath.Match` (Unix) semantics, exactly, plus glob helpers.

Dockerfile `COPY` sources, BuildKit's wildcard resolution and `.dockerignore` syntax
checks are all defined in terms of Go's matcher, whose rules differ from Python's
`fnmatch` (`*` never crosses `/`, `[^a]` negates but `[!a]` does not, `\\` escapes,
malformed patterns are an error rather than a literal). `match` is a line-by-line
behavioural port of Go's algorithm (the reference); `compile` turns a pattern into a
Python regex once so that matching many names (a large directory) is cheap.

Both report a malformed pattern the way Go does: for any name, as soon as the whole
pattern has been checked (Go validates every chunk, even after a mismatch).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from engine.errors import ShipyardError

MAGIC_CHARS = "*?[\\"


class BadPatternError(ShipyardError):
    """Go's `ErrBadPattern`: a wildcard pattern that cannot be parsed."""

    def __init__(self, pattern: str) -> None:
        super().__init__(f"syntax error in pattern: {pattern!r}")
        self.pattern = pattern


class _Bad(Exception):
    """Internal signal for a malformed pattern (converted to BadPatternError)."""


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    """Split off a leading run of stars and the literal chunk up to the next star."""
    star = False
    while pattern and pattern[0] == "*":
        pattern = pattern[1:]
        star = True
    in_range = False
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 < n:
                i += 1
        elif c == "[":
            in_range = True
        elif c == "]":
            in_range = False
        elif c == "*" and not in_range:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _get_esc(chunk: str) -> tuple[str, str]:
    if not chunk or chunk[0] in "-]":
        raise _Bad
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise _Bad
    r, rest = chunk[0], chunk[1:]
    if not rest:
        raise _Bad
    return r, rest


def _match_chunk(chunk: str, s: str) -> tuple[str, bool]:
    """Match `chunk` at the start of `s`; returns (rest, ok). Raises _Bad on syntax errors."""
    failed = False
    while chunk:
        if not failed and not s:
            failed = True
        c = chunk[0]
        if c == "[":
            r = ""
            if not failed:
                r, s = s[0], s[1:]
            chunk = chunk[1:]
            negated = False
            if chunk and chunk[0] == "^":
                negated = True
                chunk = chunk[1:]
            matched = False
            nrange = 0
            while True:
                if chunk and chunk[0] == "]" and nrange > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk)
                hi = lo
                if chunk[0] == "-":
                    hi, chunk = _get_esc(chunk[1:])
                if not failed and lo <= r <= hi:
                    matched = True
                nrange += 1
            if matched == negated:
                failed = True
        elif c == "?":
            if not failed:
                if s[0] == "/":
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
        else:
            if c == "\\":
                chunk = chunk[1:]
                if not chunk:
                    raise _Bad
            if not failed:
                if chunk[0] != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    if failed:
        return "", False
    return s, True


def _go_match(pattern: str, name: str) -> bool:
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            # A trailing star matches the rest of the name unless it has a '/'.
            return "/" not in name
        t, ok = _match_chunk(chunk, name)
        if ok and (not t or pattern):
            name = t
            continue
        if star:
            i = 0
            advanced = False
            while i < len(name) and name[i] != "/":
                t, ok = _match_chunk(chunk, name[i + 1 :])
                if ok:
                    if not pattern and t:
                        i += 1
                        continue
                    name = t
                    advanced = True
                    break
                i += 1
            if advanced:
                continue
        # Before failing, check that the rest of the pattern is well formed.
        while pattern:
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, "")
        return False
    return not name


def match(pattern: str, name: str) -> bool:
    """Go's `path.Match(pattern, name)`; raises BadPatternError for a malformed pattern."""
    try:
        return _go_match(pattern, name)
    except _Bad:
        raise BadPatternError(pattern) from None


def validate(pattern: str) -> None:
    """Raise BadPatternError if Go would reject `pattern` (for any name)."""
    match(pattern, "")


def has_meta(path: str) -> bool:
    """Go's `filepath.Glob` test (Unix): does the path need pattern matching at all?"""
    return any(c in path for c in MAGIC_CHARS)


def contains_wildcards(name: str) -> bool:
    """BuildKit's test: an unescaped `*`, `?` or `[` (a `\\` escapes the next char)."""
    i = 0
    n = len(name)
    while i < n:
        c = name[i]
        if c == "\\":
            i += 2
            continue
        if c in "*?[":
            return True
        i += 1
    return False


def unescape(component: str) -> str:
    """The literal name a wildcard-free pattern component stands for (`a\\*b` → `a*b`)."""
    if "\\" not in component:
        return component
    out: list[str] = []
    i = 0
    n = len(component)
    while i < n:
        c = component[i]
        if c == "\\" and i + 1 < n:
            out.append(component[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def split_static_prefix(pattern: str) -> tuple[list[str], list[str]]:
    """Split a '/'-separated pattern at its first component with a wildcard.

    Returns (static components, pattern components); the static part is what a glob
    can resolve without listing directories (BuildKit's `splitWildcards`). Empty and
    `.` components are dropped; the static components are still escaped.
    """
    parts = [p for p in pattern.split("/") if p and p != "."]
    for i, part in enumerate(parts):
        if contains_wildcards(part):
            return parts[:i], parts[i:]
    return parts, []


def _class_char(c: str) -> str:
    if c in "\\]^-[":
        return "\\" + c
    return re.escape(c) if not c.isalnum() else c


def _translate(pattern: str) -> str:
    """A regex equivalent to Go's matcher for an already validated pattern."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            while i < n and pattern[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if c == "?":
            out.append("[^/]")
            i += 1
            continue
        if c == "\\":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "[":
            i += 1
            negated = False
            if i < n and pattern[i] == "^":
                negated = True
                i += 1
            items: list[str] = []
            first = True
            while True:
                if pattern[i] == "]" and not first:
                    i += 1
                    break
                first = False
                if pattern[i] == "\\":
                    i += 1
                lo = pattern[i]
                i += 1
                hi = lo
                if pattern[i] == "-":
                    i += 1
                    if pattern[i] == "\\":
                        i += 1
                    hi = pattern[i]
                    i += 1
                if lo == hi:
                    items.append(_class_char(lo))
                elif lo < hi:
                    items.append(_class_char(lo) + "-" + _class_char(hi))
                # hi < lo: an empty range, matches nothing (Go allows it).
            if not items:
                out.append("[^\\s\\S]" if not negated else "[\\s\\S]")
            else:
                out.append("[" + ("^" if negated else "") + "".join(items) + "]")
            continue
        out.append(re.escape(c))
        i += 1
    return "".join(out)


@lru_cache(maxsize=1024)
def compile(pattern: str) -> Callable[[str], bool]:
    """A fast predicate equivalent to `lambda name: match(pattern, name)`.

    Raises BadPatternError up front for a malformed pattern.
    """
    validate(pattern)
    if not has_meta(pattern):
        return pattern.__eq__
    regex = re.compile(_translate(pattern), re.DOTALL)
    fullmatch = regex.fullmatch

    def predicate(name: str) -> bool:
        return fullmatch(name) is not None

    return predicate
