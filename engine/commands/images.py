"""`shipyard images`: what is in the local image store, docker-style."""

from __future__ import annotations

import argparse
import json
import time

from engine.commands.common import state_root


def _age(seconds: float) -> str:
    for unit, size in (("years", 31536000), ("months", 2592000), ("weeks", 604800), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "Less than a minute ago" if seconds >= 1 else "Less than a second ago"


def _size(num: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if num < 1000:
            return f"{num:.3g}{unit}"
        num /= 1000
    return f"{num:.3g}TB"


def run_images(args: argparse.Namespace) -> int:
    from engine.images import ImageStore
    from engine.reference import parse_reference
    from engine.solver.context import Engine

    engine = Engine.open(state_root(args))
    try:
        images = ImageStore(engine).list()
        now = time.time()
        rows = []
        for image in images:
            ref = parse_reference(image.name)
            repo = ref.familiar().rsplit(":", 1)[0] if ref.tag else ref.familiar()
            size = sum(layer.tar_size or 0 for layer in (r.layer for r in engine.index.chain(image.snapshot)))
            created = image.image.created.seconds if image.image.created else image.created
            rows.append(
                {
                    "repository": repo,
                    "tag": ref.tag or "<none>",
                    "id": image.config_digest,
                    "digest": image.manifest_digest,
                    "created": created,
                    "size": size,
                }
            )
        if args.format == "json":
            print(json.dumps(rows, indent=2))
        elif args.quiet:
            for row in rows:
                print(str(row["id"]).split(":", 1)[1][:12])
        else:
            print(f"{'REPOSITORY':<40} {'TAG':<16} {'IMAGE ID':<14} {'CREATED':<22} SIZE")
            for row in rows:
                short = str(row["id"]).split(":", 1)[1][:12]
                print(
                    f"{row['repository']:<40} {row['tag']:<16} {short:<14} "
                    f"{_age(now - float(row['created'])):<22} {_size(float(row['size']))}"
                )
        return 0
    finally:
        engine.close()
