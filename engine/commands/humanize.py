"""Docker's human-readable output: durations, sizes, and its tab-aligned tables.

Scripts and eyes trained on `docker images` / `docker history` expect exactly these
strings ("About an hour ago", "1.99MB", three spaces between columns), so the rules
are docker's own (go-units' HumanDuration and HumanSizeWithPrecision, the CLI's
`tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`), not approximations of them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

MIN_WIDTH = 10
PADDING = 3


def human_duration(seconds: float) -> str:
    """go-units' HumanDuration: "Less than a second", "About a minute", "3 weeks", …"""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def since(unix_seconds: float | None, now: float | None = None) -> str:
    """"2 hours ago", or "N/A" for an unknown time."""
    if unix_seconds is None:
        return "N/A"
    return human_duration((time.time() if now is None else now) - unix_seconds) + " ago"


def _go_g(value: float, precision: int) -> str:
    """Go's `%.*g`: like C's, which Python's `g` format follows."""
    return f"{value:.{precision}g}"


def human_size(size: float, precision: int = 3) -> str:
    """go-units' HumanSizeWithPrecision: decimal units, `1.99MB`, `0B`."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return _go_g(size, precision) + units[i]


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as Go's tabwriter (minwidth 10, padding 3) lays them out; the last column unpadded."""
    if not rows:
        return ""
    columns = max(len(row) for row in rows)
    widths = [0] * columns
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell) + PADDING, MIN_WIDTH)
    lines = []
    for row in rows:
        parts = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        parts.append(row[-1] if row else "")
        lines.append("".join(parts))
    return "\n".join(lines) + "\n"


def ellipsis(text: str, width: int) -> str:
    """docker's Ellipsis: cut to `width` characters, the last one an ellipsis."""
    if len(text) <= width:
        return text
    return text[: width - 1] + "…"


def short_id(digest: str) -> str:
    """The 12-hex-digit image ID docker prints (`sha256:` dropped)."""
    return digest.split(":", 1)[-1][:12]
