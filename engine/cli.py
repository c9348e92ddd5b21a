"""The `shipyard` command line: parse, dispatch, and render errors — the only place that does.

argparse (not click) and per-command lazy imports keep start-up near Python's own:
a no-op rebuild's budget is a few hundred milliseconds, and every imported module
is paid on every build.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from engine.errors import ShipyardError

PROGRESS_MODES = ("auto", "tty", "plain", "json", "quiet")
RUNTIMES = ("auto", "runc", "crun", "builtin")


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand `argv` names (the first word after the global `--root DIR`), if any."""
    words = iter(argv)
    for word in words:
        if word == "--root":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; for `build`, only that command's.

    Registering every command's options costs ~20 ms of argparse and imports (gettext
    looks up translations for each help string) — a tenth of a no-op rebuild. A build
    needs only its own; anything else (help, a typo) gets the full parser.
    """
    parser = argparse.ArgumentParser(prog="shipyard", description="A daemonless, BuildKit-style image builder.")
    parser.add_argument("--root", help="state directory (default: $SHIPYARD_ROOT, /var/lib/shipyard for root)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    build = sub.add_parser("build", help="build an image from a Dockerfile")
    build.add_argument("context", metavar="PATH", help="build context directory")
    build.add_argument("-f", "--file", help="Dockerfile (default: PATH/Dockerfile)")
    build.add_argument("-t", "--tag", action="append", default=[], help="name[:tag] for the image (repeatable)")
    build.add_argument("--target", help="build this stage instead of the last one")
    build.add_argument("--build-arg", action="append", default=[], metavar="KEY[=VALUE]")
    build.add_argument("--no-cache", action="store_true", help="run every step, ignoring the cache")
    build.add_argument("--progress", choices=PROGRESS_MODES, default="auto")
    build.add_argument("-o", "--output", action="append", default=[], help="type=oci|docker|local,dest=PATH[,...]")
    build.add_argument("--metadata-file", help="write build metadata (digests, per-step cache report) as JSON")
    build.add_argument("--runtime", choices=RUNTIMES, default=os.environ.get("SHIPYARD_RUNTIME", "auto"))
    build.add_argument("--max-parallelism", type=int, default=32, help="steps running at once (default 32)")
    build.add_argument("-q", "--quiet", action="store_true", help="print only the image digest")
    build.add_argument(
        "--secret", action="append", default=[], metavar="id=ID[,src=PATH|,env=VAR]", help="a secret RUN --mount=type=secret can use"
    )
    build.add_argument("--ssh", action="append", default=[], metavar="ID[=SOCKET|KEY[,...]]", help="an SSH agent for RUN --mount=type=ssh")
    build.add_argument(
        "--allow", action="append", default=[], metavar="ENTITLEMENT",
        help="grant network.host (RUN --network=host) or security.insecure (RUN --security=insecure)",
    )
    build.add_argument(
        "--build-context", action="append", default=[], metavar="NAME=DIR|docker-image://REF|oci-layout://PATH",
        help="a named context usable in FROM and COPY --from",
    )
    build.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE", help="ignore the cache for these stages")
    build.add_argument(
        "--call", default="build", metavar="build|outline|targets|check[,format=json]", help="what to do with the Dockerfile"
    )
    build.add_argument("--check", action="store_true", help="run the build checks without building (same as --call=check)")
    build.add_argument("--platform", default="", help="target platform (only the host's is supported)")
    build.add_argument("--push", action="store_true", help="push the image to its registry (same as --output type=registry)")
    build.add_argument(
        "--cache-to", action="append", default=[], metavar="type=registry,ref=REF|type=local,dest=DIR|type=inline[,mode=min|max]",
        help="export the build cache (repeatable)",
    )
    build.add_argument(
        "--cache-from", action="append", default=[], metavar="type=registry,ref=REF|type=local,src=DIR|REF",
        help="use an exported build cache on local misses (repeatable)",
    )

    imp = sub.add_parser("import", help="create a base image from a root filesystem directory or tarball")
    imp.add_argument("source", metavar="ROOTFS_DIR_OR_TAR", help="a directory, a tar file (any compression) or - for stdin")
    imp.add_argument("name", nargs="?", metavar="NAME[:TAG]", help="image name (same as -t)")
    imp.add_argument("-t", "--tag", action="append", default=[], help="name[:tag] (repeatable)")
    imp.add_argument("-c", "--change", action="append", default=[], help="Dockerfile instruction to apply (CMD, ENV, ...)")
    imp.add_argument("-m", "--message", default="", help="commit message for the history entry")

    dockerfile = sub.add_parser("dockerfile", help="Dockerfile tools")
    dsub = dockerfile.add_subparsers(dest="dockerfile_command", metavar="COMMAND")
    dsub.required = True
    parse = dsub.add_parser("parse", help="print the parsed instructions")
    parse.add_argument("file", metavar="FILE", help="a Dockerfile, or - for stdin")
    parse.add_argument("--json", action="store_true", help="JSON output (keyword, flags, arguments, heredocs, lines)")
    if command == "build":
        return parser

    from engine.commands.imagecli import add_image_commands

    add_image_commands(sub)  # images, tag, rmi, inspect, history, save, load
    from engine.commands.registry import add_registry_commands

    add_registry_commands(sub)  # pull, push, login, logout
    from engine.commands.containercli import add_container_commands

    add_container_commands(sub, RUNTIMES)  # run, ps, logs, stop, rm, exec, export, port
    from engine.commands.bake import add_bake_commands

    add_bake_commands(sub, PROGRESS_MODES, RUNTIMES)  # bake, graph
    from engine.commands.system import add_system_commands

    add_system_commands(sub)  # prune, system df|check|prune
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    args = _parser(_command_of(words)).parse_args(words)
    try:
        if args.command == "build":
            from engine.commands.build import run_build

            return run_build(args)
        if args.command == "import":
            from engine.commands.imports import run_import

            return run_import(args)
        if args.command == "dockerfile":
            from engine.commands.dockerfile import run_dockerfile

            return run_dockerfile(args)
        if args.command in ("images", "tag", "rmi", "inspect", "history", "save", "load"):
            from engine.commands.imagecli import run_image_command

            return run_image_command(args)
        if args.command in ("pull", "push", "login", "logout"):
            from engine.commands.registry import run_registry_command

            return run_registry_command(args)
        if args.command in ("run", "ps", "logs", "stop", "rm", "exec", "export", "port"):
            from engine.commands.containercli import run_container_command

            return run_container_command(args)
        if args.command == "bake":
            from engine.commands.bake import run_bake_command

            return run_bake_command(args)
        if args.command == "graph":
            from engine.commands.graph import run_graph

            return run_graph(args)
        if args.command in ("prune", "system"):
            from engine.commands.system import run_system_command

            return run_system_command(args)
    except ShipyardError as exc:
        print(f"ERROR: {exc.user_message()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ERROR: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    except OSError as exc:
        from cache.diskspace import is_disk_full

        if not is_disk_full(exc):
            raise
        print(f"ERROR: {exc.strerror}: {exc.filename or 'writing'} (`shipyard prune` frees build cache)", file=sys.stderr)
        return 1
    return 2


def entrypoint() -> None:
    """The `shipyard` console script: `main`, then exit without interpreter teardown.

    Tearing down the interpreter (module finalization, atexit) costs ~30 ms — a
    quarter of a no-op rebuild. Everything that must reach disk has been written and
    closed by then; the standard streams are flushed here.

    A shell starts background jobs with SIGINT ignored, and Python then never raises
    KeyboardInterrupt; like the docker CLI (Go's signal.Notify), Shipyard takes SIGINT
    back, so an interrupt always stops a build cleanly instead of being lost.
    """
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        leases = sys.modules.get("cache.leases")
        if leases is not None:  # this process's lease file (see cache.leases); a GC would sweep it later
            leases.Leases.release_all()
    finally:
        os._exit(code)


if __name__ == "__main__":
    entrypoint()
