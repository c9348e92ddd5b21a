"""Instruction flags (`--from=x`, `--link`) and the Go value syntaxes behind them.

BuildKit checks instruction flags with its `BFlags` type and reads their values with
Go's `strconv` and `time` parsers; users see those parsers' rules and messages (a
HEALTHCHECK interval of `1d` is `unknown unit "d"`, a mount mode of `0x1ff` is not
octal). This module reproduces that layer so `instructions.py` and `mounts.py` can stay
about Dockerfile semantics.

Errors here are `InstructionSyntaxError` without a location; the instruction layer turns
them into `DockerfileError(file, line)`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from frontends.dockerfile.shell_lexer import go_quote

__all__ = [
    "BFlags",
    "Flag",
    "InstructionSyntaxError",
    "format_duration",
    "parse_bool",
    "parse_duration",
    "parse_int",
    "parse_uint",
    "ram_in_bytes",
    "suggest",
]


class InstructionSyntaxError(Exception):
    """A problem in one instruction; the caller adds file and line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- suggestions ("did you mean ...?") ----------------------------------------------


def _levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _match_case(option: str, original: str) -> str:
    if original == original.lower():
        return option.lower()
    if original == original.upper():
        return option.upper()
    return option


def suggest(message: str, value: str, options: Iterable[str], case_sensitive: bool) -> str:
    """`message` plus BuildKit's ` (did you mean x?)` when an option is 1-2 edits away."""
    if len(value) > 64:
        return message  # nothing sensible is that far from a 10-letter keyword
    needle = value if case_sensitive else value.lower()
    best = ""
    best_dist = 3
    for option in sorted(options):
        candidate = option if case_sensitive else option.lower()
        if candidate == needle:
            return message
        dist = _levenshtein(needle, candidate)
        if dist < best_dist:
            best_dist = dist
            best = candidate if case_sensitive else _match_case(candidate, value)
    if not best:
        return message
    return f"{message} (did you mean {best}?)"


# -- BFlags -------------------------------------------------------------------------

_BOOL = 0
_STRING = 1
_STRINGS = 2


class Flag:
    """One declared flag and, after `BFlags.parse`, its value."""

    __slots__ = ("kind", "name", "used", "value", "values")

    def __init__(self, name: str, kind: int, default: str) -> None:
        self.name = name
        self.kind = kind
        self.value = default
        self.values: list[str] = []
        self.used = False

    @property
    def is_true(self) -> bool:
        return self.value == "true"


class BFlags:
    """The flags written before an instruction's arguments, checked like BuildKit does."""

    __slots__ = ("args", "flags", "used")

    def __init__(self, args: Sequence[str]) -> None:
        self.args = args
        self.flags: dict[str, Flag] = {}
        self.used: dict[str, Flag] = {}

    def add_bool(self, name: str, default: bool = False) -> Flag:
        return self._add(name, _BOOL, "true" if default else "false")

    def add_string(self, name: str, default: str = "") -> Flag:
        return self._add(name, _STRING, default)

    def add_strings(self, name: str) -> Flag:
        return self._add(name, _STRINGS, "")

    def _add(self, name: str, kind: int, default: str) -> Flag:
        flag = Flag(name, kind, default)
        self.flags[name] = flag
        return flag

    def parse(self) -> None:
        for arg in self.args:
            if arg == "--":
                return
            if not arg.startswith("--"):
                raise InstructionSyntaxError(f"arg should start with -- : {arg}")
            flag_name, has_value, value = arg.partition("=")
            name = flag_name[2:]
            flag = self.flags.get(name)
            if flag is None:
                raise InstructionSyntaxError(suggest(f"unknown flag: {flag_name}", name, self.flags, True))
            if name in self.used and flag.kind != _STRINGS:
                raise InstructionSyntaxError(f"duplicate flag specified: {flag_name}")
            self.used[name] = flag
            flag.used = True
            if flag.kind == _BOOL:
                if has_value and value == "":
                    raise InstructionSyntaxError(f"missing a value on flag: {flag_name}")
                lowered = value.lower()
                if lowered in ("", "true"):
                    flag.value = "true"
                elif lowered == "false":
                    flag.value = "false"
                else:
                    raise InstructionSyntaxError(f"expecting boolean value for flag {flag_name}, not: {value}")
            elif not has_value:
                raise InstructionSyntaxError(f"missing a value on flag: {flag_name}")
            elif flag.kind == _STRING:
                flag.value = value
            else:
                flag.values.append(value)


# -- Go strconv ---------------------------------------------------------------------

_TRUE = frozenset(("1", "t", "T", "TRUE", "true", "True"))
_FALSE = frozenset(("0", "f", "F", "FALSE", "false", "False"))


def parse_bool(s: str) -> bool:
    """Go's `strconv.ParseBool`; raises ValueError like Go returns an error."""
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"strconv.ParseBool: parsing {go_quote(s)}: invalid syntax")


