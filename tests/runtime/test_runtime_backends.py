"""Both backends (runc and builtin) on the real kernel, with a real busybox rootfs.

Every test runs its container on a private overlay of the session busybox rootfs,
so writes (cwd, mountpoints, the command's own files) never touch the shared copy,
and the fixture checks afterwards that nothing is left mounted under it.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from engine import linux
from engine.errors import BuildCancelled
from engine.runtime.base import (
    DEFAULT_PATH,
    RESERVED_IDS,
    BindMount,
    ProcessSpec,
    TmpfsMount,
)
from engine.runtime.builtin import BuiltinRuntime
from engine.runtime.caps import DOCKER_DEFAULT_CAPS, cap_number, held_capabilities
from engine.runtime.oci import OciRuntime
from engine.runtime.users import resolve_user
from tests.helpers import processes_with

BACKENDS = ("runc", "builtin")


def mountpoints() -> list[str]:
    with open("/proc/self/mountinfo") as handle:
        return [line.split()[4].replace("\\040", " ") for line in handle]


def mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    return [point for point in mountpoints() if point.startswith(prefix)]


@pytest.fixture
def rootfs(busybox_rootfs: Path, tmp_path: Path):
    """A writable overlay of the busybox rootfs, unmounted (and checked) afterwards."""
    layers = tmp_path / "overlay"
    upper, work, merged = layers / "upper", layers / "work", layers / "merged"
    for directory in (upper, work, merged):
        directory.mkdir(parents=True)
    linux.mount("overlay", str(merged), "overlay", 0, f"lowerdir={busybox_rootfs},upperdir={upper},workdir={work}")
    try:
        yield merged
        assert mounts_under(merged) == [], "the runtime left mounts under the rootfs"
    finally:
        linux.umount(str(merged), linux.MNT_DETACH)


@pytest.fixture
def state_root(tmp_path: Path) -> Path:
    root = tmp_path / "state"
    root.mkdir()
    return root


@pytest.fixture(params=BACKENDS)
def runtime(request: pytest.FixtureRequest, state_root: Path):
    if request.param == "runc":
        binary = shutil.which("runc")
        if binary is None:
            pytest.fail("runc is not installed (apt-get install runc)")
        backend = OciRuntime("runc", binary, state_root)
    else:
        backend = BuiltinRuntime(state_root)
    yield backend
    leftovers = sorted(p.name for p in (state_root / "runtime").iterdir()) if (state_root / "runtime").exists() else []
    assert [name for name in leftovers if name not in RESERVED_IDS] == [], "per-container state left behind"
    runc_state = state_root / "runtime" / "runc"
    if runc_state.exists():
        assert list(runc_state.iterdir()) == [], "runc container state left behind"


@dataclass
class Result:
    status: int
    stdout: bytes = b""
    stderr: bytes = b""
    chunks: list[tuple[int, bytes, str]] = field(default_factory=list)

    @property
    def out(self) -> str:
        return self.stdout.decode()

    @property
    def err(self) -> str:
        return self.stderr.decode()


def run(runtime, rootfs: Path, spec: ProcessSpec, cancel: threading.Event | None = None) -> Result:
    result = Result(status=-1)
    lock = threading.Lock()

    def on_output(fd: int, data: bytes) -> None:
        with lock:
            result.chunks.append((fd, data, threading.current_thread().name))
            if fd == 1:
                result.stdout += data
            else:
                result.stderr += data

    result.status = runtime.run(
        str(rootfs),
        spec,
        container_id=f"t-{uuid.uuid4().hex[:12]}",
        on_output=on_output,
        cancel=cancel or threading.Event(),
    )
    return result


def sh(script: str, **kwargs) -> ProcessSpec:
    return ProcessSpec(args=("/bin/sh", "-c", script), **kwargs)


# --- output and status ---------------------------------------------------------------


def test_stdout_and_stderr_are_separate_streams_from_a_reader_thread(runtime, rootfs):
    result = run(runtime, rootfs, sh("echo to-out; echo to-err >&2"))
    assert result.status == 0
    assert result.out == "to-out\n"
    assert result.err == "to-err\n"
    assert all(thread != threading.current_thread().name for _fd, _data, thread in result.chunks)


def test_exit_status_is_propagated(runtime, rootfs):
    assert run(runtime, rootfs, sh("exit 3")).status == 3
    assert run(runtime, rootfs, ProcessSpec(args=("false",))).status == 1


def test_large_output_is_delivered_completely(runtime, rootfs):
    result = run(runtime, rootfs, sh("yes 0123456789abcdef | head -c 1000000"))
    assert result.status == 0
    assert len(result.stdout) == 1000000


def test_sigpipe_has_its_default_action_in_the_container(runtime, rootfs):
    # Python ignores SIGPIPE; a command inheriting that would loop on EPIPE instead of dying.
    result = run(runtime, rootfs, sh("yes | head -n 1; echo done"))
    assert result.out == "y\ndone\n"
    assert result.err == ""


def test_command_not_found_is_127_with_a_clear_message(runtime, rootfs):
    result = run(runtime, rootfs, ProcessSpec(args=("no-such-command",)))
    assert result.status == 127
    assert 'exec: "no-such-command": executable file not found in $PATH' in result.err


def test_command_not_executable_is_126(runtime, rootfs):
    (rootfs / "script.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(rootfs / "script.sh", 0o644)
    result = run(runtime, rootfs, ProcessSpec(args=("/script.sh",)))
    assert result.status == 126
    assert "permission denied" in result.err.lower()


def test_stdin_is_dev_null(runtime, rootfs):
    result = run(runtime, rootfs, sh("cat; echo end"))
    assert result.out == "end\n"


# --- environment and working directory -------------------------------------------------


def test_default_path_is_added_and_env_passed(runtime, rootfs):
    result = run(runtime, rootfs, sh('echo "$PATH"; echo "$FOO"', env=("FOO=bar baz",)))
    assert result.out.splitlines() == [DEFAULT_PATH, "bar baz"]


def test_given_path_is_kept(runtime, rootfs):
    result = run(runtime, rootfs, ProcessSpec(args=("/bin/sh", "-c", 'echo "$PATH"'), env=("PATH=/bin",)))
    assert result.out == "/bin\n"


def test_missing_cwd_is_created_inside_the_rootfs_for_the_user(runtime, rootfs):
    result = run(runtime, rootfs, sh("pwd", cwd="/work/a/b", uid=1000, gid=1000))
    assert result.out == "/work/a/b\n"
    created = rootfs / "work" / "a" / "b"
    assert created.is_dir()
    assert (created.stat().st_uid, created.stat().st_gid) == (1000, 1000)


def test_cwd_through_a_symlink_stays_inside_the_rootfs(runtime, rootfs, tmp_path):
    outside = tmp_path / "host-victim"
    outside.mkdir()
    os.symlink(f"../../../../../../../..{outside}", rootfs / "escape")
    result = run(runtime, rootfs, sh("pwd", cwd="/escape/sub"))
    assert result.status == 0
    assert list(outside.iterdir()) == []
    assert (rootfs / outside.relative_to("/") / "sub").is_dir()


@pytest.mark.parametrize("fd", [3, 5, 7])
def test_cwd_in_proc_self_fd_is_refused(runtime, rootfs, fd):
    """CVE-2024-21626 (Leaky Vessels): a cwd through a leaked fd must not reach the host."""
    result = run(runtime, rootfs, sh("pwd; ls ../../../", cwd=f"/proc/self/fd/{fd}"))
    assert result.status != 0
    assert result.out == ""
    assert "unable to start container process" in result.err
    assert not (rootfs / "proc" / "self").exists()


# --- identity ------------------------------------------------------------------------------


def test_user_group_and_supplementary_groups(runtime, rootfs):
    user = resolve_user(str(rootfs), "app")
    spec = sh("id -u; id -g; id -G", uid=user.uid, gid=user.gid, additional_gids=user.additional_gids)
    result = run(runtime, rootfs, spec)
    assert result.out.splitlines() == ["1000", "1000", "1000 50"]


def test_non_root_user_holds_no_capabilities(runtime, rootfs):
    result = run(runtime, rootfs, sh("grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status", uid=1000, gid=1000))
    caps = dict(line.split(":\t") for line in result.out.splitlines())
    assert int(caps["CapEff"], 16) == 0
    assert int(caps["CapPrm"], 16) == 0
    assert int(caps["CapBnd"], 16) == docker_mask()


def docker_mask() -> int:
    return sum(1 << cap_number(name) for name in DOCKER_DEFAULT_CAPS)


def test_root_gets_dockers_default_capabilities(runtime, rootfs):
    result = run(runtime, rootfs, sh("grep -E '^Cap(Eff|Bnd|Inh)' /proc/self/status"))
    caps = dict(line.split(":\t") for line in result.out.splitlines())
    assert int(caps["CapEff"], 16) == docker_mask()
    assert int(caps["CapBnd"], 16) == docker_mask()
    assert int(caps["CapInh"], 16) == 0


def test_insecure_gets_every_capability_and_no_masked_paths(runtime, rootfs):
    script = "grep '^CapEff' /proc/self/status; grep -c ' /proc/' /proc/self/mountinfo || true"
    result = run(runtime, rootfs, sh(script, security="insecure"))
    lines = result.out.splitlines()
    held = sum(1 << cap_number(name) for name in held_capabilities())
    assert int(lines[0].split(":\t")[1], 16) == held
    assert lines[1] == "0"


def test_sandbox_masks_and_write_protects_proc(runtime, rootfs):
    assert Path("/proc/timer_list").read_bytes()  # readable on the host, so masking is what empties it
    script = "wc -c < /proc/timer_list; ls /proc/acpi | wc -l; echo 1 > /proc/sys/kernel/hostname && echo written"
    result = run(runtime, rootfs, sh(script))
    assert [line.strip() for line in result.out.splitlines()] == ["0", "0"]
    assert "Read-only file system" in result.err


def test_hostname_and_hosts_file(runtime, rootfs):
    result = run(runtime, rootfs, sh("hostname; cat /etc/hosts", hostname="stage-one"))
    lines = result.out.splitlines()
    assert lines[0] == "stage-one"
    assert "127.0.0.1\tlocalhost stage-one" in lines


def test_etc_files_are_read_only_binds_and_host_files_untouched(runtime, rootfs):
    before = Path("/etc/resolv.conf").read_bytes()
    result = run(runtime, rootfs, sh("cat /etc/resolv.conf; echo x >> /etc/hosts && echo wrote"))
    assert result.stdout.startswith(before)
    assert b"wrote" not in result.stdout
    assert Path("/etc/resolv.conf").read_bytes() == before


# --- namespaces and mounts -----------------------------------------------------------------


def test_pid_namespace(runtime, rootfs):
    result = run(runtime, rootfs, sh("echo $$; ls /proc | grep -c '^[0-9]'"))
    pid, count = result.out.split()
    assert pid == "1"
    assert int(count) <= 3  # sh, ls, grep


def test_proc_dev_and_sys(runtime, rootfs):
    script = (
        "test -r /proc/self/status && echo proc;"
        "echo x > /dev/null && echo null;"
        "head -c 4 /dev/zero | wc -c;"
        "test -L /dev/fd && test -d /dev/pts && test -d /dev/shm && echo devdirs;"
        "touch /sys/x 2>/dev/null || echo sys-ro;"
        "echo ok > /dev/shm/f && cat /dev/shm/f"
    )
    result = run(runtime, rootfs, sh(script))
    assert result.out.split() == ["proc", "null", "4", "devdirs", "sys-ro", "ok"]


def test_only_standard_fds_are_open(runtime, rootfs):
    result = run(runtime, rootfs, sh("ls /proc/$$/fd; true"))  # no exec: list the shell's fds
    assert result.out.split() == ["0", "1", "2"]


def host_interfaces() -> set[str]:
    with open("/proc/net/dev") as handle:
        return {line.split(":")[0].strip() for line in handle.readlines()[2:]}


def test_network_none_has_only_loopback_and_it_is_up(runtime, rootfs):
    result = run(runtime, rootfs, sh("cat /proc/net/dev; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags", network="none"))
    lines = result.out.splitlines()
    interfaces = {line.split(":")[0].strip() for line in lines[2:-2]}
    assert interfaces == {"lo"}
    assert int(lines[-1], 16) & 0x1  # IFF_UP


def test_network_host_sees_host_interfaces(runtime, rootfs):
    result = run(runtime, rootfs, sh("cat /proc/net/dev", network="host"))
    interfaces = {line.split(":")[0].strip() for line in result.out.splitlines()[2:]}
    assert interfaces == host_interfaces()


def test_bind_mounts_read_only_and_read_write(runtime, rootfs, tmp_path):
    ro_dir, rw_dir = tmp_path / "ro", tmp_path / "rw"
    ro_dir.mkdir()
    rw_dir.mkdir()
    (ro_dir / "in.txt").write_text("from host\n")
    mounts = (BindMount(str(ro_dir), "/mnt/ro", readonly=True), BindMount(str(rw_dir), "/mnt/rw", readonly=False))
    script = "cat /mnt/ro/in.txt; echo x > /mnt/ro/new 2>/dev/null || echo ro-refused; echo data > /mnt/rw/out.txt"
    result = run(runtime, rootfs, sh(script, mounts=mounts))
    assert result.out.splitlines() == ["from host", "ro-refused"]
    assert not (ro_dir / "new").exists()
    assert (rw_dir / "out.txt").read_text() == "data\n"


def test_bind_mount_of_a_file(runtime, rootfs, tmp_path):
    source = tmp_path / "conf"
    source.write_text("setting=1\n")
    result = run(runtime, rootfs, sh("cat /opt/app.conf", mounts=(BindMount(str(source), "/opt/app.conf"),)))
    assert result.out == "setting=1\n"
    # The stub file (and the /opt made for it) are gone again: they must not land in a layer.
    assert not (rootfs / "opt").exists()


def test_tmpfs_mount_with_size(runtime, rootfs):
    spec = sh("grep ' /scratch ' /proc/mounts; echo x > /scratch/f && cat /scratch/f", mounts=(TmpfsMount("/scratch", size=1 << 20),))
    result = run(runtime, rootfs, spec)
    line, content = result.out.splitlines()
    assert line.startswith("tmpfs /scratch tmpfs ")
    assert "size=1024k" in line
    assert content == "x"
    assert not (rootfs / "scratch").exists()


def test_read_only_rootfs(runtime, rootfs):
    result = run(runtime, rootfs, sh("touch /newfile 2>/dev/null || echo refused; touch /tmp/x 2>/dev/null || echo tmp-ro", readonly_rootfs=True))
    assert result.out.split() == ["refused", "tmp-ro"]
    assert not (rootfs / "newfile").exists()


def test_mount_target_through_a_symlink_stays_inside_the_rootfs(runtime, rootfs, tmp_path):
    outside = tmp_path / "host-victim"
    outside.mkdir()
    os.symlink(str(outside), rootfs / "link")  # absolute: means <rootfs><outside> in the container
    result = run(runtime, rootfs, sh("touch /link/t/f && echo written", mounts=(TmpfsMount("/link/t"),)))
    assert result.out == "written\n", result.err
    assert list(outside.iterdir()) == []
    assert not (rootfs / outside.relative_to("/")).exists()  # stubs made inside the root, then removed
    assert mounts_under(outside) == []


def test_device_nodes_made_in_the_container_cannot_reach_host_disks(runtime, rootfs):
    root_dev = os.stat("/").st_dev
    script = f"mknod /disk b {os.major(root_dev)} {os.minor(root_dev)} && head -c 1 /disk > /dev/null && echo READ"
    result = run(runtime, rootfs, sh(script))
    assert "READ" not in result.out
    assert "denied" in result.err or "not permitted" in result.err


def test_writes_land_in_the_rootfs(runtime, rootfs):
    run(runtime, rootfs, sh("echo built > /artifact"))
    assert (rootfs / "artifact").read_text() == "built\n"


# --- cancel and concurrency -----------------------------------------------------------------


def test_cancel_kills_the_container_promptly_and_cleans_up(runtime, rootfs, state_root):
    seconds = f"{uuid.uuid4().int % 1000 + 1000}"  # a sleep length no other process uses
    cancel = threading.Event()
    started = threading.Event()
    outcome: dict[str, object] = {}

    def on_output(_fd: int, data: bytes) -> None:
        if b"ready" in data:
            started.set()

    def target() -> None:
        try:
            outcome["status"] = runtime.run(
                str(rootfs),
                sh(f"sleep {seconds} & echo ready; wait"),
                container_id=f"cancel-{uuid.uuid4().hex[:8]}",
                on_output=on_output,
                cancel=cancel,
            )
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc
        outcome["finished"] = time.monotonic()

    thread = threading.Thread(target=target)
    thread.start()
    try:
        assert started.wait(10), "container did not start"
        deadline = time.monotonic() + 5
        while not processes_with(f"sleep\0{seconds}") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert processes_with(f"sleep\0{seconds}"), "the container's sleep is not running"
    finally:
        cancelled_at = time.monotonic()
        cancel.set()
        thread.join(10)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), BuildCancelled)
    assert outcome["finished"] - cancelled_at < 1.0
    assert processes_with(f"sleep\0{seconds}") == []
    assert mounts_under(rootfs) == []


def test_cancel_before_start_raises_without_running(runtime, rootfs):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(BuildCancelled):
        run(runtime, rootfs, sh("echo ran > /ran"), cancel=cancel)
    assert not (rootfs / "ran").exists()


def test_four_concurrent_runs(runtime, busybox_rootfs, tmp_path):
    roots = []
    for index in range(4):
        layers = tmp_path / f"ov{index}"
        upper, work, merged = layers / "u", layers / "w", layers / "m"
        for directory in (upper, work, merged):
            directory.mkdir(parents=True)
        linux.mount("overlay", str(merged), "overlay", 0, f"lowerdir={busybox_rootfs},upperdir={upper},workdir={work}")
        roots.append(merged)
    results: list[Result | BaseException | None] = [None] * 4

    def target(index: int) -> None:
        try:
            results[index] = run(runtime, roots[index], sh(f"sleep 0.2; echo run-{index}; echo {index} > /id"))
        except BaseException as exc:  # noqa: BLE001
            results[index] = exc

    try:
        threads = [threading.Thread(target=target, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for index, result in enumerate(results):
            assert isinstance(result, Result), result
            assert result.status == 0
            assert result.out == f"run-{index}\n"
            assert (roots[index] / "id").read_text() == f"{index}\n"
            assert mounts_under(roots[index]) == []
    finally:
        for merged in roots:
            linux.umount(str(merged), linux.MNT_DETACH)


def test_per_run_overhead(runtime, rootfs, capsys):
    """Measured, and only loosely bounded: a regression to seconds must not pass."""
    spec = ProcessSpec(args=("true",))
    run(runtime, rootfs, spec)  # warm caches (bytecode, page cache)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        assert run(runtime, rootfs, spec).status == 0
        times.append(time.perf_counter() - start)
    best = min(times)
    with capsys.disabled():
        print(f"\n{runtime.name}: `true` best {best * 1000:.1f} ms, mean {sum(times) / len(times) * 1000:.1f} ms")
    assert best < 0.25


def test_spec_validation_rejects_bad_values(runtime, rootfs):
    from engine.errors import RuntimeBackendError

    with pytest.raises(RuntimeBackendError):
        run(runtime, rootfs, ProcessSpec(args=()))
    with pytest.raises(RuntimeBackendError):
        run(runtime, rootfs, replace(sh("true"), cwd="relative"))
    with pytest.raises(RuntimeBackendError):
        runtime.run(str(rootfs), sh("true"), container_id="../x", on_output=lambda *_: None, cancel=threading.Event())


ENGINE_SCRIPT = """
import sys, threading
from pathlib import Path
from engine.runtime.base import ProcessSpec
from engine.runtime.builtin import BuiltinRuntime
from engine.runtime.oci import OciRuntime
name, state, rootfs, seconds = sys.argv[1:5]
runtime = OciRuntime("runc", "runc", Path(state)) if name == "runc" else BuiltinRuntime(Path(state))
def out(fd, data):
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
runtime.run(rootfs, ProcessSpec(args=("sh", "-c", f"sleep {seconds} & echo ready; wait")),
            container_id="orphan", on_output=out, cancel=threading.Event())
"""


def test_a_killed_engine_leaves_no_running_container(runtime, rootfs, state_root):
    """kill -9 of the engine: builtin containers die with it; runc ones are swept."""
    import subprocess
    import sys

    from engine.runtime.probe import select_runtime

    seconds = f"{uuid.uuid4().int % 1000 + 3000}"
    engine = subprocess.Popen(
        [sys.executable, "-c", ENGINE_SCRIPT, runtime.name, str(state_root), str(rootfs), seconds],
        stdout=subprocess.PIPE,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    try:
        assert engine.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 5
        while not processes_with(f"sleep\0{seconds}") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert processes_with(f"sleep\0{seconds}")
    finally:
        engine.kill()
        engine.wait()
    assert (state_root / "runtime" / "orphan").is_dir()  # the engine had no chance to clean up
    select_runtime(runtime.name, state_root)  # the next build's start sweeps
    deadline = time.monotonic() + 2
    while processes_with(f"sleep\0{seconds}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert processes_with(f"sleep\0{seconds}") == []
    assert not (state_root / "runtime" / "orphan").exists()
