"""`shipyard dockerfile parse FILE [--json]`: the parsed instructions, for editors and scripts."""

from __future__ import annotations

import argparse


def run_dockerfile(args: argparse.Namespace) -> int:
    from frontends.dockerfile.inspect import print_parsed

    return print_parsed(args.file, as_json=args.json)
