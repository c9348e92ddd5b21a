"""`shipyard ps`, `logs`, `stop`, `rm`, `exec`, `export` and `port`: docker's container lifecycle.

Each finds containers through `engine.containers.store` (by name, id or id
prefix) and sees them as they really are (see `ContainerStore.observe`).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from engine.commands.common import state_root
from engine.errors import ShipyardError, UsageError


@contextmanager
def _store(args: argparse.Namespace) -> Iterator[ContainerStore]:  # type: ignore[name-defined]  # noqa: F821
    from cache.index import CacheIndex
    from engine.containers.store import ContainerStore
    from engine.state import StateDir

    root = state_root(args)
    state = StateDir(root).ensure()
    index = CacheIndex(state.index_db)
    try:
        yield ContainerStore(root, index)
    finally:
        index.close()


def _ago(seconds: float) -> str:
    """docker's HumanDuration."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        return "1 second" if int(seconds) == 1 else f"{int(seconds)} seconds"
    minutes = seconds / 60
    if minutes < 60:
        return "About a minute" if int(minutes) == 1 else f"{int(minutes)} minutes"
    hours = minutes / 60
    if hours < 48:
        return "About an hour" if int(hours) == 1 else f"{int(hours)} hours"
    days = hours / 24
    if days < 14:
        return f"{int(days)} days"
    if days < 60:
        return f"{int(days / 7)} weeks"
    if days < 730:
        return f"{int(days / 30)} months"
    return f"{int(days / 365)} years"


def _status(container, now: float) -> str:  # type: ignore[no-untyped-def]
    from engine.containers.model import CREATED, RUNNING

    if container.state == RUNNING:
        return f"Up {_ago(now - container.live.started)}"
    if container.state == CREATED:
        return "Created"
    finished = container.live.finished or now
    return f"Exited ({container.exit_code}) {_ago(now - finished)} ago"


def _command(args: tuple[str, ...], full: bool) -> str:
    text = " ".join(args)
    if not full and len(text) > 20:
        text = text[:19] + "…"
    return json.dumps(text, ensure_ascii=False)


def run_ps(args: argparse.Namespace) -> int:
    from engine.containers.model import RUNNING

    with _store(args) as store:
        containers = [c for c in store.list() if args.all or c.state == RUNNING]
    now = time.time()
    if args.quiet:
        for container in containers:
            print(container.id if args.no_trunc else container.id[:12])
        return 0
    if args.format == "json":
        for c in containers:
            ports = c.live.ports if c.state == RUNNING else ()
            print(
                json.dumps(
                    {
                        "ID": c.id,
                        "Names": c.name,
                        "Image": c.plan.image_name,
                        "ImageID": c.plan.image_id,
                        "Command": " ".join(c.plan.args),
                        "CreatedAt": c.plan.created,
                        "State": c.state,
                        "Status": _status(c, now),
                        "ExitCode": c.exit_code,
                        "Ports": [p.describe() for p in ports],
                        "Pid": c.live.pid if c.state == RUNNING else 0,
                        "SupervisorPid": c.live.supervisor_pid,
                        "Runtime": c.live.runtime,
                        "Error": c.live.error,
                    }
                )
            )
        return 0
    rows = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")]
    for c in containers:
        ports = ", ".join(p.describe() for p in c.live.ports) if c.state == RUNNING else ""
        rows.append(
            (
                c.id if args.no_trunc else c.id[:12],
                c.plan.image_name,
                _command(c.plan.args, args.no_trunc),
                f"{_ago(now - c.plan.created)} ago",
                _status(c, now),
                ports,
                c.name,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])) + "   " + row[-1])
    return 0


def run_port(args: argparse.Namespace) -> int:
    with _store(args) as store:
        container = store.lookup(args.container)
    ports = container.live.ports if container.running else ()
    wanted = None
    if args.private:
        number, _, proto = args.private.partition("/")
        wanted = (int(number), proto or "tcp")
    for port in ports:
        if wanted and (port.container_port, port.protocol) != wanted:
            continue
        host = port.bind_ip if ":" not in port.bind_ip else f"[{port.bind_ip}]"
        line = f"{host}:{port.host_port}"
        print(line if wanted else f"{port.container_port}/{port.protocol} -> {line}")
    if wanted and not any((p.container_port, p.protocol) == wanted for p in ports):
        raise UsageError(f"no public port '{args.private}' published for {args.container}")
    return 0


