"""Container init for the builtin runtime: a small OCI runtime in one stdlib file.

Started as `python -I -S nsinit.py <ctl-fd>` (or imported by a `-c` bootstrap, to use cached bytecode) by `engine.runtime.builtin`, never
imported by the engine: forking the multi-threaded engine and running Python in
the child is unsafe, so every container gets this fresh single-threaded process.
It must stay self-contained (stdlib builtins + ctypes; `-I -S` drops every path
but the stdlib's) and cheap to start, so it avoids `json`, `signal`, `struct`.

Protocol: the engine writes an 8-byte big-endian length and a `marshal` of the
OCI config document (the subset `engine.runtime.ocispec` generates) to the control
pipe and keeps its end open. Closing it — on cancel, or because the engine died —
makes this process SIGKILL the container's pid 1, which takes the whole pid
namespace with it. Errors before exec are written to stderr as one line and end
the process with 127 (not found), 126 (cannot execute) or 125 (setup failed).

Long-lived containers (`shipyard run`) add two fds: a report pipe, where the
helper writes `pid N START` (its /proc start time) and then `ok` once the command was exec'd or `fail STATUS`
and the setup error (so the starter reports it like `runc create` does), and a
console socket that receives the pty master (runc's --console-socket protocol)
when the process asked for a terminal. Namespaces given by path (a network
namespace the starter made) are joined with setns before the rest are unshared.
`exec_main` starts another process in a running container: it joins the
namespaces and root of its pid 1, forks into its pid namespace, and supervises
the process the same way.

Sequence: unshare(mount, uts, ipc, pid [, net]); make / rprivate; fork. The
parent waits, forwards signals, and exits with the child's status (128+N for a
signal). The child is pid 1 of the new namespace: it binds the rootfs on itself,
mounts /proc, a tmpfs /dev (host device nodes bound in), devpts, shm, mqueue, /sys,
the /etc files and extra mounts (each destination found and made by descriptor
inside the root, each bind attached with open_tree/move_mount) — all
nodev when the spec's device rules deny everything, the builtin stand-in for the
device cgroup runc sets up —
pivots into the root, masks Docker's masked paths, drops capabilities, switches
user, changes to the cwd and execs the command found on the container's PATH.
"""

import ctypes
import marshal
import os
import select
import sys

import _signal

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
# mnt last: it changes what /proc/<pid> paths mean. (Rootless containers need no user
# namespace of their own: every rootless command shares one, see engine.rootless.)
SETNS_ORDER = ("ipc", "uts", "net", "pid", "mnt")
SETNS_FLAGS = {"ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS, "net": CLONE_NEWNET, "pid": CLONE_NEWPID, "mnt": CLONE_NEWNS}
TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
NAMESPACE_FLAGS = {
    "mount": CLONE_NEWNS,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
}

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2
SYS_MOUNT_SETATTR = 442  # the same number on every architecture
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80

# statvfs f_flag bits that must survive a bind remount.
ST_TO_MS = ((1, MS_RDONLY), (2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (16, MS_SYNCHRONOUS),
            (64, MS_MANDLOCK), (1024, MS_NOATIME), (2048, MS_NODIRATIME), (4096, MS_RELATIME))

MOUNT_FLAGS = {
    "ro": (True, MS_RDONLY), "rw": (False, MS_RDONLY),
    "nosuid": (True, MS_NOSUID), "suid": (False, MS_NOSUID),
    "nodev": (True, MS_NODEV), "dev": (False, MS_NODEV),
    "noexec": (True, MS_NOEXEC), "exec": (False, MS_NOEXEC),
    "sync": (True, MS_SYNCHRONOUS), "async": (False, MS_SYNCHRONOUS),
    "dirsync": (True, MS_DIRSYNC),
    "noatime": (True, MS_NOATIME), "atime": (False, MS_NOATIME),
    "nodiratime": (True, MS_NODIRATIME), "diratime": (False, MS_NODIRATIME),
    "relatime": (True, MS_RELATIME), "norelatime": (False, MS_RELATIME),
    "strictatime": (True, MS_STRICTATIME), "nostrictatime": (False, MS_STRICTATIME),
    "bind": (True, MS_BIND), "rbind": (True, MS_BIND | MS_REC),
}

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522

SIGHUP, SIGINT, SIGQUIT, SIGKILL, SIGUSR1, SIGUSR2, SIGPIPE, SIGTERM, SIGXFSZ = 1, 2, 3, 9, 10, 12, 13, 15, 25
FORWARDED_SIGNALS = (SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGTERM)

RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}

CAP_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_SYMLINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)

SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

STATUS_NOT_FOUND = 127
STATUS_CANNOT_EXECUTE = 126
STATUS_SETUP_FAILED = 125
MAX_SYMLINKS = 255

libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """A container that cannot start; `status` is what the process exits with."""

    def __init__(self, message, status=STATUS_SETUP_FAILED):
        super().__init__(message)
        self.status = status


# `_socket`, imported before pivot_root/chroot (the container has no Python) and only
# when a terminal is asked for, so a build step never pays for it.
SOCKET_MODULE = [None]

# Where setup errors go: stderr for a build step; the exec-failure pipe (see
# `report_start`) for a long-lived container, whose starter reports them itself.
ERROR_FD = [2]


def fail(message, status):
    try:
        os.write(ERROR_FD[0], ("shipyard: unable to start container process: " + message + "\n").encode("utf-8", "replace"))
    finally:
        os._exit(status)


def check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise SetupError(what + ": " + os.strerror(err))


def _b(path):
    return None if path is None else os.fsencode(path)


def mount(source, target, fstype, flags, data=None):
    check(libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
          "mount " + (fstype or "bind") + " on " + target)


def prctl(option, arg):
    return libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                      ctypes.c_ulong(0))


# --- paths inside the root ---------------------------------------------------------
#
# Every mount target is found by descriptor, never by a path string: a directory in
# the root may be shared with other running containers (a cache mount), which can swap
# a component for a symlink to a host path between a string check and its use.


def walk_in_root(root_fd, path, create=None):
    """An O_PATH descriptor of `path` inside the directory `root_fd`, as if it were `/`.

    One O_NOFOLLOW open per component: a symlink is read and followed *inside* the
    root (an absolute target restarts at it), `..` returns to the directory we came
    from and never climbs above the root. `create` ("dir" or "file") makes what is
    missing: parents as directories, the last component as `create` says.
    """
    stack = []
    pending = [part for part in path.split("/") if part and part != "."]
    pending.reverse()
    links = 0
    tries = 0
    try:
        while pending:
            part = pending.pop()
            if part == "..":
                if stack:
                    os.close(stack.pop())
                continue
            current = stack[-1] if stack else root_fd
            try:
                fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            except FileNotFoundError:
                tries += 1
                if create is None or tries > 64:
                    raise
                try:
                    if pending or create == "dir":
                        os.mkdir(part, 0o755, dir_fd=current)
                    else:
                        os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                         0o644, dir_fd=current))
                except FileExistsError:
                    pass
                pending.append(part)  # open what is there now (made by us, or by a racing step)
                continue
            mode = os.fstat(fd).st_mode
            if (mode & 0o170000) == 0o120000:  # a symlink: interpret it inside the root
                os.close(fd)
                links += 1
                if links > MAX_SYMLINKS:
                    raise SetupError("too many levels of symbolic links in " + path)
                target = os.readlink(part, dir_fd=current)
                if target.startswith("/"):
                    while stack:
                        os.close(stack.pop())
                pending.extend(reversed([p for p in target.split("/") if p and p != "."]))
                continue
            if pending and (mode & 0o170000) != 0o040000:
                os.close(fd)
                raise NotADirectoryError(20, "not a directory")
            stack.append(fd)
        return stack.pop() if stack else os.dup(root_fd)
    finally:
        while stack:
            os.close(stack.pop())


def fd_path(fd):
    """A path naming exactly what `fd` refers to (the kernel follows the magic link, not a name)."""
    return "/proc/self/fd/" + str(fd)


# --- mounts --------------------------------------------------------------------------


def parse_options(options):
    flags = 0
    data = []
    for option in options:
        known = MOUNT_FLAGS.get(option)
        if known is None:
            data.append(option)
        elif known[0]:
            flags |= known[1]
        else:
            flags &= ~known[1]
    return flags, ",".join(data) or None


