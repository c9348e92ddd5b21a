"""Rootless mode end to end: unprivileged users import, build, export and run containers.

Two real users: `shipyard-test` has /etc/subuid and /etc/subgid ranges (its
namespace maps uid 0 to itself and 1..65536 to its subordinate ids, through
newuidmap/newgidmap), `shipyard-nosub` has none (a one-id map: only uid 0
exists inside). The test (root) creates them when missing and runs the CLI as
them with `setpriv`, with the repo's venv interpreter and a state root in a
directory the user owns. Where the interpreter lives under a directory the user
cannot enter (here /root, mode 0700), the command runs in a private mount
namespace in which only the interpreter's tree is visible there.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.rootless import PAUSE_DIR, PAUSE_FILE, subordinate_ranges
from tests.helpers import REPO, require_root

SUBID_USER = "shipyard-test"
NOSUB_USER = "shipyard-nosub"
SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"
RANGE = 65536


# --- users -------------------------------------------------------------------------------


def _free_subordinate_start() -> int:
    end = 100000
    for path in (SUBUID, SUBGID):
        try:
            lines = Path(path).read_text().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split(":")
            if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                end = max(end, int(fields[1]) + int(fields[2]))
    return end


def ensure_user(name: str, *, subids: bool) -> pwd.struct_passwd:
    """The user, created if missing, with (or without) subordinate id ranges."""
    require_root()
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        # A system user (-r) gets no subordinate ids; an ordinary one gets them from login.defs.
        subprocess.run(["useradd", "-m", "-s", "/bin/sh"] + ([] if subids else ["-r"]) + [name], check=True)
        entry = pwd.getpwnam(name)
    have = [subordinate_ranges(path, name, entry.pw_uid) for path in (SUBUID, SUBGID)]
    if subids and not all(have):
        start = _free_subordinate_start()
        span = f"{start}-{start + RANGE - 1}"
        subprocess.run(["usermod", "--add-subuids", span, "--add-subgids", span, name], check=True)
    if not subids:
        for flag, ranges in (("--del-subuids", have[0]), ("--del-subgids", have[1])):
            for begin, count in ranges:
                subprocess.run(["usermod", flag, f"{begin}-{begin + count - 1}", name], check=True)
    return entry


# --- running the CLI as the user ---------------------------------------------------------------


def _unreachable_ancestor(path: str) -> tuple[str, str] | None:
    """(the first ancestor others cannot enter, its child on the way to `path`), if any."""
    parts = Path(path).parts
    for depth in range(1, len(parts) - 1):
        ancestor = os.path.join(*parts[: depth + 1])
        if not os.stat(ancestor).st_mode & 0o001:
            return ancestor, parts[depth + 1]
    return None


def _command(user: pwd.struct_passwd, env: dict[str, str], argv: list[str]) -> list[str]:
    python = os.path.realpath(sys.executable)
    for path in (python, str(REPO)):
        blocked = _unreachable_ancestor(path)
        assert blocked is None or path == python, f"{path} must be readable by other users for this test"
    setpriv = [
        "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--reset-env",
        "env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m", "engine.cli", *argv,
    ]
    blocked = _unreachable_ancestor(python)
    if blocked is None:
        return setpriv
    closed, child = blocked
    # Only `closed/child` (the interpreter's tree) shows through a tmpfs over `closed`.
    script = f"""set -e