_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def parse_uint(s: str, base: int, bits: int) -> int:
    """Go's `strconv.ParseUint` for an explicit base (no prefixes, no underscores)."""
    if not s:
        raise ValueError(f"strconv.ParseUint: parsing {go_quote(s)}: invalid syntax")
    valid = _DIGITS[:base]
    for ch in s:
        if ch.lower() not in valid or not ch.isascii():
            raise ValueError(f"strconv.ParseUint: parsing {go_quote(s)}: invalid syntax")
    value = int(s, base)
    if value >= 1 << bits:
        raise ValueError(f"strconv.ParseUint: parsing {go_quote(s)}: value out of range")
    return value


def parse_int(s: str, base: int, bits: int) -> int:
    """Go's `strconv.ParseInt` for an explicit base."""
    body = s[1:] if s[:1] in ("+", "-") else s
    valid = _DIGITS[:base]
    if not body or any(not ch.isascii() or ch.lower() not in valid for ch in body):
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(s)}: invalid syntax")
    value = int(body, base)
    if s.startswith("-"):
        value = -value
    if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(s)}: value out of range")
    return value


# -- Go time.ParseDuration ----------------------------------------------------------

_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_MAX_DURATION = (1 << 63) - 1


def _time_quote(s: str) -> str:
    out = ['"']
    for ch in s:
        if ord(ch) >= 0x80 or ch < " ":
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
        else:
            if ch in '"\\':
                out.append("\\")
            out.append(ch)
    out.append('"')
    return "".join(out)


def parse_duration(text: str) -> int:
    """Go's `time.ParseDuration`, in nanoseconds; raises ValueError with Go's message."""
    orig = text
    s = text
    invalid = f"time: invalid duration {_time_quote(orig)}"
    neg = False
    if s[:1] in ("-", "+"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(invalid)
    total = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise ValueError(invalid)
        i = 0
        while i < len(s) and "0" <= s[i] <= "9":
            i += 1
        pre = i > 0
        whole = int(s[:i]) if pre else 0
        if whole > (1 << 63):
            raise ValueError(invalid)
        s = s[i:]
        frac_digits = ""
        post = False
        if s[:1] == ".":
            s = s[1:]
            i = 0
            while i < len(s) and "0" <= s[i] <= "9":
                i += 1
            post = i > 0
            frac_digits = s[:i]
            s = s[i:]
        if not pre and not post:
            raise ValueError(invalid)
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise ValueError(f"time: missing unit in duration {_time_quote(orig)}")
        unit_name = s[:i]
        s = s[i:]
        unit = _UNITS.get(unit_name)
        if unit is None:
            raise ValueError(f"time: unknown unit {_time_quote(unit_name)} in duration {_time_quote(orig)}")
        if whole > (1 << 63) // unit:
            raise ValueError(invalid)
        value = whole * unit
        # Go keeps at most 19 fraction digits and rounds toward zero.
        frac_digits = frac_digits[:19].rstrip("0")
        if frac_digits:
            value += int(int(frac_digits) * (unit / 10 ** len(frac_digits)))
            if value > 1 << 63:
                raise ValueError(invalid)
        total += value
        if total > 1 << 63:
            raise ValueError(invalid)
    if neg:
        return -total
    if total > _MAX_DURATION:
        raise ValueError(invalid)
    return total


def format_duration(ns: int) -> str:
    """Go's `time.Duration.String` for the values messages show (e.g. `1ms`)."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_trim_fraction(ns, 1_000)}\u00b5s"
    if ns < 1_000_000_000:
        return f"{sign}{_trim_fraction(ns, 1_000_000)}ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    out = sign
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + f"{_trim_fraction(rest, 1_000_000_000)}s"


def _trim_fraction(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


# -- docker/go-units RAMInBytes -----------------------------------------------------

_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BINARY = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(text: str) -> int:
    """A size like `64m`, `1.5GiB` or `100 KB` in bytes (binary multiples), as go-units."""
    sep = max(text.rfind(c) for c in "0123456789. ")
    if sep < 0:
        raise ValueError(f"invalid size: '{text}'")
    if text[sep] == " ":
        num, sfx = text[:sep], text[sep + 1 :]
    else:
        num, sfx = text[: sep + 1], text[sep + 1 :]
    if not _FLOAT.fullmatch(num):
        raise ValueError(f"invalid size: '{text}'")
    size = float(num)
    if size < 0 or size != size:
        raise ValueError(f"invalid size: '{text}'")
    if sfx:
        lowered = sfx.lower()
        bad = ValueError(f"invalid suffix: '{lowered}'")
        if len(sfx) > 3:
            raise bad
        if lowered[0] == "b":
            if len(lowered) > 1:
                raise bad
        else:
            mul = _BINARY.get(lowered[0])
            if mul is None or (len(lowered) == 2 and lowered[1] != "b") or (len(lowered) == 3 and lowered[1:] != "ib"):
                raise bad
            size *= mul
    if size >= 2**63:
        raise ValueError(f"invalid size: '{text}'")
    return int(size)
