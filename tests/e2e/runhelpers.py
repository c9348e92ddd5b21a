"""Helpers for the `shipyard run` end-to-end tests: what a container may leave behind."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Shipyard


@pytest.fixture(autouse=True)
def remove_containers_after(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A failing test must not leave containers running: rm -f whatever is left (import this fixture)."""
    # Asked for before the test runs, so the state root is torn down after this cleanup.
    roots = [request.getfixturevalue(name) for name in ("shipyard", "runc_shipyard") if name in request.fixturenames]
    yield
    for sy in roots:
        ids = sy.run("ps", "-aq", "--no-trunc", check=False).stdout.split()
        if ids:
            sy.run("rm", "-f", *ids, check=False)


def ps(sy: Shipyard, *flags: str) -> list[dict]:
    out = sy.run("ps", "--format", "json", *flags).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def processes_mentioning(text: str) -> list[int]:
    """Pids (other than ours) whose command line contains `text`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if text.encode() in handle.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def netns_holders(link: str) -> list[str]:
    """Tasks whose network namespace is `link` (e.g. 'net:[4026532001]')."""
    holders = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            tasks = os.listdir(f"/proc/{entry}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                if os.readlink(f"/proc/{entry}/task/{task}/ns/net") == link:
                    holders.append(f"{entry}/{task}")
            except OSError:
                continue
    return holders


def host_mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as handle:
        return [line.split()[4] for line in handle if line.split()[4].startswith(prefix)]


def cgroup_dirs(container_id: str) -> list[str]:
    return [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/shipyard/{container_id}")]


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def assert_nothing_left(sy: Shipyard, container_id: str | None = None, netns: str | None = None) -> None:
    """No row, no directory, no supervisor or reaper, no runtime state, cgroup, mount or netns —
    of `container_id`, or of any container of this state root when it is None."""
    listed = ps(sy, "-a")
    assert all(c["ID"] != container_id for c in listed) if container_id else listed == [], "containers still listed"
    containers = sy.root / "containers"
    left = [p.name for p in containers.iterdir()] if containers.exists() else []
    assert (container_id not in left) if container_id else left == [], "container directories left"
    mention = container_id or str(sy.root)
    assert wait_for(lambda: not processes_mentioning(mention), 3), f"processes left: {processes_mentioning(mention)}"
    runtime_dir = sy.root / "runtime"
    bundles = [p.name for p in runtime_dir.iterdir() if p.name not in ("runc", "crun", "probe.json", "probe-rootfs")]
    assert (container_id not in bundles) if container_id else bundles == [], "runtime bundles left"
    runc_state = runtime_dir / "runc"
    runc_left = [p.name for p in runc_state.iterdir()] if runc_state.exists() else []
    assert (container_id not in runc_left) if container_id else runc_left == [], "runc state left"
    if container_id:
        assert cgroup_dirs(container_id) == [], "cgroups left"
    assert host_mounts_under(sy.root) == [], "mounts left under the state root"
    if netns is not None:
        assert wait_for(lambda: not netns_holders(netns), 3), f"network namespace still held: {netns_holders(netns)}"
