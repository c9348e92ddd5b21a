"""`shipyard run`: create a container from an image, start its supervisor, attach or detach.

The image's ENTRYPOINT, CMD, ENV, WORKDIR, USER, EXPOSE and STOPSIGNAL apply as
docker applies them. `run`'s exit status is the container's; Shipyard's own
errors exit 125, a command that cannot be run 126, one not found 127. In the
foreground, stdin (with -i), signals and the window size (with -t) go to the
container through the supervisor, and its output comes back the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import sys
import time

from engine.commands.common import state_root
from engine.errors import ImageNotFoundError, ShipyardError, UsageError

SEND_BUFFER_LIMIT = 1 << 20


class RunError(ShipyardError):
    """A `run` that failed before the container's command ran (docker's 125 and friends)."""

    exit_code = 125

    def __init__(self, message: str, status: int = 125) -> None:
        super().__init__(message)
        self.exit_code = status


def run_run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except RunError:
        raise
    except ShipyardError as exc:
        raise RunError(exc.user_message()) from exc


def _run(args: argparse.Namespace) -> int:
    from engine.containers import supervisor
    from engine.containers.store import ContainerStore
    from engine.containers.terminal import FORWARDED, SignalPipe
    from engine.images import ImageStore
    from engine.solver.context import Engine

    root = state_root(args)
    engine = Engine.open(root)
    try:
        image = ImageStore(engine).get(args.image)
        if image is None:
            raise ImageNotFoundError(f"unable to find image {args.image!r} locally (build, import or load it first)")
        store = ContainerStore(root, engine.index)
        plan = _plan(args, image, engine, store.names())
        store.create(plan)
        with contextlib.ExitStack() as stack:
            signals_in = None
            if not args.detach:
                # From here on a signal is the container's (delivered once it runs), never our death.
                signals_in = stack.enter_context(SignalPipe(FORWARDED + ((signal.SIGWINCH,) if args.tty else ())))
            channel = stack.enter_context(supervisor.spawn(root, plan.id, store.directory(plan.id)))
            return _start_and_attach(args, channel, store, plan.id, signals_in)
    finally:
        engine.close()


def _plan(args: argparse.Namespace, image, engine, taken: set[str]):  # type: ignore[no-untyped-def]
    from engine.containers import options
    from engine.containers.model import ContainerPlan
    from engine.containers.names import new_id, random_name
    from engine.runtime.console import get_winsize

    config = image.image.config
    container_id = new_id()
    name = options.check_name(args.name) if args.name else random_name(taken)
    entrypoint, cmd = list(config.entrypoint), list(config.cmd)
    if args.entrypoint is not None:
        entrypoint, cmd = ([args.entrypoint] if args.entrypoint else []), []
    if args.cmd:
        cmd = list(args.cmd)
    argv = tuple(entrypoint + cmd)
    if not argv:
        raise UsageError("no command specified: the image has no ENTRYPOINT or CMD and none was given")

    if args.network == "host":
        hostname = args.hostname or socket.gethostname()
    else:
        hostname = args.hostname or container_id[:12]
    overrides = [f"HOSTNAME={hostname}"] + (["TERM=xterm"] if args.tty else [])
    for path in args.env_file:
        overrides += options.read_env_file(path)
    overrides += options.parse_env(args.env)
    env = options.merge_env(tuple(config.env), overrides)

    workdir = args.workdir if args.workdir is not None else (config.working_dir or "/")
    if not workdir.startswith("/"):
        raise UsageError(f"the working directory {workdir!r} is invalid: it needs to be an absolute path")

    ports = [m for spec in args.publish for m in options.parse_publish(spec)]
    if args.publish_all:
        ports += [options.exposed_port(port) for port in config.exposed_ports]
    if ports and args.network == "none":
        raise UsageError("published ports need a network: --network none has none")
    if ports and args.network == "host":
        print("WARNING: published ports are discarded when using host network mode", file=sys.stderr)
        ports = []

    memory = options.parse_memory(args.memory) if args.memory else 0
    swap = options.parse_memory_swap(args.memory_swap) if args.memory_swap else 0
    if swap and not memory:
        raise UsageError("--memory-swap needs --memory")
    if swap > 0 and swap < memory:
        raise UsageError("--memory-swap must be at least --memory")
    quota, period = options.parse_cpus(args.cpus) if args.cpus else (0, 0)
    stop_signal = options.parse_signal(args.stop_signal or config.stop_signal or "SIGTERM")

    lowers = tuple(engine.snapshotter.layer_path(row.layer.dir) for row in engine.index.chain(image.snapshot))
    console_size = get_winsize(sys.stdout.fileno()) if args.tty else (0, 0)
    if args.tty and console_size == (0, 0):
        console_size = get_winsize(sys.stdin.fileno())
    return ContainerPlan(
        id=container_id,
        name=name,
        image_id=image.config_digest,
        image_name=args.image,
        args=argv,
        env=env,
        workdir=workdir,
        user=args.user if args.user is not None else config.user,
        hostname=hostname,
        network=args.network,
        ports=tuple(ports),
        volumes=tuple(options.parse_volume(v) for v in args.volume),
        readonly_rootfs=args.read_only,
        tty=args.tty,
        stdin_open=args.interactive,
        stdin_once=args.interactive and not args.detach,
        auto_remove=args.rm,
        memory=memory,
        memory_swap=swap,
        cpu_quota=quota,
        cpu_period=period,
        stop_signal=stop_signal,
        stop_timeout=args.stop_timeout if args.stop_timeout is not None else 10,
        runtime=args.runtime,
        lowers=lowers,
        snapshotter=engine.snapshotter.kind,
        created=time.time(),
        console_size=console_size,
    )


def _supervisor_died(store, container_id: str) -> RunError:  # type: ignore[no-untyped-def]
    detail = ""
    try:
        with open(store.directory(container_id) / "supervisor.err", "rb") as handle:
            lines = [line for line in handle.read().decode("utf-8", "replace").splitlines() if line.strip()]
        detail = f": {lines[-1]}" if lines else ""
    except OSError:
        pass
    return RunError(f"the container's supervisor exited before starting it{detail}")


def _start_and_attach(args: argparse.Namespace, channel: socket.socket, store, container_id: str, signals_in) -> int:  # type: ignore[no-untyped-def]
    from engine.containers import attach

    reader = attach.FrameReader()
    pending: list[tuple[bytes, bytes]] = []
    first = attach.read_frame(channel, reader, pending)
    if first is None:
        raise _supervisor_died(store, container_id)
    kind, payload = first
    if kind == attach.FAILED:
        failure = json.loads(payload)
        raise RunError(str(failure["message"]), int(failure["status"]))
    if kind != attach.READY:
        raise RunError("the container's supervisor answered out of protocol")
    if args.detach:
        print(container_id)
        return 0
    return _attach(args, channel, reader, pending, store, container_id, signals_in)


def _attach(args, channel, reader, pending, store, container_id: str, signals_in) -> int:  # type: ignore[no-untyped-def]
    """Copy stdin, signals and the window size in, output out, until the container exits."""
    from engine.containers import attach
    from engine.containers.terminal import raw_terminal
    from engine.runtime.console import get_winsize

    status: int | None = None
    outgoing = bytearray()
    stdin_open = args.interactive
    stdin_fd = sys.stdin.fileno() if stdin_open else -1
    channel.setblocking(False)

    def deliver(kind: bytes, payload: bytes) -> None:
        nonlocal status
        if kind == attach.OUT:
            _write_all(1, payload)
        elif kind == attach.ERR:
            _write_all(2, payload)
        elif kind == attach.EXIT:
            status = int(payload)

    with raw_terminal(sys.stdin.fileno(), args.tty and stdin_open):
        for kind, payload in pending:
            deliver(kind, payload)
        while True:
            readers = [channel, signals_in]
            if stdin_open and len(outgoing) < SEND_BUFFER_LIMIT:
                readers.append(stdin_fd)
            writers = [channel] if outgoing else []
            try:
                readable, writable, _ = select.select(readers, writers, [])
            except InterruptedError:
                continue
            if signals_in in readable:
                for signum in signals_in.drain():
                    if signum == signal.SIGWINCH:
                        rows, cols = get_winsize(sys.stdout.fileno())
                        outgoing += attach.encode(attach.RESIZE, f"{rows} {cols}".encode())
                    else:
                        outgoing += attach.encode(attach.SIGNAL, str(signum).encode())
            if stdin_fd in readable:
                try:
                    data = os.read(stdin_fd, 65536)
                except OSError:
                    data = b""
                if data:
                    outgoing += attach.encode(attach.IN, data)
                else:
                    outgoing += attach.encode(attach.EOF)
                    stdin_open = False
            if channel in writable and outgoing:
                try:
                    sent = channel.send(outgoing)
                    del outgoing[:sent]
                except BlockingIOError:
                    pass
                except OSError:
                    outgoing.clear()
            if channel in readable:
                try:
                    data = channel.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    break
                for kind, payload in reader.feed(data):
                    deliver(kind, payload)
    if status is None:
        container = store.load(container_id)
        if container is not None and container.exit_code is not None:
            return container.exit_code
        raise _supervisor_died(store, container_id)
    return status


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])
