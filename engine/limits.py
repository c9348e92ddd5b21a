"""Size limits on untrusted archives, from the `[limits]` table of Shipyard's config file.

Layers, `ADD` archives, `shipyard load` archives and `shipyard import` tarballs are
attacker input: a few MB of gzip, zstd or xz can claim terabytes (a decompression
bomb), and a tar can hold millions of empty entries. Every reader of such input
counts *uncompressed* bytes and entries while it streams and stops at these limits
with an error that names the limit and where to raise it:

    [limits]
    layer-size = "64GiB"        # uncompressed bytes of one layer or ADD archive
    layer-entries = 2000000     # entries (files, dirs, links) in one layer or ADD archive
    archive-size = "256GiB"     # uncompressed bytes of one `shipyard load` archive

Sizes are integers (bytes) or strings with a unit (`512MiB`, `2GB`, `10G`: binary
multiples either way, as docker's `--memory` reads them). The file is the same one the
registry settings come from (`engine.registry.config`, `$SHIPYARD_CONFIG`); only this
table is read here, and a key it does not know is an error, so a typo never silently
leaves a limit at its default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ShipyardError

__all__ = ["ArchiveLimitError", "Limits", "LimitsConfigError", "load_limits", "parse_limits", "parse_size"]

DEFAULT_LAYER_BYTES = 64 << 30
DEFAULT_LAYER_ENTRIES = 2_000_000
DEFAULT_ARCHIVE_BYTES = 256 << 30

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_KEYS = {"layer-size": "layer_bytes", "layer-entries": "layer_entries", "archive-size": "archive_bytes"}


class LimitsConfigError(ShipyardError):
    """A `[limits]` table that cannot be used; names the file and the key."""


class ArchiveLimitError(ShipyardError):
    """An archive or layer that went past a configured limit; says which and where to raise it."""


@dataclass(frozen=True)
class Limits:
    """What one untrusted archive may expand to."""

    layer_bytes: int = DEFAULT_LAYER_BYTES
    layer_entries: int = DEFAULT_LAYER_ENTRIES
    archive_bytes: int = DEFAULT_ARCHIVE_BYTES
    source: str = ""
    """The config file these came from ("" for the defaults)."""

    def hint(self) -> str:
        """Where a user raises a limit they hit (appended to limit errors)."""
        where = self.source or "the config file ($SHIPYARD_CONFIG)"
        return f"raise it in the [limits] table of {where}"

    def exceeded(self, what: str, exc: ShipyardError) -> ArchiveLimitError:
        """The error for `what` (e.g. `ADD app.tar.gz`) having hit a limit (`exc` says which)."""
        return ArchiveLimitError(f"{what}: {exc.user_message()}; {self.hint()}")


def parse_size(value: object, where: str) -> int:
    """`123`, `"64MiB"`, `"2G"`, `"10 kb"` → bytes (binary multiples); positive only."""
    if isinstance(value, bool):
        raise LimitsConfigError(f"{where}: expected a size like 64GiB, not {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        match = _SIZE.match(value)
        if match is None:
            raise LimitsConfigError(f"{where}: invalid size {value!r} (want e.g. 512MiB, 64GiB or bytes)")
        number = int(match.group(1)) * _UNITS[match.group(2).lower()]
    else:
        raise LimitsConfigError(f"{where}: expected a size like 64GiB, not {value!r}")
    if number <= 0:
        raise LimitsConfigError(f"{where}: must be positive")
    return number


def parse_limits(doc: dict[str, Any], source: str = "config.toml") -> Limits:
    """The `[limits]` table of a parsed TOML document (absent → the defaults)."""
    table = doc.get("limits", {})
    if not isinstance(table, dict):
        raise LimitsConfigError(f"{source}: limits: expected a table")
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise LimitsConfigError(f"{source}: limits.{unknown[0]}: unknown key (known: {', '.join(sorted(_KEYS))})")
    values: dict[str, int] = {}
    for key, field in _KEYS.items():
        if key in table:
            where = f"{source}: limits.{key}"
            if key == "layer-entries":
                raw = table[key]
                if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
                    raise LimitsConfigError(f"{where}: expected a positive integer")
                values[field] = raw
            else:
                values[field] = parse_size(table[key], where)
    return Limits(**values, source=source if table else "")


def load_limits(path: Path | str | None = None) -> Limits:
    """The limits from `path` (default: the config file the registry settings use).

    Read on each use, not cached: only commands that unpack archives call this, and a
    process-wide copy would be the kind of singleton the engine avoids.
    """
    from engine.configfile import parse_toml, read_config

    data, source = read_config(path, LimitsConfigError)
    if data is None or b"limits" not in data:
        return Limits()  # no table to read: skip the TOML parse
    return parse_limits(parse_toml(data, source, LimitsConfigError), source)