keep=$(mktemp -d)
mount --bind {shlex.quote(os.path.join(closed, child))} "$keep"
mount -t tmpfs -o mode=755 tmpfs {shlex.quote(closed)}
mkdir {shlex.quote(os.path.join(closed, child))}
mount --move "$keep" {shlex.quote(os.path.join(closed, child))}
rmdir "$keep"
exec "$@"
"""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *setpriv]


@dataclass
class UserShipyard:
    user: pwd.struct_passwd
    work: Path  # owned by the user
    runtime: str = "auto"

    @property
    def root(self) -> Path:
        return self.work / "state"

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        env = {"SHIPYARD_ROOT": str(self.root), "SHIPYARD_RUNTIME": self.runtime, "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run(
            _command(self.user, env, list(args)), capture_output=True, text=True, timeout=timeout, cwd=self.work
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"shipyard {' '.join(args)} as {self.user.pw_name} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def write(self, relative: str, text: str) -> Path:
        path = self.work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        for current in [path] + [p for p in path.parents if self.work in p.parents]:
            os.chown(current, self.user.pw_uid, self.user.pw_gid)
        return path

    def pause_pid(self) -> int | None:
        try:
            pid, start = (self.root / PAUSE_DIR / PAUSE_FILE).read_text().split()[:2]
        except (OSError, ValueError):
            return None
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            return None
        return int(pid) if stat[stat.rfind(b")") + 2 :].split()[19] == start.encode() else None

    def close(self) -> None:
        ids = self.run("ps", "-aq", "--no-trunc", check=False).stdout.split()
        if ids:
            self.run("rm", "-f", *ids, check=False)
        pid = self.pause_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)  # the namespace's pause process this test's commands started
        shutil.rmtree(self.work, ignore_errors=True)


def _workspace(user: pwd.struct_passwd, busybox: Path) -> UserShipyard:
    work = Path(tempfile.mkdtemp(prefix=f"shipyard-rootless-{user.pw_name}-", dir="/tmp"))
    os.chmod(work, 0o755)
    os.chown(work, user.pw_uid, user.pw_gid)
    sy = UserShipyard(user, work)
    shutil.copy(busybox, work / "base.tar")
    os.chown(work / "base.tar", user.pw_uid, user.pw_gid)
    sy.run("import", str(work / "base.tar"), "busybox:local")
    return sy


@pytest.fixture(scope="module")
def subid(busybox_tar: Path):  # type: ignore[no-untyped-def]
    sy = _workspace(ensure_user(SUBID_USER, subids=True), busybox_tar)
    yield sy
    sy.close()


@pytest.fixture(scope="module")
def nosub(busybox_tar: Path):  # type: ignore[no-untyped-def]
    """The single-id user, with a base whose layer holds a file of uid 1234 and a device node."""
    user = ensure_user(NOSUB_USER, subids=False)
    base = Path(tempfile.mkdtemp(prefix="shipyard-rootless-base-")) / "base.tar"
    with tarfile.open(busybox_tar) as source, tarfile.open(base, "w", format=tarfile.PAX_FORMAT) as out:
        for member in source.getmembers():
            out.addfile(member, source.extractfile(member) if member.isfile() else None)
        owned = tarfile.TarInfo("srv/owned")
        owned.uid, owned.gid, owned.mode = 1234, 2345, 0o644
        out.addfile(owned, None)
        device = tarfile.TarInfo("devnode")
        device.type, device.devmajor, device.devminor, device.mode = tarfile.CHRTYPE, 5, 1, 0o600
        out.addfile(device, None)
    try:
        sy = _workspace(user, base)
    finally:
        shutil.rmtree(base.parent)
    yield sy
    sy.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(port: int, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def image_layers(archive: Path) -> list[tarfile.TarInfo]:
    """Every member of every layer of the first image in a docker archive."""
    members = []
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                members += inner.getmembers()
    return members


# --- with subordinate ids -----------------------------------------------------------------------

DOCKERFILE = """\
FROM busybox:local AS build
RUN mkdir -p /out && echo built > /out/data && chown 1234:2345 /out/data && chmod 640 /out/data \\
 && cat /proc/self/uid_map && grep -c userxattr /proc/self/mountinfo
