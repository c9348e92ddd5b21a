"""`shipyard save` and `shipyard load`, docker's commands and messages."""

from __future__ import annotations

import argparse
import os
import sys

from engine.commands.common import isolate_mounts, state_root
from engine.errors import UsageError


def run_save(args: argparse.Namespace) -> int:
    from engine.imagemgmt.catalog import ImageCatalog
    from engine.imagemgmt.save import select_images, write_archive, write_archive_to
    from engine.solver.context import Engine

    if not args.output and sys.stdout.isatty():
        raise UsageError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    engine = Engine.open(state_root(args))
    try:
        images = select_images(ImageCatalog(engine), list(args.images))
        if args.output:
            write_archive(engine, images, os.path.abspath(args.output), args.format)
        else:
            sys.stdout.flush()
            write_archive_to(engine, images, sys.stdout.buffer, args.format)
        return 0
    finally:
        engine.close()


def run_load(args: argparse.Namespace) -> int:
    from engine.imagemgmt.load import load_archive
    from engine.reference import parse_reference
    from engine.solver.context import Engine

    path = args.input if args.input and args.input != "-" else None
    if path is None and sys.stdin.isatty():
        raise UsageError("requested load from stdin, but stdin is a terminal: use -i FILE or redirect")
    if path is not None and not os.path.exists(path):
        raise UsageError(f"{path}: no such file or directory")
    isolate_mounts()
    engine = Engine.open(state_root(args))
    try:
        loaded = load_archive(engine, path, path or "stdin")
    finally:
        engine.close()
    for image in loaded:
        for name, old in image.renamed:
            familiar = parse_reference(name).familiar()
            print(f"The image {familiar} already exists, renaming the old one with ID {old} to empty string")
        for name in image.names:
            print(f"Loaded image: {parse_reference(name).familiar()}")
        if not image.names:
            print(f"Loaded image ID: {image.image_id}")
    return 0