def preserved_flags(path):
    try:
        st_flags = os.statvfs(path).f_flag
    except OSError:
        return 0
    flags = 0
    for st_bit, ms_bit in ST_TO_MS:
        if st_flags & st_bit:
            flags |= ms_bit
    return flags


def remount_bind(path, flags):
    """Apply per-mount flags (ro, nosuid, …) to a bind mount, keeping the ones it has."""
    wanted = flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME)
    mount(None, path, None, MS_BIND | MS_REMOUNT | preserved_flags(path) | wanted)


def open_host_devices():
    """O_PATH handles on the host's device nodes, taken before any mount can hide them."""
    return {name: os.open("/dev/" + name, os.O_PATH | os.O_CLOEXEC) for name in DEVICES}


def set_mount_attrs(path, nodev, readonly):
    """nodev/ro on a mount and everything below it (mount_setattr), else on its top."""
    wanted = (MOUNT_ATTR_NODEV if nodev else 0) | (MOUNT_ATTR_RDONLY if readonly else 0)
    if not wanted:
        return
    attr = (ctypes.c_uint64 * 4)(wanted, 0, 0, 0)  # attr_set, attr_clr, propagation, userns_fd
    if libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), _b(path),
                    ctypes.c_uint(AT_RECURSIVE), attr, ctypes.c_size_t(32)) == 0:
        return
    remount_bind(path, (MS_NODEV if nodev else 0) | (MS_RDONLY if readonly else 0))


