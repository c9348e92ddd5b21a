"""The `[gc]` section of Shipyard's TOML config file: automatic garbage collection limits.

    [gc]
    enabled = true            # run after every build that executed something (default true)
    keep-bytes = "10GB"       # build cache to keep; "N%" of the state filesystem (default "10%")
    keep-duration = "7d"      # remove cache records unused for longer (default: no limit)

The same file as the registry settings (`engine.registry.config`: `$SHIPYARD_CONFIG`,
else `/etc/shipyard/config.toml` for root, else `~/.config/shipyard/config.toml`).
Like BuildKit's GC policy, the limits apply to the build cache only: what images and
containers use is never collected, and neither is what a running build holds.
Unknown keys are errors, so a typo never silently does nothing.

Also here: the size and duration syntax `prune` flags share with the file
(`10GB`, `512MiB`, `1.5g`; `90m`, `24h`, `7d`, `1h30m`).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UsageError

DEFAULT_KEEP_PERCENT = 10.0
"""BuildKit's default: keep build cache up to 10% of the disk it lives on."""

_KEYS = frozenset(("enabled", "keep-bytes", "keep-duration"))
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class GcConfigError(UsageError):
    """A `[gc]` section or a prune flag that cannot be understood."""


@dataclass(frozen=True)
class GcConfig:
    enabled: bool = True
    keep_bytes: int | None = None
    """Absolute limit; None means `keep_percent` of the state filesystem."""
    keep_percent: float | None = DEFAULT_KEEP_PERCENT
    keep_duration: float | None = None
    source: str = ""

    def limit_bytes(self, state_root: Path | str) -> int | None:
        """The byte limit for a state directory (a percentage is of its filesystem's size)."""
        if self.keep_bytes is not None:
            return self.keep_bytes
        if self.keep_percent is None:
            return None
        try:
            st = os.statvfs(state_root)
        except OSError:
            return None
        return int(st.f_blocks * st.f_frsize * self.keep_percent / 100)


def parse_size(text: str | int, where: str = "size") -> int:
    """`1048576`, `512MB`, `1.5GiB`, `10g` → bytes (binary units, as docker's --keep-storage)."""
    if isinstance(text, bool):
        raise GcConfigError(f"{where}: expected a size like 10GB, not {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise GcConfigError(f"{where}: a size cannot be negative")
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise GcConfigError(f"{where}: invalid size {text!r} (want e.g. 512MB, 10GB or a number of bytes)")
    number, unit, _ = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.lower()])


def parse_duration(text: str | int | float, where: str = "duration") -> float:
    """`90s`, `24h`, `1h30m`, `7d`, or plain seconds → seconds (Go's syntax, plus d and w)."""
    if isinstance(text, bool):
        raise GcConfigError(f"{where}: expected a duration like 24h, not {text!r}")
    if isinstance(text, (int, float)):
        return float(text)
    value = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise GcConfigError(f"{where}: invalid duration {text!r} (want e.g. 90m, 24h or 7d)")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def parse_until(text: str, now: float | None = None) -> float:
    """A prune `until=` value — a duration ago, a Unix time, or an RFC 3339 date — as seconds of age."""
    now = time.time() if now is None else now
    value = text.strip()
    try:
        return parse_duration(value, "until")
    except GcConfigError:
        pass
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise GcConfigError(f"until={text}: want a duration (24h), a Unix time or an RFC 3339 date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, now - moment.timestamp())


def load_gc_config(path: Path | str | None = None) -> GcConfig:
    """The `[gc]` settings (defaults when the file or the section is absent)."""
    from engine.configfile import read_config

    data, source = read_config(path, GcConfigError)
    return GcConfig() if data is None else parse_gc_config(data, source)


def parse_gc_config(data: bytes | str, source: str = "config.toml") -> GcConfig:
    from engine.configfile import parse_toml

    doc = parse_toml(data, source, GcConfigError)
    table = doc.get("gc", {})
    if not isinstance(table, dict):
        raise GcConfigError(f"{source}: gc: expected a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise GcConfigError(f"{source}: gc.{unknown[0]}: unknown key (known: {', '.join(sorted(_KEYS))})")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise GcConfigError(f"{source}: gc.enabled: expected true or false")
    keep_bytes: int | None = None
    keep_percent: float | None = DEFAULT_KEEP_PERCENT
    raw = table.get("keep-bytes")
    if isinstance(raw, str) and raw.strip().endswith("%"):
        try:
            keep_percent = float(raw.strip()[:-1])
        except ValueError:
            raise GcConfigError(f"{source}: gc.keep-bytes: invalid percentage {raw!r}") from None
        if not 0 <= keep_percent <= 100:
            raise GcConfigError(f"{source}: gc.keep-bytes: a percentage is between 0% and 100%")
    elif raw is not None:
        keep_bytes = parse_size(raw, f"{source}: gc.keep-bytes")
        keep_percent = None
    duration = table.get("keep-duration")
    keep_duration = None if duration is None else parse_duration(duration, f"{source}: gc.keep-duration")
    return GcConfig(enabled, keep_bytes, keep_percent, keep_duration, source)