FROM busybox:local
COPY --from=build /out /app
RUN rm /bin/vi && rm -rf /root && mkdir /root && echo only > /root/only && stat -c 'owner=%u:%g' /app/data
"""


def test_subid_build_keeps_owners_caches_and_exports(subid: UserShipyard) -> None:
    ctx = subid.write("ctx/Dockerfile", DOCKERFILE).parent
    meta = subid.work / "meta.json"
    proc = subid.run("build", "--progress", "plain", "--metadata-file", str(meta), "-t", "owned:1", str(ctx))
    out = proc.stderr
    assert f"0 {subid.user.pw_uid} 1" in " ".join(out.split()), out  # uid 0 is the user...
    start = subordinate_ranges(SUBUID, subid.user.pw_name, subid.user.pw_uid)[0][0]
    assert f"1 {start} {RANGE}" in " ".join(out.split()), out  # ...and 1.. its subordinate ids
    assert "owner=1234:2345" in out
    first = json.loads(meta.read_text())["shipyard.steps"]
    assert not any(step["cached"] for step in first if "RUN" in step["name"])

    # On the host the file belongs to the subordinate id that uid 1234 maps to.
    layer_files = list((subid.root / "layers").glob("*/fs/out/data"))
    assert layer_files and {(p.stat().st_uid, p.stat().st_gid) for p in layer_files} == {(start + 1233, start + 2344)}

    proc = subid.run("build", "--progress", "plain", "--metadata-file", str(meta), "-t", "owned:1", str(ctx))
    assert all(step["cached"] for step in json.loads(meta.read_text())["shipyard.steps"]), proc.stderr

    probe = json.loads((subid.root / "runtime" / "probe.json").read_text())
    assert probe["runc"]["ok"] and "userns=0:" in probe["runc"]["key"]  # auto chose runc, probed in the namespace

    archive = subid.work / "owned.tar"
    subid.run("save", "-o", str(archive), "owned:1")
    members = {m.name.lstrip("./"): m for m in image_layers(archive)}
    data = members["app/data"]
    assert (data.uid, data.gid, data.mode & 0o777) == (1234, 2345, 0o640)
    assert "bin/.wh.vi" in members  # removed in the last RUN (an overlay whiteout made in the namespace)
    assert "root/.wh..wh..opq" in members and "root/only" in members  # a recreated dir (user.overlay.opaque)


@pytest.mark.parametrize("runtime", ["runc", "builtin"])
def test_subid_run_publishes_ports_and_binds_volumes(subid: UserShipyard, runtime: str) -> None:
    subid.write(f"www-{runtime}/index.html", f"hello from {runtime}\n")
    vol = subid.write(f"vol-{runtime}/in", "from the host\n").parent
    port = free_port()
    name = f"web-{runtime}"
    subid.run(
        "run", "-d", "--runtime", runtime, "--name", name, "-p", f"{port}:8080",
        "-v", f"{subid.work}/www-{runtime}:/www:ro", "-v", f"{vol}:/vol",
        "busybox:local", "sh", "-c", "cat /vol/in > /vol/out && id -u app >> /vol/out && exec httpd -f -p 8080 -h /www",
    )
    try:
        assert http_get(port) == f"hello from {runtime}\n"
        assert (vol / "out").read_text() == "from the host\n1000\n"
        assert (vol / "out").stat().st_uid == subid.user.pw_uid  # the container's root is the user
        assert subid.run("exec", "-u", "app", name, "sh", "-c", "id -u; cat /vol/in").stdout == "1000\nfrom the host\n"
        subid.run("stop", name)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
    finally:
        subid.run("rm", "-f", name)
    assert subid.run("ps", "-aq").stdout.split() == []

    # What rootless mode cannot do is refused with a reason.
    low = subid.run("run", "--rm", "--runtime", runtime, "-p", "80:8080", "busybox:local", "true", check=False)
    assert low.returncode == 125 and "Permission denied" in low.stderr
    limited = subid.run("run", "--rm", "--runtime", runtime, "--memory", "64m", "busybox:local", "true", check=False)
    assert limited.returncode == 125 and "rootless mode" in limited.stderr


def test_a_killed_pause_process_is_replaced_in_the_same_namespace(subid: UserShipyard) -> None:
    """Containers keep their namespace alive; the next command adopts it, so `exec` and
    `stop` still reach a container whose process runs as a subordinate id."""
    cid = subid.run("run", "-d", "--runtime", "builtin", "-u", "app", "busybox:local", "sleep", "1000").stdout.strip()
    try:
        old = subid.pause_pid()
        assert old is not None
        namespace = os.readlink(f"/proc/{old}/ns/user")
        os.kill(old, signal.SIGKILL)
        assert subid.run("exec", cid, "id", "-u").stdout == "1000\n"
        new = subid.pause_pid()
        assert new not in (None, old) and os.readlink(f"/proc/{new}/ns/user") == namespace
        subid.run("stop", "-t", "1", cid)
        assert json.loads(subid.run("ps", "-a", "--format", "json").stdout)["State"] == "exited"
    finally:
        subid.run("rm", "-f", cid)


# --- a single-id map (no subordinate ids) -----------------------------------------------------------


def test_single_id_user_builds_and_runs_with_root_ownership_only(nosub: UserShipyard) -> None:
    ctx = nosub.write(
        "ctx/Dockerfile",
        "FROM busybox:local\n"
        "RUN cat /proc/self/uid_map && stat -c 'owner=%u:%g' /srv/owned && test ! -e /devnode && echo ok > /ok\n",
    ).parent
    proc = nosub.run("build", "--progress", "plain", "-t", "single:1", str(ctx))
    lines = [" ".join(line.split()[2:]) for line in proc.stderr.splitlines() if line.startswith("#2 ")]  # "#2 TIME …"
    assert f"0 {nosub.user.pw_uid} 1" in lines, proc.stderr  # one line: only uid 0 exists inside
    assert "owner=0:0" in lines  # the layer's uid 1234 is kept as root's; its device node is skipped

    chown = nosub.write("chown/Dockerfile", "FROM busybox:local\nRUN touch /x && chown 1234 /x\n").parent
    failed = nosub.run("build", "--progress", "plain", str(chown), check=False)
    assert failed.returncode != 0 and "chown: /x: Invalid argument" in failed.stderr

    vol = nosub.write("vol/in", "single\n").parent
    port = free_port()
    for runtime in ("runc", "builtin"):
        done = nosub.run(
            "run", "--rm", "--runtime", runtime, "-v", f"{vol}:/vol", "single:1", "sh", "-c", f"cat /ok /vol/in > /vol/{runtime}"
        )
        assert done.returncode == 0 and (vol / runtime).read_text() == "ok\nsingle\n"
        status = nosub.run("run", "--rm", "--runtime", runtime, "single:1", "sh", "-c", "exit 7", check=False)
        assert status.returncode == 7, status.stderr  # the container's exit code is run's, rootless too
    assert nosub.run("ps", "-aq").stdout.split() == []  # --rm left no container behind
    nosub.write("www/index.html", "single id\n")
    nosub.run("run", "-d", "--name", "web", "-p", f"{port}:8080", "-v", f"{nosub.work}/www:/www:ro",
              "single:1", "httpd", "-f", "-p", "8080", "-h", "/www")
    try:
        assert http_get(port) == "single id\n"
    finally:
        nosub.run("rm", "-f", "web")
    other_user = nosub.run("run", "--rm", "--runtime", "builtin", "-u", "app", "single:1", "true", check=False)
    assert other_user.returncode == 125, other_user.stderr
    assert "uid 1000, gid 1000, gid 50 not mapped in the rootless user namespace" in other_user.stderr
