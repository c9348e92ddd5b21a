"""Detached containers on both backends: ps, logs, exec, stop with the image's STOPSIGNAL, rm,
export; a supervisor killed with SIGKILL; and cgroup limits."""

from __future__ import annotations

import os
import signal
import tarfile
from pathlib import Path

import pytest

from engine.runtime.procs import alive, start_time
from tests.e2e.conftest import Shipyard
from tests.e2e.runhelpers import (  # noqa: F401
    assert_nothing_left,
    processes_mentioning,
    ps,
    remove_containers_after,
    wait_for,
)

IMAGE = "busybox:local"


def test_detached_lifecycle(shipyard: Shipyard, busybox_tar: Path, tmp_path: Path) -> None:
    shipyard.run("import", str(busybox_tar), "-t", "svc:1", "-c", "STOPSIGNAL SIGUSR1")
    out = tmp_path / "out"
    script = (
        "trap 'echo stopped-by-usr1 > /out/marker; exit 0' USR1; "
        "echo made-in-container > /root/note.txt; echo started; echo warning >&2; "
        "while :; do sleep 0.1; done"
    )
    container_id = shipyard.run("run", "-d", "--name", "svc", "-v", f"{out}:/out", "svc:1", "sh", "-c", script).stdout.strip()
    (listed,) = ps(shipyard)
    assert listed["ID"] == container_id and listed["Names"] == "svc" and listed["State"] == "running"
    assert listed["Status"].startswith("Up ")
    assert shipyard.run("ps", "-q").stdout.split() == [container_id[:12]]

    logs = wait_for(lambda: shipyard.run("logs", container_id[:8]).stdout, 5)  # an id prefix finds it too
    assert logs == "started\n"
    both = shipyard.run("logs", "svc")
    assert both.stderr == "warning\n"
    last = shipyard.run("logs", "--tail", "1", "svc")  # the last line of either stream
    assert (last.stdout, last.stderr) == ("", "warning\n")

    execd = shipyard.run("exec", "svc", "sh", "-c", "cat /root/note.txt; cat /proc/1/cmdline | tr '\\0' ' '; exit 7", check=False)
    assert execd.returncode == 7
    assert execd.stdout.startswith("made-in-container\nsh -c trap")
    assert shipyard.run("exec", "-u", "app", "-w", "/tmp", "-e", "X=1", "svc", "sh", "-c", "id -un; pwd; echo $X").stdout == "app\n/tmp\n1\n"
    assert shipyard.run("exec", "svc", "no-such-tool", check=False).returncode == 127
    assert shipyard.run("exec", "-d", "svc", "sh", "-c", "sleep 0.3; echo later > /root/bg").stdout == ""
    assert wait_for(lambda: shipyard.run("exec", "svc", "cat", "/root/bg", check=False).stdout, 5) == "later\n"

    running = shipyard.run("rm", "svc", check=False)
    assert running.returncode != 0 and "stop it first" in running.stderr
    duplicate = shipyard.run("run", "-d", "--name", "svc", IMAGE, "true", check=False)
    assert duplicate.returncode == 125 and "already in use" in duplicate.stderr

    shipyard.run("stop", "svc")  # the image's STOPSIGNAL (SIGUSR1), which the trap handles
    assert (out / "marker").read_text() == "stopped-by-usr1\n"
    (stopped,) = ps(shipyard, "-a")
    assert stopped["State"] == "exited" and stopped["ExitCode"] == 0 and stopped["Status"].startswith("Exited (0)")
    assert shipyard.run("exec", "svc", "true", check=False).returncode != 0

    archive = tmp_path / "fs.tar"
    shipyard.run("export", "-o", str(archive), "svc")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        note = tar.extractfile("root/note.txt")
        assert note is not None and note.read() == b"made-in-container\n"
    assert "bin/busybox" in names and "etc/passwd" in names

    shipyard.run("rm", "svc")
    assert_nothing_left(shipyard, container_id)


def _supervisor_and_reaper(container: dict) -> tuple[int, int]:
    supervisor = container["SupervisorPid"]
    reapers = [
        pid
        for pid in processes_mentioning(container["ID"])
        if pid != supervisor and open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1] == str(supervisor)
    ]
    assert len(reapers) == 1, "the supervisor has one reaper child"
    return supervisor, reapers[0]