def populate_dev(dev, host_devices):
    """runc's default devices (bound from the host, so this also works unprivileged)."""
    for name in DEVICES:
        node = dev + "/" + name
        os.close(os.open(node, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
        mount("/proc/self/fd/" + str(host_devices[name]), node, None, MS_BIND)
    for name, target in DEV_SYMLINKS:
        os.symlink(target, dev + "/" + name)


MOUNT_ATTRS = ((MS_RDONLY, MOUNT_ATTR_RDONLY), (MS_NOSUID, MOUNT_ATTR_NOSUID), (MS_NODEV, MOUNT_ATTR_NODEV),
               (MS_NOEXEC, MOUNT_ATTR_NOEXEC), (MS_NODIRATIME, MOUNT_ATTR_NODIRATIME))
ATIME_ATTRS = ((MS_NOATIME, MOUNT_ATTR_NOATIME), (MS_STRICTATIME, MOUNT_ATTR_STRICTATIME), (MS_RELATIME, 0))


def syscall(number, *args):
    result = libc.syscall(ctypes.c_long(number), *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def attach_bind(source, target_fd, flags, nodev):
    """Bind `source` on the mountpoint `target_fd`: cloned with open_tree, its flags set
    with mount_setattr while it is still detached, attached with move_mount — so the
    mount is never anywhere but where the descriptor points, and never writable when
    it should be read-only."""
    tree = syscall(SYS_OPEN_TREE, ctypes.c_int(AT_FDCWD), _b(source),
                   ctypes.c_uint(OPEN_TREE_CLONE | os.O_CLOEXEC | (AT_RECURSIVE if flags & MS_REC else 0)))
    try:
        attr_set = MOUNT_ATTR_NODEV if nodev else 0
        for ms_flag, attr in MOUNT_ATTRS:
            if flags & ms_flag:
                attr_set |= attr
        attr_clr = 0
        for ms_flag, attr in ATIME_ATTRS:
            if flags & ms_flag:
                attr_set, attr_clr = (attr_set & ~MOUNT_ATTR__ATIME) | attr, MOUNT_ATTR__ATIME
        pending = attr_set or attr_clr
        if pending:
            attr = (ctypes.c_uint64 * 4)(attr_set, attr_clr, 0, 0)  # attr_set, attr_clr, propagation, userns_fd
            try:
                syscall(SYS_MOUNT_SETATTR, ctypes.c_int(tree), b"", ctypes.c_uint(AT_EMPTY_PATH | AT_RECURSIVE),
                        attr, ctypes.c_size_t(32))
                pending = False
            except OSError as exc:
                if exc.errno != 38:  # ENOSYS (before Linux 5.12): remount once attached, below
                    raise
        syscall(SYS_MOVE_MOUNT, ctypes.c_int(tree), b"", ctypes.c_int(target_fd), b"",
                ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH))
        if pending:  # `tree` now names the attached mount itself
            remount_bind(fd_path(tree), flags | (MS_NODEV if nodev else 0))
    finally:
        os.close(tree)


def mount_entry(root_fd, entry, host_devices, nodev):
    """One OCI mount, its target found and made inside the root by descriptor
    (`walk_in_root`). With `nodev` (the spec denies all devices) nothing mounted here
    can serve device nodes: without a device cgroup that is what keeps a root
    process holding CAP_MKNOD from opening the host's disks."""
    destination = entry["destination"]
    kind = entry.get("type") or "bind"
    source = entry.get("source") or kind
    flags, data = parse_options(entry.get("options") or ())
    if kind == "bind":
        flags |= MS_BIND
    elif nodev and kind != "devpts":
        flags |= MS_NODEV
    bind = bool(flags & MS_BIND)
    directory = os.path.isdir(source) if bind else True
    if bind and not os.path.exists(source):
        raise SetupError("mount source " + source + " does not exist")
    try:
        target_fd = walk_in_root(root_fd, destination, "dir" if directory else "file")
    except OSError as exc:
        raise SetupError("cannot create mountpoint " + destination + ": " + os.strerror(exc.errno or 0))
    try:
        if bind:
            try:
                attach_bind(source, target_fd, flags, nodev)
            except OSError as exc:
                raise SetupError("mount " + source + " on " + destination + ": " + os.strerror(exc.errno or 0))
        else:
            mount(source, fd_path(target_fd), kind, flags, data)
    finally:
        os.close(target_fd)
    if destination.rstrip("/") == "/dev" and kind == "tmpfs":
        dev_fd = walk_in_root(root_fd, destination)  # the tmpfs just mounted there
        try:
            populate_dev(fd_path(dev_fd), host_devices)
        finally:
            os.close(dev_fd)


def mask_paths(masked, readonly):
    """Docker's masked and read-only /proc and /sys paths (run after pivot_root)."""
    for path in masked:
        try:
            is_dir = os.path.isdir(path)
            if not os.path.lexists(path):
                continue
        except OSError:
            continue
        if is_dir:
            mount("tmpfs", path, "tmpfs", MS_RDONLY)
        else:
            mount("/dev/null", path, None, MS_BIND)
    for path in readonly:
        if not os.path.lexists(path):
            continue
        mount(path, path, None, MS_BIND | MS_REC)
        remount_bind(path, MS_RDONLY)


def loopback_up():
    """Bring `lo` up in a new network namespace (SIOCGIFFLAGS / SIOCSIFFLAGS)."""
    sock = libc.socket(2, 2, 0)  # AF_INET, SOCK_DGRAM
    if sock < 0:
        raise SetupError("socket: " + os.strerror(ctypes.get_errno()))
    try:
        ifreq = ctypes.create_string_buffer(b"lo", 40)
        check(libc.ioctl(sock, ctypes.c_ulong(0x8913), ifreq), "SIOCGIFFLAGS lo")
        flags = int.from_bytes(ifreq.raw[16:18], "little") | 0x1 | 0x40  # IFF_UP | IFF_RUNNING
        ctypes.memmove(ctypes.addressof(ifreq) + 16, flags.to_bytes(2, "little"), 2)
        check(libc.ioctl(sock, ctypes.c_ulong(0x8914), ifreq), "SIOCSIFFLAGS lo")
    finally:
        os.close(sock)


def pivot_into(root):
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise SetupError("pivot_root: unsupported machine " + os.uname().machine)
    os.chdir(root)
    check(libc.syscall(ctypes.c_long(number), b".", b"."), "pivot_root")
    # The old root is now stacked under the new one at "."; detach it.
    check(libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")


# --- credentials ---------------------------------------------------------------------


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def cap_mask(names):
    mask = 0
    for name in names:
        if name in CAP_NAMES:
            mask |= 1 << CAP_NAMES.index(name)
    return mask


def drop_bounding(keep_mask):
    with open("/proc/sys/kernel/cap_last_cap", "rb") as last:
        last_cap = int(last.read())
    for cap in range(last_cap + 1):
        if not keep_mask >> cap & 1 and prctl(PR_CAPBSET_DROP, cap) != 0:
            raise SetupError("drop capability " + str(cap) + ": " + os.strerror(ctypes.get_errno()))


def set_capabilities(effective_mask, permitted_mask):
    header = CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (CapData * 2)()
    data[0].effective = effective_mask & 0xFFFFFFFF
    data[0].permitted = permitted_mask & 0xFFFFFFFF
    data[1].effective = effective_mask >> 32
    data[1].permitted = permitted_mask >> 32
    check(libc.capset(ctypes.byref(header), data), "capset")
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def set_rlimits(rlimits):
    for rlimit in rlimits:
        resource = RLIMITS.get(rlimit["type"])
        if resource is None:
            raise SetupError("unknown rlimit " + rlimit["type"])
        values = (ctypes.c_ulong * 2)(rlimit["soft"], rlimit["hard"])
        check(libc.setrlimit(resource, values), "setrlimit " + rlimit["type"])


# --- exec ----------------------------------------------------------------------------


def parse_env(entries):
    env = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if sep and key:
            env[key] = value
    return env


def executable(path):
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_mode & 0o170000) == 0o100000 and bool(st.st_mode & 0o111)


def look_path(name, env):
    """Like Go's exec.LookPath, which runc uses: the container's PATH, inside its root."""
    if "/" in name:
        try:
            st = os.stat(name)
        except OSError as exc:
            raise SetupError('exec: "' + name + '": ' + os.strerror(exc.errno or 0), STATUS_NOT_FOUND)
        if (st.st_mode & 0o170000) == 0o040000:
            raise SetupError('exec: "' + name + '": is a directory', STATUS_CANNOT_EXECUTE)
        if not executable(name):
            raise SetupError('exec: "' + name + '": permission denied', STATUS_CANNOT_EXECUTE)
        return name
    for directory in env.get("PATH", "").split(":"):
        candidate = (directory or ".") + "/" + name
        if executable(candidate):
            return candidate
    raise SetupError('exec: "' + name + '": executable file not found in $PATH', STATUS_NOT_FOUND)


def change_directory(cwd, required):
    try:
        os.chdir(cwd)
    except FileNotFoundError:
        try:
            os.makedirs(cwd, 0o755, exist_ok=True)
            os.chdir(cwd)
        except OSError as exc:
            raise SetupError("chdir to cwd " + cwd + ": " + os.strerror(exc.errno or 0))
    except PermissionError:
        if required:
            raise SetupError("chdir to cwd " + cwd + ": permission denied")
        return False
    except OSError as exc:
        raise SetupError("chdir to cwd " + cwd + ": " + os.strerror(exc.errno or 0))
    # A cwd outside the container's root (CVE-2024-21626) reads as unreachable.
    try:
        where = os.getcwd()
    except OSError:
        where = "(unreachable)"
    if not where.startswith("/"):
        raise SetupError("current working directory is outside of the container root")
    return True


# --- the container's pid 1 -------------------------------------------------------------


def init_container(config, console):
    root = os.path.realpath(config["root"]["path"])
    process = config["process"]
    namespaces = [ns["type"] for ns in config["linux"].get("namespaces", ()) if not ns.get("path")]
    rules = config["linux"].get("resources", {}).get("devices", ())
    nodev = not any(rule.get("allow") for rule in rules)
    host_devices = open_host_devices()
    mount(root, root, None, MS_BIND | MS_REC)
    set_mount_attrs(root, nodev, False)
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # the bind just made
    try:
        for entry in config.get("mounts", ()):
            mount_entry(root_fd, entry, host_devices, nodev)
    finally:
        os.close(root_fd)
    for fd in host_devices.values():
        os.close(fd)
    if "network" in namespaces:
        loopback_up()
    hostname = config.get("hostname")
    if hostname and "uts" in namespaces:
        raw = hostname.encode()
        check(libc.sethostname(raw, len(raw)), "sethostname")
    pivot_into(root)
    mask_paths(config["linux"].get("maskedPaths", ()), config["linux"].get("readonlyPaths", ()))
    if config["root"].get("readonly"):
        remount_bind("/", MS_RDONLY)
    become_process(process, console)


def setup_console(process, console):
    """A pty from the container's own devpts: the master goes to the starter over
    the console socket (runc's --console-socket protocol), the slave becomes the
    process's controlling terminal and stdio."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    zero = ctypes.c_int(0)
    check(libc.ioctl(master, ctypes.c_ulong(TIOCSPTLCK), ctypes.byref(zero)), "unlock pty")
    number = ctypes.c_uint(0)
    check(libc.ioctl(master, ctypes.c_ulong(TIOCGPTN), ctypes.byref(number)), "get pty number")
    slave = os.open("/dev/pts/" + str(number.value), os.O_RDWR | os.O_NOCTTY)
    size = process.get("consoleSize") or {}
    if size.get("height") and size.get("width"):
        winsize = (ctypes.c_ushort * 4)(size["height"], size["width"], 0, 0)
        libc.ioctl(slave, ctypes.c_ulong(TIOCSWINSZ), winsize)
    user = process.get("user", {})
    os.fchown(slave, user.get("uid", 0), user.get("gid", 0))
    sock = SOCKET_MODULE[0].socket(fileno=console)
    try:
        sock.sendmsg([b"/dev/ptmx"], [(1, 1, master.to_bytes(4, sys.byteorder))])  # SOL_SOCKET, SCM_RIGHTS
    finally:
        sock.close()
    os.close(master)
    os.setsid()
    check(libc.ioctl(slave, ctypes.c_ulong(TIOCSCTTY), ctypes.c_int(0)), "set controlling terminal")
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def setgroups_denied():
    """A single-id rootless namespace denies setgroups(2) (its gid_map was written
    unprivileged): the process keeps the empty group list it has."""
    try:
        with open("/proc/self/setgroups", "rb") as handle:
            return handle.read().strip() == b"deny"
    except OSError:
        return False


def id_mapped(number, map_name):
    """Whether `number` exists in this process's user namespace (always, outside one)."""
    try:
        with open("/proc/self/" + map_name, "rb") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return True
    for line in lines:
        fields = line.split()
        if len(fields) == 3 and int(fields[0]) <= number < int(fields[0]) + int(fields[2]):
            return True
    return False


def become_process(process, console):
    """Limits, console, capabilities, user, cwd, then exec: the part init and exec share."""
    set_rlimits(process.get("rlimits", ()))
    os.umask(0o022)
    if process.get("terminal"):
        if console < 0:
            raise SetupError("a terminal was asked for without a console socket")
        setup_console(process, console)
    caps = process.get("capabilities", {})
    drop_bounding(cap_mask(caps.get("bounding", ())))
    cwd = process.get("cwd") or "/"
    in_cwd = change_directory(cwd, required=False)
    user = process.get("user", {})
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    try:
        groups = list(user.get("additionalGids", ()))
        if groups or not setgroups_denied():
            os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        unmapped = [kind + " " + str(number) for kind, number, path in
                    (("uid", uid, "uid_map"), ("gid", gid, "gid_map")) + tuple(("gid", g, "gid_map") for g in groups)
                    if not id_mapped(number, path)]
        if unmapped:
            raise SetupError("set user " + str(uid) + ":" + str(gid) + ": " + ", ".join(unmapped)
                             + " not mapped in the rootless user namespace (see /etc/subuid and /etc/subgid)")
        raise SetupError("set user " + str(uid) + ":" + str(gid) + ": " + os.strerror(exc.errno or 0))
    if uid == 0:
        set_capabilities(cap_mask(caps.get("effective", ())), cap_mask(caps.get("permitted", ())))
    # A credential change clears the parent-death signal; set it again.
    prctl(PR_SET_PDEATHSIG, SIGKILL)
    if not in_cwd:
        change_directory(cwd, required=True)
    args = list(process["args"])
    env = parse_env(process.get("env", ()))
    path = look_path(args[0], env)
    for signum in (SIGPIPE, SIGXFSZ):
        _signal.signal(signum, _signal.SIG_DFL)  # Python ignores them; the command must not
    keep = ERROR_FD[0]
    if keep > 2:  # the exec-failure pipe is close-on-exec: it closes itself on success
        os.closerange(3, keep)
        os.closerange(keep + 1, 1 << 20)
    else:
        os.closerange(3, 1 << 20)
    try:
        os.execve(path, args, env)
    except OSError as exc:
        status = STATUS_NOT_FOUND if exc.errno == 2 else STATUS_CANNOT_EXECUTE
        raise SetupError('exec: "' + args[0] + '": ' + os.strerror(exc.errno or 0), status)


def run_guarded(body, alive_r, alive_w, closing):
    """The forked child: arm the death signal, check the parent, run `body`; never return."""
    try:
        os.close(alive_w)
        for fd in closing:
            if fd >= 0:
                os.close(fd)
        prctl(PR_SET_PDEATHSIG, SIGKILL)
        # If the parent died before the death signal was armed, nobody would kill us.
        poller = select.poll()
        poller.register(alive_r, select.POLLIN)
        if poller.poll(0):
            os._exit(STATUS_SETUP_FAILED)
        os.close(alive_r)
        body()
    except SetupError as exc:
        fail(str(exc), exc.status)
    except OSError as exc:
        fail(str(exc), STATUS_SETUP_FAILED)
    except BaseException as exc:
        fail(type(exc).__name__ + ": " + str(exc), STATUS_SETUP_FAILED)
    finally:
        os._exit(STATUS_SETUP_FAILED)  # never fall back into the parent's code after fork


def read_config(ctl):
    def read_exactly(count):
        chunks = []
        while count:
            chunk = os.read(ctl, count)
            if not chunk:
                raise SetupError("control pipe closed before the config arrived")
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    size = int.from_bytes(read_exactly(8), "big")
    return marshal.loads(read_exactly(size))


def supervise(pid, ctl):
    """Wait for pid 1, forwarding signals; SIGKILL it when the control pipe closes
    (unless the starter wrote `detach` on it first)."""
    pidfd = os.pidfd_open(pid)

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED_SIGNALS:
        _signal.signal(signum, forward)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(ctl, select.POLLIN | select.POLLHUP)
    while True:
        for fd, _event in poller.poll():
            if fd == pidfd:
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                os._exit(code if code >= 0 else 128 - code)
            data = os.read(ctl, 64)
            if not data:
                os.kill(pid, SIGKILL)
                os.waitpid(pid, 0)
                os._exit(128 + SIGKILL)
            if b"detach" in data:  # `exec -d`: the starter leaves; the process lives on
                poller.unregister(ctl)


def write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def report_start(pid, err_r, report):
    """Tell the starter the pid, then whether the exec happened: the child's
    close-on-exec error pipe closes empty on a successful exec, or carries the
    setup error (whose status is the child's exit status)."""
    # The start time is read here, where the child cannot have been reaped yet.
    write_all(report, ("pid " + str(pid) + " " + str(read_start_time(pid)) + "\n").encode())
    chunks = []
    while True:
        chunk = os.read(err_r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(err_r)
    if chunks:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        code = code if code >= 0 else 128 - code
        write_all(report, ("fail " + str(code) + "\n").encode() + b"".join(chunks))
        os.close(report)
        os._exit(code)
    write_all(report, b"ok\n")
    os.close(report)


def join_namespace_paths(config):
    """setns into the namespaces given by path (e.g. a network namespace made by
    the starter, which publishes ports into it); the flags left to unshare."""
    flags = 0
    for ns in config["linux"].get("namespaces", ()):
        path = ns.get("path")
        if not path:
            flags |= NAMESPACE_FLAGS[ns["type"]]
            continue
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            check(libc.setns(fd, ctypes.c_int(NAMESPACE_FLAGS[ns["type"]])), "join " + ns["type"] + " namespace " + path)
        finally:
            os.close(fd)
    return flags


def load_socket_module(console):
    if console >= 0:
        import _socket

        SOCKET_MODULE[0] = _socket


def main(ctl_arg, report_arg="-1", console_arg="-1"):
    """Run a container. With a report fd (long-lived containers) the pid and the
    exec's success or failure are reported there; `console_arg` is the console
    socket for a process that asked for a terminal."""
    report, console = int(report_arg), int(console_arg)
    load_socket_module(console)
    if report >= 0:
        ERROR_FD[0] = report  # errors before the fork go to the starter, not the container's stderr
    try:
        ctl = int(ctl_arg)
        config = read_config(ctl)
        flags = join_namespace_paths(config)
        check(libc.unshare(ctypes.c_int(flags)), "unshare")
        # Nothing mounted for the container may propagate back to the host.
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        err_r, err_w = os.pipe() if report >= 0 else (-1, -1)
        if report >= 0:
            # The child shares our mount namespace, so its pivot_root moves our root
            # too: read its /proc/PID/stat through the host's /proc opened now.
            HOST_PROC[0] = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        alive_r, alive_w = os.pipe()
        pid = os.fork()
    except SetupError as exc:
        fail(str(exc), exc.status)
    except Exception as exc:
        fail(type(exc).__name__ + ": " + str(exc), STATUS_SETUP_FAILED)
    if pid == 0:
        if err_w >= 0:
            ERROR_FD[0] = err_w
        closing = (ctl, err_r, report, -1 if HOST_PROC[0] is None else HOST_PROC[0])
        run_guarded(lambda: init_container(config, console), alive_r, alive_w, closing)
    os.close(alive_r)
    if console >= 0:
        os.close(console)
    if report >= 0:
        os.close(err_w)
        report_start(pid, err_r, report)
    supervise(pid, ctl)


# --- exec: another process in a running container -----------------------------------------


# The host's /proc, opened before `exec_main` joins the container's mount namespace
# (whose /proc shows the container's pid namespace, not ours).
HOST_PROC = [None]


def read_start_time(pid):
    fd = os.open(str(pid) + "/stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=HOST_PROC[0]) if HOST_PROC[0] is not None \
        else os.open("/proc/" + str(pid) + "/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    return int(data[data.rfind(b")") + 2:].split()[19])


def open_target(pid, pid_start):
    """fds of the target's namespaces and root, checked to belong to (pid, pid_start)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        raise SetupError("the container is not running")
    try:
        fds = {}
        try:
            for name in SETNS_ORDER:
                fds[name] = os.open("/proc/" + str(pid) + "/ns/" + name, os.O_RDONLY | os.O_CLOEXEC)
            fds["root"] = os.open("/proc/" + str(pid) + "/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            start = read_start_time(pid)
        except OSError:
            raise SetupError("the container is not running")
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if start != pid_start or poller.poll(0):
            raise SetupError("the container is not running")
        return fds
    finally:
        os.close(pidfd)


def exec_main(ctl_arg, report_arg, console_arg):
    """Start `process` inside the namespaces and root of the running container
    whose pid 1 is `pid` (nsenter's way: setns each namespace, fork to enter the
    pid namespace, chroot into the container's root), then supervise it."""
    report, console = int(report_arg), int(console_arg)
    ERROR_FD[0] = report
    load_socket_module(console)
    try:
        ctl = int(ctl_arg)
        config = read_config(ctl)
        fds = open_target(config["pid"], config["pidStart"])
        HOST_PROC[0] = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for name in SETNS_ORDER:
            check(libc.setns(fds[name], ctypes.c_int(SETNS_FLAGS[name])), "join " + name + " namespace")
            os.close(fds[name])
        err_r, err_w = os.pipe()
        alive_r, alive_w = os.pipe()
        pid = os.fork()
    except SetupError as exc:
        fail(str(exc), exc.status)
    except Exception as exc:
        fail(type(exc).__name__ + ": " + str(exc), STATUS_SETUP_FAILED)
    if pid == 0:
        ERROR_FD[0] = err_w

        def body():
            os.fchdir(fds["root"])
            os.chroot(".")
            os.close(fds["root"])
            become_process(config["process"], console)

        run_guarded(body, alive_r, alive_w, (ctl, err_r, report))
    os.close(alive_r)
    os.close(fds["root"])
    if console >= 0:
        os.close(console)
    os.close(err_w)
    report_start(pid, err_r, report)
    supervise(pid, ctl)


if __name__ == "__main__":
    main(*sys.argv[1:])
