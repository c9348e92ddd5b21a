"""The supervisor: one small process per container that owns everything the container needs.

`shipyard run` creates the container's record and starts this module as a
fresh interpreter, which forks once more (so it is nobody's child and no
session leader) and then:

- forks a *reaper* first, while still single-threaded: a process that waits on a
  pipe and, if the supervisor dies without saying "done" (even by SIGKILL),
  kills the container's pid 1 and records and cleans up in its place;
- takes the container's keeper lock (see `store`), for as long as it lives;
- moves into its own mount namespace and mounts the container's root filesystem
  there, so the mount lives and dies with it and never shows on the host;
- makes the network namespace, starts slirp4netns and binds the published ports
  (bridge mode), writes /etc/hosts, /etc/resolv.conf and /etc/hostname;
- starts the container through the runtime (runc or builtin), records its pid
  and start time, and tells the CLI READY (or FAILED, with Docker's status);
- copies the container's output into its log and to the attached CLI, the CLI's
  stdin, signals and window size into the container, until pid 1 exits;
- closes the ports, cleans the runtime's state, unmounts, records the exit
  status (or removes everything, for `--rm`), sends EXIT and tells the reaper done.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.containers import attach

if TYPE_CHECKING:
    from engine.containers.model import ContainerPlan, LiveState
    from engine.runtime.base import ContainerProcess

MODULE = "engine.containers.supervisor"
DRAIN_SECONDS = 2.0
CHUNK = 65536


# --- starting it (from the CLI) ----------------------------------------------------------


def spawn(state_root: Path, container_id: str, directory: Path) -> socket.socket:
    """Start the supervisor of a created container; returns the CLI's end of its attach stream."""
    from engine.errors import RuntimeBackendError

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    package_root = str(Path(__file__).resolve().parents[2])
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "PYTHONPATH": package_root,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    try:
        with open(directory / "supervisor.err", "ab") as errors:
            intermediate = subprocess.Popen(
                [sys.executable, "-m", MODULE, str(state_root), container_id, str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
                env=env,
                cwd="/",
            )
    except OSError as exc:
        ours.close()
        raise RuntimeBackendError(f"cannot start the container's supervisor: {exc.strerror}") from exc
    finally:
        theirs.close()
    intermediate.wait()  # it exits as soon as it has forked the supervisor
    return ours


# --- the reaper ----------------------------------------------------------------------------


class Reaper:
    """The supervisor's guard: cleans up after it if it dies without finishing."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self._fd = fd

    @classmethod
    def fork(cls, state_root: Path, container_id: str) -> Reaper:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(write_fd)
                os.closerange(3, read_fd)
                os.closerange(read_fd + 1, 1 << 16)
                _reaper_main(state_root, container_id, read_fd)
            finally:
                os._exit(0)
        os.close(read_fd)
        return cls(pid, write_fd)

    def tell(self, pid: int, pid_start: int) -> None:
        self._send(f"pid {pid} {pid_start}\n")

    def _send(self, line: str) -> None:
        try:
            os.write(self._fd, line.encode())
        except OSError:
            pass

    def done(self) -> None:
        self._send("done\n")
        os.close(self._fd)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _reaper_main(state_root: Path, container_id: str, fd: int) -> None:
    from engine.runtime import procs

    pidfd: int | None = None
    buffer = b""
    while True:
        data = os.read(fd, 4096)
        if not data:
            break
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line == b"done":
                return
            if line.startswith(b"pid "):
                _, pid, start = line.split()
                pidfd = procs.open_pidfd(int(pid), int(start))
    # The supervisor died without finishing: the container must not outlive it
    # (its ports, log and mounts died with it). Kill it first, then record that.
    if pidfd is not None and not procs.exited(pidfd):
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.poll(10_000)
    from cache.index import CacheIndex
    from engine.containers import lifecycle
    from engine.containers.model import STATUS_UNKNOWN
    from engine.containers.store import ContainerStore, containers_dir, take_keeper_lock
    from engine.state import StateDir

    directory = containers_dir(state_root) / container_id
    if not directory.exists():
        return
    lock = take_keeper_lock(directory)
    index = CacheIndex(StateDir(state_root).index_db)
    try:
        store = ContainerStore(state_root, index)
        container = store.load(container_id)
        if container is not None:
            # Killed here or, with the builtin runtime, by its helper when our pipe closed.
            lifecycle.finish(store, container, 128 + signal.SIGKILL if pidfd is not None else STATUS_UNKNOWN)
    finally:
        index.close()
        os.close(lock)


# --- the supervisor --------------------------------------------------------------------------


class Supervisor:
    def __init__(self, state_root: Path, container_id: str, channel: socket.socket | None, reaper: Reaper) -> None:
        from cache.index import CacheIndex
        from engine.containers.store import ContainerStore, containers_dir
        from engine.state import StateDir

        self.state_root = state_root
        self.container_id = container_id
        self.directory = containers_dir(state_root) / container_id
        self.channel = channel
        self.reaper = reaper
        self.index = CacheIndex(StateDir(state_root).index_db)
        self.store = ContainerStore(state_root, self.index)
        self.cleanups: list[Callable[[], None]] = []
        self.reader = attach.FrameReader()
        self.plan: ContainerPlan
        self.live: LiveState
        self.stdin_w: int | None = None
        self.outputs: dict[int, int] = {}  # fd → stream (1 stdout, 2 stderr) of the container's output

    # --- talking to the CLI ---

    def _send(self, kind: bytes, payload: bytes = b"") -> None:
        if self.channel is None:
            return
        try:
            attach.send(self.channel, kind, payload)
        except OSError:
            self._drop_client()

    def _drop_client(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    # --- lifecycle ---

    def run(self) -> None:
        from engine.containers.model import CREATED
        from engine.containers.store import take_keeper_lock
        from engine.errors import ShipyardError
        from engine.runtime.procs import start_time

        lock = take_keeper_lock(self.directory)
        try:
            container = self.store.load(self.container_id)
            if container is None:
                self._send(attach.FAILED, json.dumps({"status": 125, "message": "the container was removed"}).encode())
                return
            from engine.containers.model import LiveState

            self.plan = container.plan
            self.live = LiveState(supervisor_pid=os.getpid(), supervisor_start=start_time(os.getpid()) or 0)
            self.index.update_container(
                self.container_id, state=CREATED, pid=None, exit_code=None, runtime_state=self.live.to_json(),
                only_from=(CREATED,),
            )
            try:
                process = self._setup()
            except ShipyardError as exc:
                self._failed(getattr(exc, "status", 125), exc.user_message())
                return
            except Exception as exc:
                traceback.print_exc()
                self._failed(125, f"the container's supervisor failed: {type(exc).__name__}: {exc}")
                return
            self._finish(self._loop(process))
        finally:
            self.index.close()
            self.reaper.done()
            os.close(lock)
            self._drop_client()

    def _undo(self) -> None:
        while self.cleanups:
            cleanup = self.cleanups.pop()
            try:
                cleanup()
            except Exception:
                traceback.print_exc()

    def _failed(self, status: int, message: str) -> None:
        from engine.containers.model import CREATED

        self._undo()
        live = dataclasses.replace(self.live, error=message, finished=time.time())
        if self.plan.auto_remove:
            self.store.delete(self.container_id)
        else:
            self.store.record_exit(self.container_id, status, live, state=CREATED)
        self._send(attach.FAILED, json.dumps({"status": status, "message": message}).encode())

    def _finish(self, status: int) -> None:
        self._undo()  # ports closed, runtime state deleted, rootfs unmounted
        live = dataclasses.replace(self.live, finished=time.time())
        if self.plan.auto_remove:
            self.store.delete(self.container_id)
        else:
            self.store.record_exit(self.container_id, status, live)
        self._send(attach.EXIT, str(status).encode())

    # --- setup ---

    def _setup(self) -> ContainerProcess:
        from engine import linux
        from engine.containers import network, rootfs
        from engine.containers.errors import ContainerError
        from engine.containers.portproxy import PortProxy
        from engine.runtime import select_runtime
        from engine.runtime.base import BindMount, ProcessSpec, Resources, Stdio
        from engine.runtime.users import resolve_user

        plan = self.plan
        try:
            linux.unshare(linux.CLONE_NEWNS)
            linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
        except OSError as exc:
            raise ContainerError(f"cannot make the container's mount namespace: {exc.strerror}") from exc
        root = rootfs.prepare(plan, self.directory)
        self.cleanups.append(lambda: rootfs.release(plan, self.directory))
        user = resolve_user(root, plan.user)
        env = list(plan.env)
        if not any(entry.startswith("HOME=") for entry in env):
            env.append(f"HOME={user.home}")

        network_mode, netns_path, slirp, bound = plan.network, "", None, ()
        if plan.network == "bridge":
            namespace = network.NetworkNamespace()
            self.cleanups.append(namespace.close)
            slirp = network.start_slirp(namespace.path, str(self.directory / "slirp.log"))
            if slirp is not None:
                self.cleanups.append(slirp.close)
            proxy = PortProxy(plan.ports, namespace.socket)
            bound = proxy.bind()
            self.cleanups.append(proxy.close)
            network_mode, netns_path = "netns", namespace.path
        else:
            proxy = None
        etc = network.write_etc_files(str(self.directory), plan.hostname, plan.network, slirp is not None)
        mounts = [BindMount(path, target, readonly=False) for target, path in etc.items()]
        mounts += [BindMount(v.source, v.target, v.readonly) for v in plan.volumes]
        spec = ProcessSpec(
            args=plan.args,
            env=tuple(env),
            cwd=plan.workdir,
            uid=user.uid,
            gid=user.gid,
            additional_gids=user.additional_gids,
            hostname=plan.hostname,
            network=network_mode,  # type: ignore[arg-type]
            mounts=tuple(mounts),
            readonly_rootfs=plan.readonly_rootfs,
            netns_path=netns_path,
            terminal=plan.tty,
            console_size=plan.console_size,
            resources=Resources(plan.memory, plan.memory_swap, plan.cpu_quota, plan.cpu_period),
        )
        runtime = select_runtime(plan.runtime, self.state_root)

        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        child_fds = [null]
        try:
            if plan.tty:
                stdio = Stdio(null, null, null)
            else:
                stdin = null
                if plan.stdin_open:
                    stdin, self.stdin_w = os.pipe()
                    child_fds.append(stdin)
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                child_fds += [out_w, err_w]
                self.outputs = {out_r: 1, err_r: 2}
                stdio = Stdio(stdin, out_w, err_w)
            process: ContainerProcess = runtime.start(root, spec, container_id=plan.id, stdio=stdio)  # type: ignore[attr-defined]
        except BaseException:
            for fd in list(self.outputs) + ([self.stdin_w] if self.stdin_w is not None else []):
                os.close(fd)
            self.outputs, self.stdin_w = {}, None
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
        self.cleanups.append(process.close)
        if process.console is not None:
            self.outputs = {process.console: 1}
        self.reaper.tell(process.handle.pid, process.handle.pid_start)
        self.live = dataclasses.replace(
            self.live,
            runtime=runtime.name,
            pid=process.handle.pid,
            pid_start=process.handle.pid_start,
            started=time.time(),
            ports=bound,
        )
        fresh = self.store.load(self.container_id)
        if fresh is not None:
            self.store.record_running(fresh, self.live)
        if proxy is not None:
            proxy.start()
        self._send(attach.READY, json.dumps({"ports": [p.describe() for p in bound]}).encode())
        return process

    # --- the copy loop ---

    def _loop(self, process: ContainerProcess) -> int:
        from engine.containers.logs import LogWriter
        from engine.runtime.console import set_winsize

        log = LogWriter(str(self.directory / "container.log"))
        self.cleanups.append(log.close)
        console = process.console
        stdin_target = console if console is not None else self.stdin_w
        pending = bytearray()
        closing_stdin = False
        selector = selectors.DefaultSelector()
        for fd in self.outputs:
            os.set_blocking(fd, False)
        if self.stdin_w is not None:
            os.set_blocking(self.stdin_w, False)
        interest: dict[int, int] = {}

        def want(fd: int, events: int) -> None:
            if events == interest.get(fd, 0):
                return
            if fd in interest and events:
                selector.modify(fd, events)
            elif fd in interest:
                selector.unregister(fd)
            else:
                selector.register(fd, events)
            if events:
                interest[fd] = events
            else:
                interest.pop(fd, None)

        def refresh(fd: int | None) -> None:
            if fd is None:
                return
            events = selectors.EVENT_READ if fd in self.outputs else 0
            if fd == stdin_target and pending:
                events |= selectors.EVENT_WRITE
            want(fd, events)

        def close_stdin() -> None:
            nonlocal stdin_target
            if self.stdin_w is not None and not pending:
                want(self.stdin_w, 0)
                os.close(self.stdin_w)
                self.stdin_w = None
                stdin_target = None

        for fd in self.outputs:
            refresh(fd)
        exit_fd = process.fileno()
        want(exit_fd, selectors.EVENT_READ)
        if self.channel is not None:
            want(self.channel.fileno(), selectors.EVENT_READ)
        status: int | None = None
        deadline = 0.0
        while True:
            if status is not None:
                remaining = deadline - time.monotonic()
                if not self.outputs or remaining <= 0:
                    break
                events = selector.select(remaining)
            else:
                events = selector.select()
            for key, mask in events:
                fd = key.fd
                if fd == exit_fd:
                    status = process.wait()
                    want(exit_fd, 0)
                    deadline = time.monotonic() + DRAIN_SECONDS
                    continue
                if self.channel is not None and fd == self.channel.fileno():
                    try:
                        data = self.channel.recv(CHUNK)
                    except OSError:
                        data = b""
                    if not data:
                        want(fd, 0)
                        self._drop_client()
                        if self.plan.stdin_once and console is None:
                            closing_stdin = True
                            close_stdin()
                        continue
                    for kind, payload in self.reader.feed(data):
                        if kind == attach.IN and stdin_target is not None:
                            pending += payload
                            refresh(stdin_target)
                        elif kind == attach.EOF and console is None:
                            closing_stdin = True
                            close_stdin()
                        elif kind == attach.SIGNAL:
                            process.signal(int(payload))
                        elif kind == attach.RESIZE and console is not None:
                            rows, cols = (int(x) for x in payload.split())
                            set_winsize(console, rows, cols)
                    continue
                if mask & selectors.EVENT_WRITE and fd == stdin_target:
                    try:
                        written = os.write(fd, pending)
                        del pending[:written]
                    except BlockingIOError:
                        pass
                    except OSError:
                        pending.clear()
                    refresh(fd)
                    if closing_stdin:
                        close_stdin()
                if mask & selectors.EVENT_READ and fd in self.outputs:
                    try:
                        data = os.read(fd, CHUNK)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        if exc.errno != errno.EIO:  # EIO: the pty's last slave closed
                            raise
                        data = b""
                    if not data:
                        del self.outputs[fd]
                        refresh(fd)
                        if fd != console:
                            os.close(fd)
                        continue
                    stream = self.outputs[fd]
                    log.write(stream, data)
                    self._send(attach.OUT if stream == 1 else attach.ERR, data)
        for fd in list(self.outputs):
            want(fd, 0)
            if fd != console:
                os.close(fd)
        self.outputs = {}
        if self.stdin_w is not None:
            os.close(self.stdin_w)
            self.stdin_w = None
        if console is not None:
            os.close(console)
        selector.close()
        return status if status is not None else 255


def main(argv: list[str]) -> None:
    state_root, container_id, channel_fd = Path(argv[0]), argv[1], int(argv[2])
    if os.fork() > 0:
        os._exit(0)
    try:
        reaper = Reaper.fork(state_root, container_id)
        channel = socket.socket(fileno=channel_fd)
        Supervisor(state_root, container_id, channel, reaper).run()
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
