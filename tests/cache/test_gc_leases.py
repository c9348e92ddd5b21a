"""Leases and step locks across real processes: what the kernel's flocks promise."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cache.leases import Leases, step_lock, step_lock_path, sweep_step_locks
from engine.errors import BuildCancelled, CacheError

REPO = Path(__file__).resolve().parents[2]


def _child(script: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_live_leases_are_read_and_dead_ones_swept(tmp_path: Path) -> None:
    child = _child(
        "import sys\nfrom cache.leases import Leases\n"
        f"l = Leases.of({str(tmp_path)!r})\n"
        "with l.guard():\n    l.hold(snapshots=[7], layers=['abc'], blobs=['sha256:x'], temps=['blob-1'])\n"
        "print('ready', flush=True)\nsys.stdin.readline()\n"
    )
    leases = Leases.of(tmp_path)
    try:
        live = leases.live()
        assert (live.snapshots, live.layers, live.blobs, live.temps, live.holders) == (
            {7}, {"abc"}, {"sha256:x"}, {"blob-1"}, 1
        )
        assert leases.sweep_dead() == 0
    finally:
        child.kill()
        child.wait()
    assert leases.live().holders == 0 and leases.live().snapshots == frozenset()
    assert leases.sweep_dead() == 1


def test_gc_waits_for_a_shared_hold_and_gives_up_cleanly(tmp_path: Path) -> None:
    child = _child(
        "import sys\nfrom cache.leases import Leases\n"
        f"l = Leases.of({str(tmp_path)!r})\n"
        "with l.guard():\n    print('ready', flush=True)\n    sys.stdin.readline()\n"
    )
    leases = Leases.of(tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(CacheError, match="busy"):
            with leases.exclusive(timeout=0.3):
                pass
        assert time.monotonic() - started >= 0.3
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(10)
        with leases.exclusive(timeout=5):
            with leases.guard():  # this process's own holds pass while it collects
                leases.hold(snapshots=[1])
    finally:
        child.kill()
        child.wait()


def test_a_thread_waits_while_its_own_process_collects(tmp_path: Path) -> None:
    leases = Leases.of(tmp_path)
    order: list[str] = []

    def user() -> None:
        with leases.guard():
            order.append("held")

    with leases.exclusive():
        thread = threading.Thread(target=user)
        thread.start()
        time.sleep(0.1)
        order.append("collected")
    thread.join(5)
    assert order == ["collected", "held"]


def test_step_lock_serializes_and_cleans_up(tmp_path: Path) -> None:
    events: list[str] = []

    def second() -> None:
        with step_lock(tmp_path, "key-1"):
            events.append("second")

    with step_lock(tmp_path, "key-1"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        events.append("first done")
    thread.join(5)
    assert events == ["first done", "second"]
    assert not step_lock_path(tmp_path, "key-1").exists()


def test_step_lock_of_a_killed_holder_is_free_at_once(tmp_path: Path) -> None:
    child = _child(
        "import sys\nfrom cache.leases import step_lock\n"
        f"ctx = step_lock({str(tmp_path)!r}, 'k')\nctx.__enter__()\n"
        "print('ready', flush=True)\nsys.stdin.readline()\n"
    )
    child.kill()
    child.wait()
    assert step_lock_path(tmp_path, "k").exists()  # left behind, unlocked by the kernel
    started = time.monotonic()
    with step_lock(tmp_path, "k"):
        assert time.monotonic() - started < 1
    assert sweep_step_locks(tmp_path) == 0


def test_waiting_for_a_step_lock_is_cancellable(tmp_path: Path) -> None:
    cancel = threading.Event()
    with step_lock(tmp_path, "k"):
        threading.Timer(0.1, cancel.set).start()
        with pytest.raises(BuildCancelled):
            with step_lock(tmp_path, "k", cancel):
                pass


def test_sweep_removes_only_unheld_step_locks(tmp_path: Path) -> None:
    stale = step_lock_path(tmp_path, "stale")
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.touch()
    with step_lock(tmp_path, "held"):
        assert sweep_step_locks(tmp_path) == 1
        assert step_lock_path(tmp_path, "held").exists()
    assert not os.listdir(stale.parent)
