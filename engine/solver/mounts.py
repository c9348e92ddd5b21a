"""The extra mounts of one RUN, made ready for the runtime and undone afterwards.

`prepare_mounts` turns the `Mount`s of an `ExecOp` into the runtime's `BindMount`s and
`TmpfsMount`s, registering every undo step on the caller's `ExitStack`:

- **bind**: the selected path of the build context or of another result; read-only,
  or with `rw` a throwaway copy (an overlay with its own upper directory, else a
  copied tree), so writes never reach a snapshot or the user's files.
- **cache**: an instance of a persistent cache directory (`cache.cachemounts`),
  locked per its sharing mode for the whole run.
- **tmpfs**, **secret** (a file on a private tmpfs, and/or an environment variable),
  **ssh** (a socket forwarding to the agent given with `--ssh`).

Safety (BuildKit's CVE-2024-23651 and CVE-2024-23652 shapes): a cache directory is
shared with containers running right now, so a subpath inside it is resolved with
`openat2(RESOLVE_IN_ROOT)` and bind-mounted *from the file descriptor* onto a
private staging directory: what the runtime mounts is the directory that was
resolved, whatever a concurrent step renames or relinks. Mountpoints this module
creates in the rootfs — for its mounts and for the ones every container gets — are
recorded by inode and removed after the run through a descriptor of their parent
resolved inside the rootfs again, so a step that swaps a parent directory for a
symlink cannot make the cleanup delete a host file.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from engine import linux
from engine.errors import ContextError, ShipyardError
from engine.fs.safepath import clean, relative_to_root, resolve_in_root
from engine.graph.ops import SCRATCH, ExecOp, Mount
from engine.runtime.base import BindMount, TmpfsMount
from engine.solver.context import Engine
from engine.solver.results import Result, input_result
from engine.solver.session import BuildSession

if TYPE_CHECKING:
    from cache.cachemounts import CacheLease
    from engine.fs.selection import ContextFilter

KERNEL_MOUNTS = ("/proc", "/dev", "/sys")
"""Targets below these land on the kernel filesystems the runtime mounts there: the
runtime makes their mountpoints at mount time, nothing is created in the rootfs."""

RuntimeMount = BindMount | TmpfsMount


class MountError(ShipyardError):
    """A RUN --mount that cannot be set up: a missing secret, agent or source path."""


@dataclass(frozen=True)
class PreparedMounts:
    """What the runtime gets for one RUN: its mounts (parents first) and extra env "K=V"."""

    mounts: tuple[RuntimeMount, ...]
    env: tuple[str, ...]


def prepare_mounts(
    engine: Engine,
    op: ExecOp,
    inputs: list[Result],
    rootfs: str,
    session: BuildSession,
    stack: ExitStack,
    cancel: threading.Event,
    context_filters: "Mapping[int, ContextFilter] | None" = None,
) -> PreparedMounts:
    """Mounts for `op` on `rootfs`; everything is undone when `stack` closes (after the run).

    The mountpoints every container needs (/proc, /etc/hosts, …) are made here too, by
    the same inode-checked stubs, so the runtime finds them and has none to clean up.
    """
    root = op.root_mount()
    extra = [m for m in op.mounts if m is not root]
    mounts: list[RuntimeMount] = []
    env: list[str] = []
    if extra:
        staging = stack.enter_context(Staging(engine.state.mounts, overlay=engine.snapshotter.kind == "overlay"))
        preparer = _Preparer(engine, inputs, session, stack, staging, cancel, context_filters or {})
        cache_targets: set[str] = set()
        for mount in extra:
            prepared, extra_env = preparer.prepare(mount)
            if prepared is not None:
                mounts.append(prepared)
                if mount.type == "cache":
                    cache_targets.add(clean(prepared.target))
            env.extend(extra_env)
        mounts.sort(key=lambda m: clean(m.target))
        if cache_targets:  # what is nested in a shared cache is mounted here, race-free (see nested_mounts)
            from engine.solver.nested_mounts import attach_under_caches

            assert staging.dir is not None
            mounts = attach_under_caches(mounts, cache_targets, str(staging.dir))
    stubs = MountStubs(rootfs)
    stack.callback(stubs.remove)
    stubs.make_base([clean(m.target) for m in mounts])
    stubs.make_all(mounts)
    return PreparedMounts(tuple(mounts), tuple(env))


class _Preparer:
    """One RUN's mounts, type by type."""

    def __init__(
        self,
        engine: Engine,
        inputs: list[Result],
        session: BuildSession,
        stack: ExitStack,
        staging: "Staging",
        cancel: threading.Event,
        context_filters: "Mapping[int, ContextFilter]",
    ) -> None:
        self.engine = engine
        self.context_filters = context_filters
        self.inputs = inputs
        self.session = session
        self.stack = stack
        self.staging = staging
        self.cancel = cancel
        self._views: dict[int, str] = {}
        self._leases: dict[tuple[str, str], CacheLease] = {}

    def prepare(self, mount: Mount) -> tuple[RuntimeMount | None, list[str]]:
        if mount.type == "tmpfs":
            return TmpfsMount(mount.target, mount.tmpfs_size), []
        if mount.type == "bind":
            return self._bind(mount), []
        if mount.type == "cache":
            return self._cache(mount), []
        if mount.type == "secret":
            return self._secret(mount)
        if mount.type == "ssh":
            return self._ssh(mount), []
        raise MountError(f"unknown mount type {mount.type!r}")

    # ------------------------------------------------------------------ sources

    def _root_of(self, index: int) -> tuple[str, str]:
        """(host directory, what it is) of input `index`: the context or a snapshot view."""
        source = input_result(self.inputs, index)
        if source.context_path is not None:
            return source.context_path, "the build context"
        if index not in self._views:
            self._views[index] = self.stack.enter_context(self.engine.snapshotter.view(source.snapshot))
        return self._views[index], "the mounted stage"

    def _bind(self, mount: Mount) -> BindMount:
        base, what = self._root_of(mount.input)
        path = resolve_in_root(base, mount.selector)
        if not os.path.exists(path):
            raise MountError(f'RUN --mount: source "{mount.selector}" not found in {what}')
        flt = self.context_filters.get(mount.input)
        if flt:  # the context as BuildKit transfers it: without what .dockerignore excludes
            path = self.staging.filtered_view(base, path, flt)
        if mount.readonly:
            return BindMount(path, mount.target, readonly=True)
        return BindMount(self.staging.writable_copy(path), mount.target, readonly=False)

    # ------------------------------------------------------------------ cache

    def _cache(self, mount: Mount) -> BindMount:
        from cache.cachemounts import CacheMounts, CacheSeed

        seed_key, fill = "", None
        if mount.input != SCRATCH:
            source = input_result(self.inputs, mount.input)
            seed_key = f"context:{source.context_path}" if source.context_path else f"snapshot:{source.snapshot}"
            fill = self._seed_filler(source, mount.selector)
        perms = [f"{k}={v}" for k, v in (("uid", mount.uid), ("gid", mount.gid)) if v is not None]
        if mount.mode is not None:
            perms.append(f"mode={mount.mode:o}")
        if perms:
            seed_key += ("|" if seed_key else "") + ",".join(perms)
        lease = self._leases.get((mount.cache_id, seed_key))
        if lease is None:  # one RUN mounting a cache twice uses one lease (a second lock would wait forever)
            store = CacheMounts(self.engine.state.root / "cachemounts")
            lease = self.stack.enter_context(
                store.acquire(
                    mount.cache_id,
                    mount.sharing,
                    CacheSeed(seed_key, mount.uid, mount.gid, mount.mode, fill),
                    self.cancel,
                )
            )
            self._leases[(mount.cache_id, seed_key)] = lease
        try:
            fd = open_dir_in_root(lease.path, mount.selector)
        except (OSError, ContextError) as exc:
            raise MountError(f'cache mount "{mount.cache_id}": source "{mount.selector}": {_reason(exc)}') from None
        try:
            source = self.staging.bind_fd(fd)
        finally:
            os.close(fd)
        return BindMount(source, mount.target, readonly=mount.readonly)

    def _seed_filler(self, source: Result, selector: str):  # type: ignore[no-untyped-def]
        """Copy the selected files of `source` into a new cache instance, at the same path."""
        from cache.cachemounts import copy_tree

        snapshotter = self.engine.snapshotter

        def fill(instance: str) -> None:
            if source.context_path is not None:
                _copy_selected(source.context_path, selector, instance, copy_tree)
                return
            with snapshotter.view(source.snapshot) as root:
                _copy_selected(root, selector, instance, copy_tree)

        return fill

    # ------------------------------------------------------------------ secrets, ssh

    def _secret(self, mount: Mount) -> tuple[BindMount | None, list[str]]:
        value = self.session.secret_value(mount.secret_id)
        if value is None:
            if mount.required:
                raise MountError(
                    f'secret "{mount.secret_id}" is required but was not provided '
                    f"(pass --secret id={mount.secret_id},src=PATH)"
                )
            return None, []
        env = [f"{mount.env}={value.decode('utf-8', 'replace')}"] if mount.env else []
        if not mount.target:
            return None, env
        path = self.staging.secret_file(value, mount.uid or 0, mount.gid or 0, 0o400 if mount.mode is None else mount.mode)
        return BindMount(path, mount.target, readonly=True), env

    def _ssh(self, mount: Mount) -> BindMount | None:
        paths = self.session.ssh.get(mount.ssh_id)
        if not paths:
            if mount.required:
                raise MountError(
                    f'ssh agent "{mount.ssh_id}" is required but was not provided (pass --ssh {mount.ssh_id}=SOCKET)'
                )
            return None
        upstream = self.staging.agent_socket(paths)
        path = self.staging.forward_socket(upstream, mount.uid or 0, mount.gid or 0, 0o600 if mount.mode is None else mount.mode)
        return BindMount(path, mount.target, readonly=True)


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _copy_selected(root: str, selector: str, instance: str, copy_tree) -> None:  # type: ignore[no-untyped-def]
    src = resolve_in_root(root, selector)
    if not os.path.lexists(src):
        return
    if clean(selector) == "/":
        copy_tree(src, instance)
        return
    dst = os.path.join(instance, clean(selector).lstrip("/"))
    os.makedirs(os.path.dirname(dst), 0o755, exist_ok=True)
    copy_tree(src, dst)


