"""`shipyard inspect` and `shipyard history`, in `docker image inspect`/`docker history` form."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.commands.common import state_root
from engine.errors import ShipyardError

_GO_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}
_HISTORY_HEADERS = {
    "ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY", "Size": "SIZE",
    "Comment": "COMMENT",
}


def _indent_json(value: Any) -> str:
    """Go's json.MarshalIndent with four spaces, which docker uses for inspect."""
    return json.dumps(value, indent=4, ensure_ascii=False).translate(_GO_ESCAPES)


def run_inspect(args: argparse.Namespace) -> int:
    from engine.imagemgmt.catalog import ImageCatalog
    from engine.imagemgmt.describe import inspect_image, load_details
    from engine.solver.context import Engine

    template = None
    if args.format:
        from engine.commands.gotemplate import parse

        template = parse(args.format)
    engine = Engine.open(state_root(args))
    found: list[dict[str, Any]] = []
    failed = False
    try:
        catalog = ImageCatalog(engine)
        for ref in args.images:
            try:
                found.append(inspect_image(engine, load_details(engine, catalog.lookup(ref).entry)))
            except ShipyardError as exc:
                failed = True
                print(f"ERROR: {exc.user_message()}", file=sys.stderr)
    finally:
        engine.close()
    if template is None:
        print(_indent_json(found))
    else:
        for item in found:
            print(template.render(item))
    return 1 if failed else 0


def _history_fields(row, *, trunc: bool, human: bool) -> dict[str, str]:  # type: ignore[no-untyped-def]
    from engine.commands.humanize import ellipsis, human_size, short_id, since
    from engine.imagemgmt.describe import MISSING

    created_at = ""
    if row.created is not None:
        created_at = row.created.format().split(".")[0].rstrip("Z") + "Z"
    created_by = row.created_by.replace("\t", " ")
    image_id = row.id if row.id == MISSING or not trunc else short_id(row.id)
    return {
        "Comment": row.comment,
        "CreatedAt": created_at,
        "CreatedBy": ellipsis(created_by, 45) if trunc else created_by,
        "CreatedSince": since(row.created.unix_nano / 1e9 if row.created else None) if human else created_at,
        "ID": image_id,
        "Size": human_size(row.size) if human else str(row.size),
    }


def run_history(args: argparse.Namespace) -> int:
    from engine.commands.humanize import table
    from engine.imagemgmt.catalog import ImageCatalog
    from engine.imagemgmt.describe import image_history, load_details
    from engine.solver.context import Engine

    engine = Engine.open(state_root(args))
    try:
        rows = image_history(load_details(engine, ImageCatalog(engine).lookup(args.image).entry))
    finally:
        engine.close()
    human = args.human == "true"
    fields = [_history_fields(row, trunc=not args.no_trunc, human=human) for row in rows]
    if args.quiet:
        for f in fields:
            print(f["ID"])
        return 0
    if args.format == "json":
        for f in fields:
            print(json.dumps(f, ensure_ascii=False, separators=(",", ":"), sort_keys=True).translate(_GO_ESCAPES))
        return 0
    if args.format != "table":
        from engine.commands.gotemplate import parse

        template = parse(args.format)
        if template.is_table:
            lines = [template.header(_HISTORY_HEADERS).split("\t")] + [template.render(f).split("\t") for f in fields]
            print(table(lines), end="")
        else:
            for f in fields:
                print(template.render(f))
        return 0
    created = "CREATED" if human else "CREATED AT"
    lines = [["IMAGE", created, "CREATED BY", "SIZE", "COMMENT"]]
    for f in fields:
        lines.append([f["ID"], f["CreatedSince"], f["CreatedBy"], f["Size"], f["Comment"]])
    print(table(lines), end="")
    return 0
