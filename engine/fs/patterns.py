"""`.dockerignore`-style path patterns with moby/patternmatcher semantics.

Used for `COPY --exclude`, `COPY --parents` include patterns and (by the frontend) for
`.dockerignore`. The rules are Docker's, not gitignore's:

- patterns are `filepath.Clean`ed and anchored at the root they are matched against
  (`foo/bar` matches only `foo/bar`, `abc` does not match `x/abc`);
- `*` and `?` never cross `/`; `**` matches any number of components (also none);
- a pattern matching a directory matches everything below it;
- `!pattern` re-includes; patterns are evaluated in order and the last match wins.

Each pattern compiles to a regex the way moby does it (`Pattern.compile`), so quirks
such as `[...]` being passed straight to the regex engine are kept. Go's RE2 and
Python's `re` agree on the constructs produced here except for POSIX classes
(`[[:alpha:]]`), which RE2 knows and `re` does not.
"""

from __future__ import annotations

import posixpath
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from engine.fs import gomatch

MatchInfo = tuple[bool, ...]
"""Per-pattern "an ancestor matched" flags, threaded through a directory walk."""

_ESCAPE = set(".+()|{}$")
_EXACT, _PREFIX, _SUFFIX, _REGEXP = range(4)


def _go_clean(path: str) -> str:
    """Go's `filepath.Clean` (Unix): `''` → `.`, keeps a leading `/`, drops `..` at root."""
    if path == "":
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def _parent_dirs(path: str) -> list[str]:
    """The components of Go's `filepath.Dir(path)`, or [] when that is `.`."""
    parent = _go_clean(path[: path.rfind("/") + 1])
    return [] if parent == "." else parent.split("/")


@dataclass(frozen=True)
class Pattern:
    """One compiled pattern (without its `!`)."""

    text: str
    exclusion: bool
    dirs: tuple[str, ...]
    kind: int
    regex: re.Pattern[str] | None

    def match(self, path: str) -> bool:
        if self.kind == _EXACT:
            return path == self.text
        if self.kind == _PREFIX:
            return path.startswith(self.text[:-2])
        if self.kind == _SUFFIX:
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix[:1] == "/" and path == suffix[1:]
        assert self.regex is not None
        return self.regex.fullmatch(path) is not None


def _compile(text: str, exclusion: bool) -> Pattern:
    regex = ""
    kind = _EXACT
    i = 0
    n = len(text)
    token = 0
    while i < n:
        ch = text[i]
        i += 1
        if ch == "*":
            if i < n and text[i] == "*":
                i += 1
                if i < n and text[i] == "/":
                    i += 1
                if i >= n:
                    if kind == _EXACT:
                        kind = _PREFIX
                    else:
                        regex += ".*"
                        kind = _REGEXP
                else:
                    regex += "(.*/)?"
                    kind = _REGEXP
                if token == 0:
                    kind = _SUFFIX
            else:
                regex += "[^/]*"
                kind = _REGEXP
        elif ch == "?":
            regex += "[^/]"
            kind = _REGEXP
        elif ch in _ESCAPE:
            regex += "\\" + ch
        elif ch == "\\":
            if i < n:
                regex += "\\" + text[i]
                i += 1
                kind = _REGEXP
            else:
                regex += "\\\\"
        elif ch in "[]":
            regex += ch
            kind = _REGEXP
        else:
            regex += ch
        token += 1
    compiled: re.Pattern[str] | None = None
    if kind == _REGEXP:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                compiled = re.compile(regex, re.DOTALL)
        except re.error:
            raise gomatch.BadPatternError(text) from None
    return Pattern(text=text, exclusion=exclusion, dirs=tuple(text.split("/")), kind=kind, regex=compiled)


class PatternMatcher:
    """An ordered list of patterns; `!` patterns re-include what earlier ones matched."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns: list[Pattern] = []
        self.exclusions = False
        for raw in patterns:
            p = raw.strip()
            if not p:
                continue
            p = _go_clean(p)
            exclusion = False
            if p[0] == "!":
                if len(p) == 1:
                    raise gomatch.BadPatternError(raw)
                exclusion = True
                p = p[1:]
                self.exclusions = True
            gomatch.validate(p)
            self.patterns.append(_compile(p, exclusion))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches_exact(self, path: str) -> bool:
        """Match `path` itself only (no parent-directory rule)."""
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            if pattern.match(path):
                matched = not pattern.exclusion
        return matched

    def matches(self, path: str) -> bool:
        """moby's `MatchesOrParentMatches`: `path` or one of its parents matches."""
        matched = False
        parent_dirs = _parent_dirs(path)
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            hit = pattern.match(path)
            if not hit and parent_dirs:
                for i in range(len(parent_dirs)):
                    if pattern.match("/".join(parent_dirs[: i + 1])):
                        hit = True
                        break
            if hit:
                matched = not pattern.exclusion
        return matched

    def matches_with_parent(self, path: str, parent: MatchInfo | None) -> tuple[bool, MatchInfo]:
        """moby's `MatchesUsingParentResults`, for walking a tree top-down.

        `parent` is the MatchInfo returned for `path`'s directory (None at the top,
        where the parent directories are checked explicitly).
        """
        matched = False
        info: list[bool] = []
        for i, pattern in enumerate(self.patterns):
            hit = parent[i] if parent else False
            if not hit:
                if pattern.exclusion != matched:
                    info.append(False)
                    continue
                hit = pattern.match(path)
                if not hit and not parent:
                    dirs = _parent_dirs(path)
                    for j in range(len(dirs)):
                        if pattern.match("/".join(dirs[: j + 1])):
                            hit = True
                            break
            info.append(hit)
            if hit:
                matched = not pattern.exclusion
        return matched, tuple(info)

    def may_match_below(self, directory: str, exclusion: bool = False) -> bool:
        """Could a path strictly below `directory` match one of the patterns?

        Only patterns whose `!` flag equals `exclusion` count. Conservative (True
        when unsure); used to skip walking subtrees an include pattern can never
        reach, or an excluded subtree no `!` pattern can re-include. A pattern that
        matches `directory` or an ancestor is the caller's business (it decides
        through the parent-match rule).
        """
        parts = directory.split("/") if directory else []
        for pattern in self.patterns:
            if pattern.exclusion != exclusion:
                continue
            dirs = pattern.dirs
            if "[" in pattern.text or any("**" in d for d in dirs):
                return True
            if len(dirs) <= len(parts):
                continue
            if all(_component_may_match(dirs[k], parts[k]) for k in range(len(parts))):
                return True
        return False


def _component_may_match(pattern_dir: str, name: str) -> bool:
    try:
        return _compile(pattern_dir, False).match(name)
    except gomatch.BadPatternError:
        return True
