"""`shipyard prune`, `shipyard system df|check|prune`: keeping the state directory healthy.

The arguments and output follow docker's (`docker builder prune`, `docker system df`):
the same flags, the same table layout and human sizes, so habits and scripts carry
over. The work is `cache.gc` (collection), `cache.usage` (df) and `cache.fsck` (checks).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from engine.errors import UsageError

COMMANDS = ("prune", "system")


def _add_prune_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-a", "--all", action="store_true", help="remove all unused build cache, not just what no image shares")
    parser.add_argument(
        "--filter", action="append", default=[], metavar="until=DURATION",
        help="only cache unused for longer than DURATION (24h, 90m, 7d), or since a date",
    )
    parser.add_argument("--keep-storage", metavar="SIZE", help="keep up to SIZE of build cache (least recently used goes first)")
    parser.add_argument("-f", "--force", action="store_true", help="accepted for docker compatibility (never prompts)")
    parser.add_argument("--verbose", action="store_true", help="list every removed record")


def add_system_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    prune = sub.add_parser("prune", help="remove build cache (like `docker builder prune`)")
    _add_prune_flags(prune)

    system = sub.add_parser("system", help="disk usage, consistency checks, cleanup")
    ssub = system.add_subparsers(dest="system_command", metavar="COMMAND")
    ssub.required = True
    df = ssub.add_parser("df", help="show disk usage by kind: images, containers, build cache, cache mounts")
    df.add_argument("-v", "--verbose", action="store_true", help="list every build cache record")
    df.add_argument("--format", default="table", choices=("table", "json"), help="table (default) or JSON lines")
    check = ssub.add_parser("check", help="verify every blob, layer, index row and image reference")
    check.add_argument("--repair", action="store_true", help="remove what is broken and what crashes left behind")
    check.add_argument("--quick", action="store_true", help="skip rehashing blob and layer contents")
    sprune = ssub.add_parser("prune", help="same as `shipyard prune`")
    _add_prune_flags(sprune)


def run_system_command(args: argparse.Namespace) -> int:
    if args.command == "prune" or getattr(args, "system_command", "") == "prune":
        return run_prune(args)
    if args.system_command == "df":
        return run_df(args)
    return run_check(args)


def _open(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from cache.index import CacheIndex
    from engine.commands.common import state_root
    from engine.state import StateDir

    state = StateDir(state_root(args)).ensure()
    return state, CacheIndex(state.index_db)


# --------------------------------------------------------------------------- prune


def prune_policy(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from cache.gc import PrunePolicy
    from cache.gcconfig import parse_size, parse_until

    until = None
    for item in args.filter:
        name, sep, value = item.partition("=")
        if not sep or not value:
            raise UsageError(f"--filter {item!r}: want until=DURATION")
        if name.strip() != "until":
            raise UsageError(f"--filter {name}: unknown filter (supported: until)")
        until = parse_until(value)
    keep = parse_size(args.keep_storage, "--keep-storage") if args.keep_storage else None
    return PrunePolicy(all=args.all, until=until, keep_bytes=keep)


def run_prune(args: argparse.Namespace) -> int:
    from cache.gc import prune
    from engine.commands.humanize import human_size, since, table

    policy = prune_policy(args)
    state, index = _open(args)
    try:
        report = prune(state, index, policy)
    finally:
        index.close()
        index.leases.release()
    out = sys.stdout
    if report.removed:
        if args.verbose:
            rows = [["ID", "TYPE", "RECLAIMABLE", "LAST ACCESSED", "DESCRIPTION"]]
            rows += [[r.id, r.kind, human_size(r.size), since(r.last_used), r.description] for r in report.removed]
            out.write(table(rows))
        else:
            out.write("Deleted build cache objects:\n")
            out.write("".join(f"{r.id}\n" for r in report.removed))
        out.write("\n")
    out.write(f"Total reclaimed space: {human_size(report.reclaimed)}\n")
    return 0


# --------------------------------------------------------------------------- df


def run_df(args: argparse.Namespace) -> int:
    from cache.usage import disk_usage
    from engine.commands.humanize import human_size, since, table

    state, index = _open(args)
    try:
        usage = disk_usage(state, index)
    finally:
        index.close()
        index.leases.release()
    out = sys.stdout

    def reclaimable(size: int, amount: int) -> str:
        return f"{human_size(amount)} ({int(100 * amount / size)}%)" if size else human_size(amount)

    if args.format == "json":
        for s in usage.summaries:
            out.write(
                json.dumps(
                    {
                        "Type": s.kind,
                        "TotalCount": s.total,
                        "Active": s.active,
                        "Size": human_size(s.size),
                        "Reclaimable": reclaimable(s.size, s.reclaimable),
                        "SizeBytes": s.size,
                        "ReclaimableBytes": s.reclaimable,
                    },
                    sort_keys=True,
                )
                + "\n"
            )
        return 0
    rows = [["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]]
    rows += [[s.kind, str(s.total), str(s.active), human_size(s.size), reclaimable(s.size, s.reclaimable)] for s in usage.summaries]
    out.write(table(rows))
    if args.verbose:
        cache = next(s for s in usage.summaries if s.kind == "Build Cache")
        out.write(f"\nBuild cache usage: {human_size(cache.size)}\n\n")
        now = time.time()
        records = [["CACHE ID", "CACHE TYPE", "SIZE", "CREATED", "LAST USED", "IN USE", "SHARED", "DESCRIPTION"]]
        for r in sorted(usage.records, key=lambda r: -r.last_used):
            records.append(
                [
                    r.id,
                    r.kind,
                    human_size(r.size),
                    since(r.created, now),
                    since(r.last_used, now),
                    str(r.in_use).lower(),
                    str(r.shared).lower(),
                    r.description,
                ]
            )
        out.write(table(records))
    return 0


# --------------------------------------------------------------------------- check


def run_check(args: argparse.Namespace) -> int:
    from cache.fsck import check, repair

    state, index = _open(args)
    try:
        if args.repair:
            found = repair(state, index, verify_content=not args.quick)
            if found.index_corrupt:
                for finding in found.findings:
                    print(finding.line())
                return 0
            after = check(state, index, verify_content=not args.quick)
        else:
            found = check(state, index, verify_content=not args.quick)
            after = found
    finally:
        index.close()
        index.leases.release()
    for finding in found.findings:
        print(finding.line())
    counts = ", ".join(f"{n} {what}" for what, n in found.counts.items())
    if args.repair:
        print(f"checked {counts}: repaired {len(found.errors)} errors and removed {len(found.dangling)} kinds of leftovers")
        for finding in after.findings:
            print("after repair: " + finding.line())
        return 1 if after.errors else 0
    print(f"checked {counts}: {len(found.errors)} errors, {len(found.dangling)} kinds of leftovers")
    if found.findings:
        print("run `shipyard system check --repair` to remove them", file=sys.stderr)
    return 1 if found.errors else 0
