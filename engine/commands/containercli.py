"""The container commands' arguments and dispatch: run, ps, logs, stop, rm, exec, export, port."""

from __future__ import annotations

import argparse
import os

CONTAINER_COMMANDS = ("run", "ps", "logs", "stop", "rm", "exec", "export", "port")


def add_container_commands(sub: argparse._SubParsersAction, runtimes: tuple[str, ...]) -> None:  # type: ignore[type-arg]
    add_run_parser(sub, runtimes)

    ps = sub.add_parser("ps", help="list containers")
    ps.add_argument("-a", "--all", action="store_true", help="all containers (default: running ones)")
    ps.add_argument("-q", "--quiet", action="store_true", help="only container IDs")
    ps.add_argument("--no-trunc", action="store_true", help="full IDs and commands")
    ps.add_argument("--format", choices=("table", "json"), default="table")

    logs = sub.add_parser("logs", help="show a container's output")
    logs.add_argument("container", metavar="CONTAINER")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new output until the container stops")
    logs.add_argument("-n", "--tail", default="all", metavar="N", help="only the last N lines")
    logs.add_argument("-t", "--timestamps", action="store_true")

    stop = sub.add_parser("stop", help="stop running containers (stop signal, then SIGKILL)")
    stop.add_argument("containers", nargs="+", metavar="CONTAINER")
    stop.add_argument("-t", "--time", type=int, metavar="SECONDS", help="seconds before SIGKILL (default: the container's, 10)")

    rm = sub.add_parser("rm", help="remove containers")
    rm.add_argument("containers", nargs="+", metavar="CONTAINER")
    rm.add_argument("-f", "--force", action="store_true", help="kill and remove running containers")

    exe = sub.add_parser("exec", help="run a command in a running container")
    exe.add_argument("container", metavar="CONTAINER")
    exe.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")
    exe.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    exe.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    exe.add_argument("-e", "--env", action="append", default=[], metavar="KEY[=VALUE]")
    exe.add_argument("-u", "--user", help="user[:group] (default: the container's)")
    exe.add_argument("-w", "--workdir", help="working directory (default: the container's)")
    exe.add_argument("-d", "--detach", action="store_true", help="run in the background")

    export = sub.add_parser("export", help="write a container's filesystem as a tar archive")
    export.add_argument("container", metavar="CONTAINER")
    export.add_argument("-o", "--output", help="write to FILE instead of stdout")

    port = sub.add_parser("port", help="list a container's published ports")
    port.add_argument("container", metavar="CONTAINER")
    port.add_argument("private", nargs="?", metavar="PRIVATE_PORT[/PROTO]")


def add_run_parser(sub: argparse._SubParsersAction, runtimes: tuple[str, ...]) -> None:  # type: ignore[type-arg]
    """docker run's options (`-h` is --hostname, as in docker, so help is --help only)."""
    run = sub.add_parser("run", help="run a command in a new container", add_help=False)
    run.add_argument("--help", action="help", help="show this help message and exit")
    run.add_argument("image", metavar="IMAGE")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")
    run.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:][HOST:]CONTAINER[/PROTO]")
    run.add_argument("-P", "--publish-all", action="store_true", help="publish every EXPOSEd port to a free host port")
    run.add_argument("-e", "--env", action="append", default=[], metavar="KEY[=VALUE]")
    run.add_argument("--env-file", action="append", default=[], metavar="FILE")
    run.add_argument("-v", "--volume", action="append", default=[], metavar="HOST:CONTAINER[:ro]")
    run.add_argument("--rm", action="store_true", help="remove the container when it exits")
    run.add_argument("-d", "--detach", action="store_true", help="run in the background and print the container id")
    run.add_argument("--name", help="a name for the container")
    run.add_argument("-w", "--workdir", help="working directory inside the container")
    run.add_argument("-u", "--user", help="user[:group] (name or id)")
    run.add_argument("--entrypoint", help="override the image's ENTRYPOINT ('' clears it)")
    run.add_argument("--network", "--net", default="bridge", choices=("bridge", "host", "none"))
    run.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    run.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    run.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    run.add_argument("-m", "--memory", help="memory limit (e.g. 512m)")
    run.add_argument("--memory-swap", help="memory plus swap limit (-1: unlimited swap)")
    run.add_argument("--cpus", help="number of CPUs (e.g. 1.5)")
    run.add_argument("-h", "--hostname", help="container host name (default: the short id)")
    run.add_argument("--stop-signal", help="signal that stops the container (default: the image's STOPSIGNAL or SIGTERM)")
    run.add_argument("--stop-timeout", type=int, help="seconds to wait before SIGKILL on stop (default 10)")
    run.add_argument("--runtime", choices=runtimes, default=os.environ.get("SHIPYARD_RUNTIME", "auto"))


def run_container_command(args: argparse.Namespace) -> int:
    if args.command == "run":
        from engine.commands.run import run_run

        return run_run(args)
    from engine.commands import containers

    return int(getattr(containers, f"run_{args.command}")(args))
