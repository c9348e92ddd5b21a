"""Cache-mount directories: sharing modes across threads and processes, seeding, crash safety."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cache.cachemounts import CacheMounts, CacheSeed, copy_tree
from engine.errors import BuildCancelled


@pytest.fixture
def store(tmp_path: Path) -> CacheMounts:
    return CacheMounts(tmp_path / "cachemounts")


def test_shared_users_use_one_instance_at_the_same_time(store: CacheMounts) -> None:
    with store.acquire("go", "shared") as first, store.acquire("go", "shared") as second:
        assert first.path == second.path
        Path(first.path, "f").write_text("x")
    with store.acquire("go", "shared") as again:
        assert Path(again.path, "f").read_text() == "x"
    assert os.stat(again.path).st_mode & 0o777 == 0o755


def test_private_gets_a_new_instance_only_while_the_others_are_busy(store: CacheMounts) -> None:
    with store.acquire("p", "private") as first:
        with store.acquire("p", "private") as second:
            assert first.path != second.path
    with store.acquire("p", "private") as reused:
        assert reused.instance == 0  # the first free one, not a third


def test_private_does_not_wait_for_a_shared_user(store: CacheMounts) -> None:
    with store.acquire("mix", "shared") as shared, store.acquire("mix", "private") as private:
        assert shared.path != private.path


def test_locked_waits_for_the_holder_and_shared_waits_for_locked(store: CacheMounts) -> None:
    events: list[str] = []
    held = threading.Event()

    def holder() -> None:
        with store.acquire("l", "locked"):
            events.append("a-in")
            held.set()
            time.sleep(0.3)
            events.append("a-out")

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    with store.acquire("l", "locked"):
        events.append("b-in")
    with store.acquire("l", "shared"):
        events.append("c-in")
    thread.join()
    assert events == ["a-in", "a-out", "b-in", "c-in"]


def test_locked_across_processes(store: CacheMounts, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    script = (
        "import sys, time, pathlib\n"
        "from cache.cachemounts import CacheMounts\n"
        f"with CacheMounts(pathlib.Path({str(store.root)!r})).acquire('x', 'locked'):\n"
        f"    pathlib.Path({str(ready)!r}).write_text('1')\n"
        "    time.sleep(0.5)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert time.monotonic() < deadline and child.poll() is None, "the child never took the lock"
            time.sleep(0.01)
        started = time.monotonic()
        with store.acquire("x", "locked"):
            waited = time.monotonic() - started
        assert waited > 0.2
    finally:
        child.wait(10)
    assert child.returncode == 0


def test_waiting_for_a_lock_stops_when_the_build_is_cancelled(store: CacheMounts) -> None:
    cancel = threading.Event()
    with store.acquire("c", "locked"):
        timer = threading.Timer(0.1, cancel.set)
        timer.start()
        with pytest.raises(BuildCancelled):
            with store.acquire("c", "locked", cancel=cancel):
                pass
        timer.join()


def test_new_instances_get_owner_and_mode_and_a_different_seed_is_a_different_cache(store: CacheMounts) -> None:
    with store.acquire("o", "shared", CacheSeed("uid=1000,mode=750", uid=1000, gid=1001, mode=0o750)) as owned:
        st = os.stat(owned.path)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 1001, 0o750)
    with store.acquire("o", "shared") as plain:
        assert plain.path != owned.path
        assert os.stat(plain.path).st_uid == 0


def test_seed_fill_is_copied_once_and_an_interrupted_seed_leaves_nothing(store: CacheMounts) -> None:
    def broken(path: str) -> None:
        Path(path, "half").write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        with store.acquire("s", "shared", CacheSeed("snap:1", fill=broken)):
            pass
    calls: list[str] = []

    def fill(path: str) -> None:
        calls.append(path)
        Path(path, "seeded").write_text("yes")

    for _ in range(2):
        with store.acquire("s", "shared", CacheSeed("snap:1", fill=fill)) as lease:
            assert sorted(os.listdir(lease.path)) == ["seeded"]
    assert len(calls) == 1
    base = store.directory("s", "snap:1")
    assert not [e for e in os.listdir(base) if e.startswith("tmp-")]


def test_copy_tree_keeps_links_modes_and_owners(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("data")
    os.chmod(src / "d" / "f", 0o640)
    os.chown(src / "d" / "f", 12, 34)
    os.symlink("/etc/passwd", src / "link")
    os.chmod(src / "d", 0o711)
    copy_tree(str(src), str(tmp_path / "dst"))
    dst = tmp_path / "dst"
    assert os.readlink(dst / "link") == "/etc/passwd"
    st = os.stat(dst / "d" / "f")
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 12, 34)
    assert os.stat(dst / "d").st_mode & 0o777 == 0o711
