"""`shipyard images`: what is in the local image store, as `docker images` shows it.

One row per name (a nameless image shows as `<none>`), newest image first; `-q` for
IDs only, `--digests` for the manifest digest, `REPOSITORY[:TAG]` and
`--filter reference=…|dangling=…` to narrow the list (docker's glob rules: `*` stops
at `/`), Go templates for `--format`. `--format json` keeps Shipyard's own JSON array
(lower-case keys) that scripts already read; `--format '{{json .}}'` gives docker's
per-line objects.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from engine.commands.common import state_root
from engine.errors import UsageError

_HEADERS = {
    "Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "Digest": "DIGEST", "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT", "Size": "SIZE",
}


@dataclass(frozen=True)
class _Row:
    repository: str
    tag: str
    image_id: str
    digest: str
    created: float | None
    size: int
    nameless: bool
    name: str  # familiar repo:tag ("" when nameless)


def go_glob(pattern: str) -> re.Pattern[str]:
    """Go's path.Match as a regex: `*` and `?` never match `/`, `[...]` classes, `\\` escapes."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\").replace("[", "\\[") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("^" + "".join(out) + "$")


def _matches(row: _Row, pattern: re.Pattern[str]) -> bool:
    """docker's FamiliarMatch: the pattern against `repo:tag`, then against `repo`."""
    return not row.nameless and bool(pattern.match(row.name) or pattern.match(row.repository))


def _filters(args: argparse.Namespace) -> tuple[list[re.Pattern[str]], bool | None]:
    patterns = [go_glob(args.repository)] if args.repository else []
    dangling: bool | None = None
    for item in args.filter:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"bad filter {item!r}: want KEY=VALUE")
        if key == "reference":
            patterns.append(go_glob(value))
        elif key == "dangling":
            if value.lower() not in ("true", "false", "1", "0"):
                raise UsageError(f"invalid filter 'dangling={value}' (want true or false)")
            dangling = value.lower() in ("true", "1")
        else:
            raise UsageError(f"unsupported filter {key!r} (supported: reference, dangling)")
    return patterns, dangling


def _collect(engine) -> list[_Row]:  # type: ignore[no-untyped-def]
    from engine.imagemgmt.catalog import ImageCatalog
    from engine.imagemgmt.describe import load_details
    from engine.reference import parse_reference

    rows = []
    for entry in ImageCatalog(engine).entries():
        details = load_details(engine, entry)
        created = details.created.unix_nano / 1e9 if details.created else None
        for name in entry.names or ("",):
            if name:
                ref = parse_reference(name)
                repository = ref._replace(tag="").familiar()
                row = _Row(repository, ref.tag, entry.id, entry.manifest, created, details.size, False, ref.familiar())
            else:
                row = _Row("<none>", "<none>", entry.id, entry.manifest, created, details.size, True, "")
            rows.append(row)
    rows.sort(key=lambda r: (-(r.created or 0), r.repository, r.tag))
    return rows


def _docker_fields(row: _Row, no_trunc: bool) -> dict[str, str]:
    from engine.commands.humanize import human_size, short_id, since

    created_at = (
        datetime.fromtimestamp(row.created, UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC") if row.created else ""
    )
    size = human_size(row.size)
    return {
        "Containers": "N/A", "CreatedAt": created_at, "CreatedSince": since(row.created), "Digest": row.digest,
        "ID": row.image_id if no_trunc else short_id(row.image_id), "Repository": row.repository,
        "SharedSize": "N/A", "Size": size, "Tag": row.tag, "UniqueSize": "N/A", "VirtualSize": size,
    }


def run_images(args: argparse.Namespace) -> int:
    from engine.solver.context import Engine

    patterns, dangling = _filters(args)
    engine = Engine.open(state_root(args))
    try:
        rows = _collect(engine)
    finally:
        engine.close()
    if patterns:
        rows = [row for row in rows if all(_matches(row, p) for p in patterns)]
    if dangling is not None:
        rows = [row for row in rows if row.nameless == dangling]
    if args.format == "json":
        listing = [
            {"repository": r.repository, "tag": r.tag, "id": r.image_id, "digest": r.digest, "created": r.created, "size": r.size}
            for r in rows
        ]
        print(json.dumps(listing, indent=2))
        return 0
    fields = [_docker_fields(row, args.no_trunc) for row in rows]
    if args.quiet:
        for row, f in zip(rows, fields):
            print(f["ID"])
        return 0
    if args.format != "table":
        _print_template(args.format, fields)
        return 0
    from engine.commands.humanize import table

    header = ["REPOSITORY", "TAG"] + (["DIGEST"] if args.digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    lines = [header]
    for f in fields:
        lines.append([f["Repository"], f["Tag"]] + ([f["Digest"]] if args.digests else []) + [f["ID"], f["CreatedSince"], f["Size"]])
    print(table(lines), end="")
    return 0


def _print_template(text: str, values: list[dict[str, str]]) -> None:
    from engine.commands.gotemplate import parse
    from engine.commands.humanize import table

    template = parse(text)
    if not template.is_table:
        for value in values:
            print(template.render(value))
        return
    rows = [template.header(_HEADERS).split("\t")] + [template.render(v).split("\t") for v in values]
    print(table(rows), end="")
