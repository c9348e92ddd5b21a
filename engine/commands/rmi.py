"""`shipyard tag` and `shipyard rmi`, with docker's output and exit codes.

`rmi` goes on past an argument that fails (printing its error) and exits 1 at the
end, as docker does, so `rmi a b c` removes what it can.
"""

from __future__ import annotations

import argparse
import sys

from engine.commands.common import state_root
from engine.errors import ShipyardError


def run_tag(args: argparse.Namespace) -> int:
    from engine.imagemgmt.catalog import ImageCatalog, is_nameless
    from engine.reference import parse_reference
    from engine.solver.context import Engine

    target = str(parse_reference(args.target))
    engine = Engine.open(state_root(args))
    try:
        catalog = ImageCatalog(engine)
        match = catalog.lookup(args.source)
        old = engine.index.get_image(target)
        catalog.tag(match.row, args.target)
        if any(is_nameless(row) for row in match.entry.rows):
            catalog.untag(match.entry.id)  # it has a name now
        if old is not None and old.config != match.row.config and catalog.entry(old.config) is None:
            catalog.keep_nameless(old)  # like docker, the image that lost the name stays, as <none>
        return 0
    finally:
        engine.close()


def run_rmi(args: argparse.Namespace) -> int:
    from engine.imagemgmt.catalog import ImageCatalog
    from engine.imagemgmt.remove import remove_image
    from engine.solver.context import Engine

    engine = Engine.open(state_root(args))
    failed = False
    try:
        catalog = ImageCatalog(engine)
        for ref in args.images:
            try:
                in_use = engine.index.images_in_use()
                for line in remove_image(catalog, ref, force=args.force, in_use=in_use):
                    print(line)
            except ShipyardError as exc:
                failed = True
                print(f"ERROR: {exc.user_message()}", file=sys.stderr)
    finally:
        engine.close()
    return 1 if failed else 0