def run_stop(args: argparse.Namespace) -> int:
    from engine.containers import lifecycle

    failures = []
    with _store(args) as store:
        for ref in args.containers:
            try:
                container = store.lookup(ref)
                lifecycle.stop(store, container, args.time)
                print(ref)
            except ShipyardError as exc:
                failures.append(exc.user_message())
    return _report(failures)


def run_rm(args: argparse.Namespace) -> int:
    from engine.containers import lifecycle

    failures = []
    with _store(args) as store:
        for ref in args.containers:
            try:
                container = store.lookup(ref)
                lifecycle.remove(store, container, force=args.force)
                print(ref)
            except ShipyardError as exc:
                failures.append(exc.user_message())
    return _report(failures)


def _report(failures: list[str]) -> int:
    for message in failures[:-1]:
        print(f"ERROR: {message}", file=sys.stderr)
    if failures:
        from engine.containers.errors import ContainerError

        raise ContainerError(failures[-1])
    return 0


def run_logs(args: argparse.Namespace) -> int:
    from engine.containers.logs import read_from
    from engine.runtime import procs

    tail: int | None = None
    if args.tail != "all":
        try:
            tail = int(args.tail)
        except ValueError:
            raise UsageError(f"invalid --tail {args.tail!r}: a number or 'all'") from None
    with _store(args) as store:
        container = store.lookup(args.container)
        path = store.directory(container.id) / "container.log"

        def emit(record) -> None:  # type: ignore[no-untyped-def]
            data = (record.time.encode() + b" " if args.timestamps else b"") + record.data
            _write(1 if record.stream == 1 else 2, data)

        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            return 0
        with handle:
            records = list(read_from(handle))
            if tail is not None:
                records = records[-tail:] if tail > 0 else []
            for record in records:
                emit(record)
            if not args.follow:
                return 0
            live = container.live
            while True:
                running = procs.alive(live.pid, live.pid_start) if container.running else False
                got = False
                for record in read_from(handle):
                    emit(record)
                    got = True
                if not running and not got:
                    fresh = store.load(container.id)
                    if fresh is None or not fresh.running:
                        for record in read_from(handle):
                            emit(record)
                        return 0
                    container, live = fresh, fresh.live
                if not got:
                    time.sleep(0.1)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def run_export(args: argparse.Namespace) -> int:
    from engine.commands.common import isolate_mounts
    from engine.containers import rootfs
    from engine.fs.layertar import write_layer_tar

    if not args.output and sys.stdout.isatty():
        raise UsageError("refusing to write a tar archive to a terminal: use -o FILE or redirect stdout")
    isolate_mounts()
    with _store(args) as store:
        container = store.lookup(args.container)
        directory = store.directory(container.id)
        with rootfs.merged_view(container.plan, directory) as view:
            if args.output:
                partial = f"{args.output}.partial-{os.getpid()}"
                try:
                    with open(partial, "wb") as out:
                        write_layer_tar(view, out, whiteouts="oci")
                    os.replace(partial, args.output)
                finally:
                    if os.path.exists(partial):
                        os.unlink(partial)
            else:
                out = sys.stdout.buffer
                write_layer_tar(view, out, whiteouts="oci")
                out.flush()
    return 0


