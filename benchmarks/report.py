"""Turning case results into verdicts, a JSON record and a table.

A verdict is PASS/MISS only when it can be decided honestly: an invalid Shipyard figure
(a precondition failed) is INVALID, a ratio target without a valid BuildKit figure in the
same run is "n/a". The table is rich's when rich is importable, plain text otherwise.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.cases import CaseResult, ToolResult


@dataclass(frozen=True)
class Verdict:
    figure: float | None
    buildkit: float | None
    buildah: float | None
    ratio: float | None  # shipyard / buildkit
    result: str  # PASS, MISS, INVALID, ERROR, n/a
    why: str = ""


def verdict(res: CaseResult) -> Verdict:
    sy, bk, bh = (res.tool(n) for n in ("shipyard", "buildkit", "buildah"))
    figure = sy.median if sy else None
    bk_s = bk.median if bk else None
    bh_s = bh.median if bh else None
    ratio = figure / bk_s if figure is not None and bk_s else None
    target = res.case.target
    if sy is None or sy.skipped:
        return Verdict(figure, bk_s, bh_s, ratio, "n/a", "Shipyard was not measured")
    if sy.error:
        return Verdict(figure, bk_s, bh_s, ratio, "ERROR", sy.error.splitlines()[0])
    if figure is None:
        return Verdict(figure, bk_s, bh_s, ratio, "INVALID", "; ".join(sy.problems))
    if target.kind == "seconds":
        return Verdict(figure, bk_s, bh_s, ratio, "PASS" if figure <= target.value else "MISS")
    if ratio is None:
        return Verdict(figure, bk_s, bh_s, ratio, "n/a", "no valid BuildKit figure in this run")
    return Verdict(figure, bk_s, bh_s, ratio, "PASS" if ratio <= target.value else "MISS")


def _tool_json(t: ToolResult) -> dict[str, Any]:
    return {
        "label": t.label,
        "median_s": t.median,
        "runs_s": [round(r.seconds, 4) for r in t.runs],
        "problems": list(t.problems),
        "error": t.error,
        "skipped": t.skipped,
    }


def to_json(results: list[CaseResult], meta: dict[str, Any]) -> dict[str, Any]:
    cases = []
    for res in results:
        v = verdict(res)
        cases.append(
            {
                "id": res.case.id,
                "title": res.case.title,
                "size": res.size,
                "detail": res.detail,
                "mode": res.case.mode,
                "precondition": res.case.expect.value,
                "target": {"kind": res.case.target.kind, "value": res.case.target.value, "text": res.case.target.describe()},
                "reference_buildkit_s": res.case.reference_buildkit_s,
                "figure_s": v.figure,
                "buildkit_s": v.buildkit,
                "buildah_s": v.buildah,
                "ratio": v.ratio,
                "result": v.result,
                "why": v.why,
                "preconditions_held": all(not t.problems for t in res.tools if not t.skipped),
                "tools": {t.tool: _tool_json(t) for t in res.tools},
            }
        )
    host = {"machine": platform.machine(), "kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version()}
    return {**meta, "host": host, "cases": cases}


def write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _secs(value: float | None, tool: ToolResult | None) -> str:
    if tool is None or tool.skipped:
        return "—"
    if tool.error:
        return "error"
    if value is None:
        return "INVALID"
    return f"{value:.2f} s"


HEADERS = ("Case", "What", "Size", "Shipyard", "BuildKit", "buildah", "Ratio", "Target", "Result")


def rows(results: list[CaseResult]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for res in results:
        v = verdict(res)
        out.append(
            (
                res.case.id,
                res.case.title,
                res.size,
                _secs(v.figure, res.tool("shipyard")),
                _secs(v.buildkit, res.tool("buildkit")),
                _secs(v.buildah, res.tool("buildah")),
                f"{v.ratio:.2f}×" if v.ratio is not None else "—",
                res.case.target.describe(),
                v.result,
            )
        )
    return out


def notes(results: list[CaseResult]) -> list[str]:
    """Everything that makes a figure missing or suspect, one line each."""
    lines = []
    for res in results:
        for t in res.tools:
            if t.skipped:
                continue
            if t.error:
                lines.append(f"{res.case.id} {t.label}: build failed: {t.error.splitlines()[0]}")
            for problem in t.problems:
                lines.append(f"{res.case.id} {t.label}: PRECONDITION FAILED ({res.case.expect.value}): {problem}")
    return lines


def plain_table(results: list[CaseResult]) -> str:
    table = [HEADERS, *rows(results)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADERS))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([fmt(table[0]), fmt(tuple("-" * w for w in widths)), *map(fmt, table[1:])])


def render(results: list[CaseResult], caption: str, force_plain: bool = False) -> None:
    """Print the table (rich when available), then the caption and notes."""
    extra = notes(results)
    try:
        if force_plain:
            raise ImportError
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:
        print(plain_table(results))
        print(caption)
        for line in extra:
            print(f"!! {line}")
        return
    styles = {"PASS": "bold green", "MISS": "bold red", "INVALID": "bold magenta", "ERROR": "bold magenta"}
    table = Table(caption=escape(caption), caption_justify="left")
    for h in HEADERS:
        table.add_column(h, justify="right" if h in ("Shipyard", "BuildKit", "buildah", "Ratio") else "left")
    for row in rows(results):
        table.add_row(*map(escape, row[:-1]), f"[{styles.get(row[-1], 'dim')}]{row[-1]}[/]")
    console = Console()
    if not console.is_terminal:  # a pipe or a file: don't squeeze the table into 80 columns
        console = Console(width=150)
    console.print(table)
    for line in extra:
        console.print(f"[bold red]!![/] {escape(line)}", highlight=False)