# --------------------------------------------------------------------------- staging


class Staging:
    """A private directory under `<state>/mounts/` holding what one RUN's mounts come from.

    Bind mounts from descriptors, overlays and copies for `rw` binds, a tmpfs for
    secret files and the ssh sockets all live here (sockets in a short-named temporary
    directory: a socket path must fit in 108 bytes) and go away when the run ends.
    """

    def __init__(self, mounts_dir: Path, overlay: bool) -> None:
        self.mounts_dir = Path(mounts_dir)
        self.overlay = overlay
        self.dir: Path | None = None
        self._mounted: list[str] = []
        self._count = 0
        self._secrets: str | None = None
        self._sockets: str | None = None
        self._closers: list = []  # type: ignore[type-arg]

    def __enter__(self) -> "Staging":
        self.mounts_dir.mkdir(parents=True, exist_ok=True)
        sweep_stale(self.mounts_dir)
        self.dir = self.mounts_dir / f"run-{os.getpid()}-{secrets.token_hex(6)}"
        self.dir.mkdir(mode=0o700)
        return self

    def __exit__(self, *exc: object) -> None:
        for close in reversed(self._closers):
            try:
                close()
            except OSError:
                pass
        clean_up = True
        for target in reversed(self._mounted):
            try:
                linux.umount(target, linux.MNT_DETACH)
            except OSError as err:
                if err.errno != errno.EINVAL:  # EINVAL: not mounted any more
                    clean_up = False
        if clean_up and self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        if self._sockets is not None:
            shutil.rmtree(self._sockets, ignore_errors=True)

    def _new(self, prefix: str) -> str:
        assert self.dir is not None
        self._count += 1
        return str(self.dir / f"{prefix}{self._count}")

    def bind_fd(self, fd: int) -> str:
        """A path that shows exactly the file or directory `fd` refers to."""
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        target = self._new("fd-")
        if is_dir:
            os.mkdir(target, 0o700)
        else:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        try:
            linux.mount(f"/proc/self/fd/{fd}", target, None, linux.MS_BIND)
        except OSError:
            # Without mount rights, fall back to the path the descriptor has now.
            return os.readlink(f"/proc/self/fd/{fd}")
        self._mounted.append(target)
        return target

    def writable_copy(self, path: str) -> str:
        """A throwaway writable version of `path` (an `rw` bind): writes vanish after the run."""
        if self.overlay and os.path.isdir(path):
            merged = self._new("rw-")
            upper, work = merged + ".upper", merged + ".work"
            for directory in (merged, upper, work):
                os.mkdir(directory, 0o700)
            st = os.stat(path)
            os.chown(upper, st.st_uid, st.st_gid)  # the upper dir's root is the mount's root
            os.chmod(upper, stat.S_IMODE(st.st_mode))
            fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                linux.mount(
                    "overlay",
                    merged,
                    "overlay",
                    0,
                    f"lowerdir=/proc/self/fd/{fd},upperdir={upper},workdir={work},index=off,xino=off",
                )
                self._mounted.append(merged)
                return merged
            except OSError:
                pass  # e.g. a lower directory overlayfs refuses: copy instead
            finally:
                os.close(fd)
        from cache.cachemounts import copy_tree

        copy = self._new("copy-")
        copy_tree(path, copy)
        return copy

    def filtered_view(self, root: str, path: str, flt: "ContextFilter") -> str:
        """`path` (inside the context `root`) without the entries `.dockerignore` hides.

        Files are hard links where possible (a read-only mount of them cannot change
        the originals; an `rw` mount goes through `writable_copy` on top), copies
        across filesystems.
        """
        from cache.cachemounts import copy_tree

        start = os.path.relpath(path, root)
        start = "" if start == "." else start
        st = os.lstat(path)
        if start and not flt.visible(path, start, stat.S_ISDIR(st.st_mode)):
            raise flt.not_found("/" + start)
        view = self._new("ctx-")
        if not stat.S_ISDIR(st.st_mode):
            _link_or_copy(path, view, copy_tree)
            return view
        dirs: list[tuple[str, os.stat_result]] = []

        def walk(host: str, rel: str, dst: str, dir_st: os.stat_result) -> None:
            os.mkdir(dst, 0o700)
            dirs.append((dst, dir_st))
            with os.scandir(host) as entries:
                children = sorted((e.name, e.path) for e in entries)
            for name, child in children:
                child_rel = f"{rel}/{name}" if rel else name
                child_st = os.lstat(child)
                if stat.S_ISDIR(child_st.st_mode):
                    if flt.visible(child, child_rel, True):
                        walk(child, child_rel, os.path.join(dst, name), child_st)
                elif not flt(child_rel, False):
                    _link_or_copy(child, os.path.join(dst, name), copy_tree)

        walk(path, start, view, st)
        for directory, dir_st in reversed(dirs):
            os.chown(directory, dir_st.st_uid, dir_st.st_gid)
            os.chmod(directory, stat.S_IMODE(dir_st.st_mode))
            os.utime(directory, ns=(dir_st.st_atime_ns, dir_st.st_mtime_ns))
        return view

    def secret_file(self, value: bytes, uid: int, gid: int, mode: int) -> str:
        """The secret in a file on a private tmpfs (never on disk), owned and moded as asked."""
        if self._secrets is None:
            self._secrets = self._new("secrets-")
            os.mkdir(self._secrets, 0o700)
            try:
                linux.mount("tmpfs", self._secrets, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC, "mode=0700")
                self._mounted.append(self._secrets)
            except OSError:
                pass  # without mount rights the 0700 directory is the best we have
        path = os.path.join(self._secrets, f"secret-{self._count}-{secrets.token_hex(4)}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(value)
            while view:
                view = view[os.write(fd, view) :]
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        return path

    def _socket_dir(self) -> str:
        if self._sockets is None:
            self._sockets = tempfile.mkdtemp(prefix="shipyard-ssh-")
        return self._sockets

    def agent_socket(self, paths: tuple[str, ...]) -> str:
        """The agent socket for `--ssh` paths: the first socket given, else an ssh-agent
        started with the given key files for this run."""
        for path in paths:
            try:
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    return path
            except OSError:
                continue
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise MountError(f"--ssh {missing[0]}: neither an agent socket nor a key file")
        agent = _KeyAgent(os.path.join(self._socket_dir(), f"agent-{self._count}.sock"), paths)
        self._closers.append(agent.close)
        return agent.socket

    def forward_socket(self, upstream: str, uid: int, gid: int, mode: int) -> str:
        """A socket with the mount's owner and mode that relays each connection to `upstream`."""
        self._count += 1
        forwarder = _SocketForwarder(upstream, os.path.join(self._socket_dir(), f"ssh-{self._count}.sock"), uid, gid, mode)
        self._closers.append(forwarder.close)
        return forwarder.path


def _link_or_copy(src: str, dst: str, copy_tree) -> None:  # type: ignore[no-untyped-def]
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        copy_tree(src, dst)


def sweep_stale(mounts_dir: Path) -> None:
    """Remove staging directories of shipyard processes that died, unless something is mounted there."""
    try:
        entries = [e for e in os.listdir(mounts_dir) if e.startswith("run-")]
    except OSError:
        return
    if not entries:
        return
    try:
        with open("/proc/self/mountinfo") as handle:
            points = [line.split()[4] for line in handle]
    except OSError:
        return
    for entry in entries:
        pid = entry.split("-")[1]
        if not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
            continue
        path = str(mounts_dir / entry)
        if any(p == path or p.startswith(path + "/") for p in points):
            continue
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- ssh


class _KeyAgent:
    """An `ssh-agent` holding the key files given with `--ssh id=KEY`, for one run."""

    def __init__(self, path: str, keys: tuple[str, ...]) -> None:
        self.socket = path
        try:
            self._proc = subprocess.Popen(
                ["ssh-agent", "-D", "-a", path],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise MountError("--ssh with key files needs ssh-agent (Debian: openssh-client)") from None
        deadline = time.monotonic() + 5
        while not os.path.exists(path):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise MountError("ssh-agent did not start")
            time.sleep(0.01)
        env = {"SSH_AUTH_SOCK": path, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        done = subprocess.run(
            ["ssh-add", "-q", *keys], env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False
        )
        if done.returncode != 0:
            self.close()
            reason = done.stderr.decode(errors="replace").strip().splitlines()
            raise MountError(f"ssh-add {' '.join(keys)}: {reason[-1] if reason else 'failed'}")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


class _SocketForwarder:
    """Listens on `path` and pipes every connection to the Unix socket `upstream`."""

    def __init__(self, upstream: str, path: str, uid: int, gid: int, mode: int) -> None:
        self.upstream = upstream
        self.path = path
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._server.bind(path)
            os.chown(path, uid, gid)
            os.chmod(path, mode)
            self._server.listen(16)
        except OSError:
            self._server.close()
            raise
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="ssh-forward", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            if self._closed:
                conn.close()
                return
            threading.Thread(target=self._relay, args=(conn,), name="ssh-relay", daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.upstream)
        except OSError:
            upstream.close()
            conn.close()
            return
        back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True)
        back.start()
        _pump(conn, upstream)
        back.join()
        upstream.close()
        conn.close()

    def close(self) -> None:
        self._closed = True
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self._server.close()
        self._thread.join(timeout=2)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


# --------------------------------------------------------------------------- in-root descriptors

_SYS_OPENAT2 = 437  # x86_64 and most others
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_openat2_works: bool | None = None


def open_in_root(root_fd: int, path: str, flags: int) -> int:
    """openat2(RESOLVE_IN_ROOT): `path` resolved with `root_fd` as `/`, race-free, never leaving it.

    Without openat2 (kernels before 5.6) the path is resolved with `resolve_in_root`
    and the descriptor opened is checked to still lie inside the root.
    """
    global _openat2_works
    rel = clean(path).lstrip("/") or "."
    if _openat2_works is not False:
        how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
        fd = linux.libc().syscall(
            ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(root_fd), rel.encode(), ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))
        )
        if fd >= 0:
            _openat2_works = True
            return int(fd)
        err = ctypes.get_errno()
        if err != errno.ENOSYS:
            raise OSError(err, os.strerror(err), path)
        _openat2_works = False
    root = os.readlink(f"/proc/self/fd/{root_fd}")
    host = resolve_in_root(root, path)
    fd = os.open(host, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    real = os.readlink(f"/proc/self/fd/{fd}")
    if real != root and not real.startswith(root.rstrip("/") + "/"):
        os.close(fd)
        raise OSError(errno.EXDEV, "path left its root", path)
    return fd


def open_dir_in_root(root: str, path: str) -> int:
    """An O_PATH descriptor of `path` inside `root` (directories made as needed)."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if clean(path) == "/":
            return os.dup(root_fd)
        try:
            return open_in_root(root_fd, path, os.O_PATH)
        except FileNotFoundError:
            pass
        # Make what is missing where the path leads (a dangling link's target, say). The
        # string resolution may race a step changing the directory; the descriptor walk
        # of _make_path still keeps every creation inside the root.
        inside = relative_to_root(root, resolve_in_root(root, path))
        _make_path(root_fd, inside, directory=True, created=None)
        return open_in_root(root_fd, path, os.O_PATH)
    finally:
        os.close(root_fd)


def _make_path(root_fd: int, path: str, *, directory: bool, created: list[tuple[str, str, int, int, bool]] | None) -> None:
    """Create the missing components of `path` (symlinks already resolved) inside the root.

    Each component is made through a descriptor of its parent opened inside the root,
    so nothing is ever created outside it. `created` collects (parent, name, dev, ino,
    is_dir) of each new entry, in creation order.
    """
    parts = [p for p in clean(path).split("/") if p]
    parent = "/"
    for index, name in enumerate(parts):
        last = index == len(parts) - 1
        parent_fd = open_in_root(root_fd, parent, os.O_PATH | os.O_DIRECTORY)
        try:
            make_dir = directory or not last
            try:
                if make_dir:
                    os.mkdir(name, 0o755, dir_fd=parent_fd)
                else:
                    os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=parent_fd))
            except FileExistsError:
                pass
            else:
                if created is not None:
                    st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                    created.append((parent, name, st.st_dev, st.st_ino, make_dir))
        finally:
            os.close(parent_fd)
        parent = parent.rstrip("/") + "/" + name


class MountStubs:
    """Mountpoints made in a rootfs for one run, removed (only if still ours and empty) after it."""

    def __init__(self, rootfs: str) -> None:
        self.rootfs = os.path.abspath(rootfs)
        self.created: list[tuple[str, str, int, int, bool]] = []

    def make_base(self, extra_targets: list[str]) -> None:
        """The runtime's own mountpoints (/proc, /dev, /sys, /etc/hosts, /etc/resolv.conf)."""
        from engine.runtime.mountpoints import BASE_MOUNTPOINTS

        for target, directory in BASE_MOUNTPOINTS:
            if not any(target == t or target.startswith(t.rstrip("/") + "/") for t in extra_targets):
                self.make(target, directory=directory)

    def make_all(self, mounts: list[RuntimeMount]) -> None:
        """Stubs for `mounts` (sorted, parents first), except where the runtime must make them."""
        done: list[str] = []
        for mount in mounts:
            target = clean(mount.target)
            under_other = any(target == t or target.startswith(t.rstrip("/") + "/") for t in done)
            done.append(target)
            if under_other or any(target == k or target.startswith(k + "/") for k in KERNEL_MOUNTS):
                continue
            directory = not isinstance(mount, BindMount) or os.path.isdir(mount.source)
            self.make(target, directory=directory)

    def make(self, target: str, *, directory: bool) -> None:
        try:
            inside = relative_to_root(self.rootfs, resolve_in_root(self.rootfs, target))
        except ContextError as exc:
            raise MountError(f"mount target {target}: {exc}") from None
        root_fd = os.open(self.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                os.close(open_in_root(root_fd, inside, os.O_PATH))
                return  # already there (the image has it)
            except FileNotFoundError:
                pass
            _make_path(root_fd, inside, directory=directory, created=self.created)
        except OSError as exc:
            raise MountError(f"cannot create mountpoint {target}: {exc.strerror}") from None
        finally:
            os.close(root_fd)

    def remove(self) -> None:
        """Deepest first; an entry is removed only if it is the same inode and still empty."""
        if not self.created:
            return
        try:
            root_fd = os.open(self.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            for parent, name, dev, ino, is_dir in reversed(self.created):
                try:
                    parent_fd = open_in_root(root_fd, parent, os.O_PATH | os.O_DIRECTORY)
                except OSError:
                    continue
                try:
                    st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                    if (st.st_dev, st.st_ino) != (dev, ino):
                        continue
                    if is_dir and stat.S_ISDIR(st.st_mode):
                        os.rmdir(name, dir_fd=parent_fd)
                    elif not is_dir and stat.S_ISREG(st.st_mode) and st.st_size == 0:
                        os.unlink(name, dir_fd=parent_fd)
                except OSError:
                    pass
                finally:
                    os.close(parent_fd)
        finally:
            os.close(root_fd)
            self.created = []