class ExecError(ShipyardError):
    """An exec that could not start its command (126 cannot execute, 127 not found, 125 otherwise)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.exit_code = status


def run_exec(args: argparse.Namespace) -> int:
    from engine.containers import options
    from engine.runtime.base import (
        STATUS_RUNTIME_FAILED,
        ContainerHandle,
        ContainerSetupError,
        ProcessSpec,
        Stdio,
    )
    from engine.runtime.console import get_winsize
    from engine.runtime.probe import open_runtime
    from engine.runtime.users import resolve_user

    if not args.cmd:
        raise UsageError("exec needs a command: shipyard exec CONTAINER COMMAND [ARG...]")
    with _store(args) as store:
        container = store.lookup(args.container)
    if not container.running:
        raise ExecError(f"container {container.id[:12]} is not running", STATUS_RUNTIME_FAILED)
    plan, live = container.plan, container.live
    try:
        user = resolve_user(f"/proc/{live.pid}/root", args.user if args.user is not None else plan.user)
        overrides = options.parse_env(args.env)
        if args.tty:
            overrides = ["TERM=xterm"] + overrides
        env = list(options.merge_env(plan.env, overrides))
        if not any(entry.startswith("HOME=") for entry in env):
            env.append(f"HOME={user.home}")
        workdir = args.workdir or plan.workdir
        if not workdir.startswith("/"):
            raise UsageError(f"the working directory {workdir!r} is invalid: it needs to be an absolute path")
        size = get_winsize(sys.stdout.fileno()) if args.tty else (0, 0)
        spec = ProcessSpec(
            args=tuple(args.cmd),
            env=tuple(env),
            cwd=workdir,
            uid=user.uid,
            gid=user.gid,
            additional_gids=user.additional_gids,
            hostname=plan.hostname,
            terminal=args.tty,
            console_size=size,
        )
        runtime = open_runtime(live.runtime, store.state_root)
        handle = ContainerHandle(live.runtime, container.id, live.pid, live.pid_start)
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            stdin = sys.stdin.fileno() if args.interactive and not args.detach else null
            out = null if args.detach else sys.stdout.fileno()
            err = null if args.detach else sys.stderr.fileno()
            stdio = Stdio(stdin, out, err) if not args.tty else Stdio(null, null, null)
            sys.stdout.flush()
            sys.stderr.flush()
            process = runtime.exec(handle, spec, stdio=stdio)  # type: ignore[attr-defined]
        finally:
            os.close(null)
    except ContainerSetupError as exc:
        raise ExecError(str(exc), exc.status) from exc
    if args.detach:
        if process.console is not None:
            os.close(process.console)
        process.detach()
        return 0
    try:
        if process.console is not None:
            return _exec_tty(process, args.interactive)
        return _exec_plain(process)
    finally:
        process.close()


def _exec_plain(process) -> int:  # type: ignore[no-untyped-def]
    """Wait for the process, forwarding the signals this command gets."""
    from engine.containers.terminal import FORWARDED, SignalPipe

    with SignalPipe(FORWARDED) as signals_in:
        while True:
            readable, _, _ = select.select([process.fileno(), signals_in], [], [])
            if signals_in in readable:
                for signum in signals_in.drain():
                    process.signal(signum)
            if process.fileno() in readable:
                return process.wait()


def _exec_tty(process, interactive: bool) -> int:  # type: ignore[no-untyped-def]
    """Copy between this terminal and the process's pty until it exits and its output is drained."""
    import errno
    import signal

    from engine.containers.terminal import FORWARDED, SignalPipe, raw_terminal
    from engine.runtime.console import get_winsize, set_winsize

    master = process.console
    stdin_open = interactive
    status: int | None = None
    deadline = 0.0
    try:
        with SignalPipe(FORWARDED + (signal.SIGWINCH,)) as signals_in, raw_terminal(sys.stdin.fileno(), interactive):
            while True:
                readers = [master, signals_in] + ([sys.stdin.fileno()] if stdin_open else [])
                if status is None:
                    readers.append(process.fileno())
                timeout = None if status is None else max(0.0, deadline - time.monotonic())
                readable, _, _ = select.select(readers, [], [], timeout)
                if status is not None and not readable:
                    break
                if signals_in in readable:
                    for signum in signals_in.drain():
                        if signum == signal.SIGWINCH:
                            set_winsize(master, *get_winsize(sys.stdout.fileno()))
                        else:
                            process.signal(signum)
                if stdin_open and sys.stdin.fileno() in readable:
                    data = os.read(sys.stdin.fileno(), 65536)
                    if data:
                        _write(master, data)
                    else:
                        stdin_open = False
                if master in readable:
                    try:
                        data = os.read(master, 65536)
                    except OSError as exc:
                        if exc.errno != errno.EIO:
                            raise
                        data = b""
                    if not data:  # every slave fd is closed: the process (and its children) ended
                        if status is None:
                            status = process.wait()
                        break
                    _write(1, data)
                if status is None and process.fileno() in readable:
                    status = process.wait()
                    deadline = time.monotonic() + 1.0
    finally:
        os.close(master)
    return status if status is not None else process.wait()