def test_killed_supervisor(shipyard: Shipyard) -> None:
    container_id = shipyard.run("run", "-d", "-p", "127.0.0.1::80", IMAGE, "sleep", "1000").stdout.strip()
    (container,) = ps(shipyard)
    pid, pid_start = container["Pid"], start_time(container["Pid"])
    assert pid_start is not None
    netns = os.readlink(f"/proc/{pid}/ns/net")
    supervisor, _reaper = _supervisor_and_reaper(container)

    os.kill(supervisor, signal.SIGKILL)
    # The container does not outlive its supervisor, and ps says so — and says it truthfully.
    gone = wait_for(lambda: ps(shipyard, "-a")[0]["State"] != "running", 5)
    assert gone, "ps still reports a container whose supervisor was killed as running"
    assert not alive(pid, pid_start)
    (after,) = ps(shipyard, "-a")
    assert after["State"] == "exited" and after["ExitCode"] == 137
    shipyard.run("rm", "-f", container_id)
    assert_nothing_left(shipyard, container_id, netns=netns)


def test_killed_supervisor_and_reaper(runc_shipyard: Shipyard) -> None:
    """With nobody left to clean up, ps still tells the truth and rm -f cleans everything."""
    sy = runc_shipyard
    container_id = sy.run("run", "-d", IMAGE, "sleep", "1000").stdout.strip()
    (container,) = ps(sy)
    pid, pid_start = container["Pid"], start_time(container["Pid"])
    assert pid_start is not None
    netns = os.readlink(f"/proc/{pid}/ns/net")
    supervisor, reaper = _supervisor_and_reaper(container)
    os.kill(reaper, signal.SIGKILL)
    os.kill(supervisor, signal.SIGKILL)
    assert wait_for(lambda: not processes_mentioning(f"engine.containers.supervisor {sy.root} {container_id}"), 5)
    # runc's container outlives both: ps must say it runs, because it does.
    assert alive(pid, pid_start)
    assert ps(sy)[0]["State"] == "running"
    sy.run("rm", "-f", container_id)
    assert not alive(pid, pid_start)
    assert_nothing_left(sy, container_id, netns=netns)


def test_memory_limit_is_enforced(shipyard: Shipyard) -> None:
    hog = 'x=$(head -c 40000000 /dev/zero | tr "\\0" a); echo ${#x}'
    limited = shipyard.run("run", "--rm", "--memory", "16m", IMAGE, "sh", "-c", hog, check=False)
    assert limited.returncode == 137, "the OOM killer ends a container over its --memory"
    assert shipyard.run("run", "--rm", "--memory", "256m", IMAGE, "sh", "-c", hog).stdout == "40000000\n"


def test_cpu_limit_is_set(shipyard: Shipyard) -> None:
    container_id = shipyard.run("run", "-d", "--cpus", "0.5", IMAGE, "sleep", "60").stdout.strip()
    pid = ps(shipyard)[0]["Pid"]
    with open(f"/proc/{pid}/cgroup") as handle:
        lines = [line.strip().split(":", 2) for line in handle]
    v1 = [path for _, controllers, path in lines if "cpu" in controllers.split(",")]
    if v1:  # cgroup v1 (or a hybrid host): the cpu hierarchy carries the CFS quota
        assert v1[0] == f"/shipyard/{container_id}"
        assert Path(f"/sys/fs/cgroup/cpu{v1[0]}/cpu.cfs_quota_us").read_text().split() == ["50000"]
    else:
        path = next(path for hierarchy, _, path in lines if hierarchy == "0")
        assert path == f"/shipyard/{container_id}"
        assert Path(f"/sys/fs/cgroup{path}/cpu.max").read_text().split() == ["50000", "100000"]
    shipyard.run("rm", "-f", container_id)
    assert_nothing_left(shipyard, container_id)


@pytest.mark.parametrize("flag", ["--memory", "--cpus"])
def test_limit_values_are_checked(runc_shipyard: Shipyard, flag: str) -> None:
    bad = runc_shipyard.run("run", "--rm", flag, "lots", IMAGE, "true", check=False)
    assert bad.returncode == 125 and flag in bad.stderr


def test_logs_follow_until_the_container_exits(runc_shipyard: Shipyard) -> None:
    sy = runc_shipyard
    sy.run("run", "-d", "--name", "talker", IMAGE, "sh", "-c", "echo first; sleep 1; printf 'second\\nno newline'; exit 2")
    followed = sy.run("logs", "-f", "-t", "talker", timeout=30)
    lines = followed.stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["first", "second", "no newline"]
    assert all(line[:4].isdigit() and line.split(" ", 1)[0].endswith("Z") for line in lines)
    (exited,) = ps(sy, "-a")
    assert exited["ExitCode"] == 2
