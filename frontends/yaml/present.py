"""What `bake --print` and `bake --list` show, computed from the resolved `BakeFile`.

`--print` is bake's shape (`{"group": {...}, "target": {...}}`) over `to_canonical()`,
the same values a target key hashes, so what the user sees is what decides a rebuild.
"""

from __future__ import annotations

import json

from engine.errors import UsageError
from frontends.yaml.errors import BuildFileError
from frontends.yaml.model import BakeFile

__all__ = ["LIST_KINDS", "list_entries", "print_resolved", "requested_names"]

LIST_KINDS = ("targets", "groups", "variables")


def requested_names(bake: BakeFile, targets: list[str]) -> list[str]:
    """The names asked for, checked: none given means the `default` group, else every target."""
    if not targets:
        return ["default"] if "default" in bake.groups else list(bake.targets)
    for name in targets:
        if name not in bake.targets and name not in bake.groups:
            from frontends.yaml.schema import did_you_mean

            hint = did_you_mean(name, [*bake.targets, *bake.groups])
            raise BuildFileError(f"unknown target or group {name!r}{hint}")
    return list(targets)


def print_resolved(bake: BakeFile, targets: list[str]) -> str:
    """Canonical JSON of the named targets and groups (like `docker buildx bake --print`)."""
    names = requested_names(bake, targets)
    groups: dict[str, dict[str, list[str]]] = {}
    pending = [n for n in names if n in bake.groups and n not in bake.targets]
    while pending:
        name = pending.pop(0)
        if name in groups:
            continue
        members = list(bake.groups[name])
        groups[name] = {"targets": members}
        pending.extend(m for m in members if m in bake.groups and m not in bake.targets)
    out = {
        "group": groups,
        "target": {name: bake.targets[name].to_canonical() for name in bake.expand(names)},
    }
    return json.dumps(out, indent=2, ensure_ascii=False)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def list_entries(bake: BakeFile, what: str) -> str:
    """`--list targets|groups|variables`: a table, one entry per line, sorted by name."""
    if what == "targets":
        rows = [(name, bake.targets[name].description) for name in sorted(bake.targets)]
        return _table(("TARGET", "DESCRIPTION"), rows)
    if what == "groups":
        rows3 = [
            (name, ", ".join(bake.groups[name]), bake.group_descriptions.get(name, "")) for name in sorted(bake.groups)
        ]
        return _table(("GROUP", "TARGETS", "DESCRIPTION"), rows3)
    if what == "variables":
        rows4 = []
        for name in sorted(bake.variables):
            var = bake.variables[name]
            value = ",".join(var.value) if isinstance(var.value, tuple) else str(var.value)
            rows4.append((name, var.type, value, var.description))
        return _table(("VARIABLE", "TYPE", "VALUE", "DESCRIPTION"), rows4)
    raise UsageError(f"--list {what!r}: want one of {', '.join(LIST_KINDS)}")
