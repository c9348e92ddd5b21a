"""RUN --mount races (BuildKit CVE-2024-23651 / 23652 shapes), on both runtimes.

A cache mount is shared with every step running at the same time, so a directory
inside it can change between the moment a path through it is resolved and the moment
it is used. Here the "other step" is a thread of the test swapping a directory of the
shared cache with a symlink to a host directory (renameat2 RENAME_EXCHANGE, thousands
of times a second — far faster than a shell loop in a container could), while many
steps mount targets nested inside that cache and read subpaths of it. The host
sentinel must never change and no step may see host files.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from pathlib import Path

from tests.e2e.conftest import Shipyard, write
from tests.security.helpers import Sentinel, leftovers

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class Swapper:
    """Exchanges `a` and `b` (a directory and a symlink) as fast as it can until stopped."""

    def __init__(self, a: str, b: str) -> None:
        self.a, self.b = a.encode(), b.encode()
        self.swaps = 0
        self._stop = threading.Event()
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rename = self._libc.renameat2
        while not self._stop.is_set():
            for _ in range(200):
                if rename(_AT_FDCWD, self.a, _AT_FDCWD, self.b, _RENAME_EXCHANGE) == 0:
                    self.swaps += 1

    def __enter__(self) -> "Swapper":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _cache_instance(state: Path, cache_id: str) -> Path:
    for info in glob.glob(str(state / "cachemounts" / "*" / "info.json")):
        if f'"{cache_id}"' in Path(info).read_text():
            return Path(info).parent / "0"
    raise AssertionError(f"no cache instance for {cache_id}")


STEPS = 12


def test_nested_targets_and_subpaths_of_a_shared_cache_cannot_be_raced_out(
    shipyard: Shipyard, tmp_path: Path, sentinel: Sentinel
) -> None:
    ctx = tmp_path / "ctx"
    write(ctx / "f.txt", "context file\n")
    # Nested mounts work as before (the engine attaches them, the runtime binds the cache
    # recursively): the bind shows the file read-only, the tmpfs is a tmpfs whose files
    # never reach the cache.
    write(
        ctx / "Dockerfile",
        "FROM busybox:local\n"
        "RUN --mount=type=cache,id=race,target=/c --mount=type=tmpfs,target=/c/sub/t "
        "--mount=type=bind,source=f.txt,target=/c/sub/deeper/b "
        "sh -c 'cat /c/sub/deeper/b; touch /c/sub/t/in-tmpfs /c/in-cache; grep -c \" /c/sub/t tmpfs \" /proc/mounts; "
        "if echo x > /c/sub/deeper/b; then echo WRITABLE; fi' > /result 2>&1\n",
    )
    out = tmp_path / "first"
    shipyard.build(ctx, "-o", f"type=local,dest={out}")
    assert (out / "result").read_text().splitlines()[:2] == ["context file", "1"], (out / "result").read_text()
    assert "WRITABLE" not in (out / "result").read_text()
    instance = _cache_instance(shipyard.root, "race")
    assert sorted(os.listdir(instance)) == ["in-cache", "sub"] and os.listdir(instance / "sub" / "t") == []
    assert (ctx / "f.txt").read_text() == "context file\n"
    os.symlink(str(sentinel.victim), instance / "alt")  # the host directory the swap points `sub` at

    # STEPS independent stages, each mounting targets nested in the shared cache and a
    # cache subpath; a last stage depends on all of them so they run at once.
    stages = []
    for i in range(STEPS):
        stages.append(
            f"FROM busybox:local AS s{i}\n"
            f"RUN --mount=type=cache,id=race,target=/c "
            f"--mount=type=tmpfs,target=/c/sub/t{i} "
            f"--mount=type=bind,source=f.txt,target=/c/sub/deeper/b{i} "
            f"--mount=type=cache,id=race,source=sub,target=/s "
            f"sh -c 'ls -a /s /c/sub > /seen; echo {i}'\n"
        )
    final = "FROM busybox:local\n" + "".join(f"COPY --from=s{i} /seen /seen{i}\n" for i in range(STEPS))
    write(ctx / "Dockerfile", "".join(stages) + final)
    out = tmp_path / "out"
    with Swapper(str(instance / "sub"), str(instance / "alt")) as swapper:
        proc, _ = shipyard.build(ctx, "-o", f"type=local,dest={out}", check=False)
    assert swapper.swaps > 1000
    sentinel.check()
    if proc.returncode == 0:  # a step may also fail cleanly (a mountpoint raced away)
        for i in range(STEPS):
            assert "secret.txt" not in (out / f"seen{i}").read_text()
    else:
        assert "Traceback" not in proc.stderr, proc.stderr
    assert leftovers(shipyard.root) == []


def test_mountpoint_stubs_are_cleaned_without_following_a_swapped_parent(shipyard: Shipyard, tmp_path: Path, sentinel: Sentinel) -> None:
    """CVE-2024-23652 shape on both runtimes: the step swaps the stub's parent for a link to a host dir."""
    write(tmp_path / "host2" / "b" / "stub", "")
    host2 = tmp_path / "host2"
    ctx = tmp_path / "ctx"
    write(
        ctx / "Dockerfile",
        "FROM busybox:local\n"
        f"RUN --mount=type=tmpfs,target=/a/b/stub --mount=type=bind,source=.,target=/w/ctx "
        f"sh -c 'mv /a /a.moved && ln -s {host2} /a && mv /w /w.moved && ln -s {sentinel.root} /w'\n",
    )
    proc, _ = shipyard.build(ctx, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (host2 / "b" / "stub").exists(), "the cleanup deleted a host file"
    sentinel.check()


# --------------------------------------------------------------------------- the pieces, deterministically


def test_builtin_runtime_walks_mount_targets_by_descriptor(tmp_path: Path, sentinel: Sentinel) -> None:
    """nsinit.walk_in_root: links are followed inside the root, missing parts made there."""
    import pytest

    from engine.runtime import nsinit

    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    os.symlink(str(sentinel.victim), root / "abs")
    os.symlink("../" * 10 + str(sentinel.root).lstrip("/"), root / "up")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for path, create in [("/abs/x/y", "dir"), ("/up/victim/z", "file"), ("/real/../../../abs/w", "dir")]:
            fd = nsinit.walk_in_root(root_fd, path, create)
            where = os.readlink(f"/proc/self/fd/{fd}")
            os.close(fd)
            assert where.startswith(str(root) + "/"), (path, where)
        assert (root / str(sentinel.victim).lstrip("/") / "x" / "y").is_dir()
        assert (root / str(sentinel.victim).lstrip("/") / "z").is_file()
        with pytest.raises(nsinit.SetupError, match="too many levels"):
            nsinit.walk_in_root(root_fd, "/loop1/x", "dir")
        with pytest.raises(FileNotFoundError):
            nsinit.walk_in_root(root_fd, "/missing")
    finally:
        os.close(root_fd)
    sentinel.check()


def test_mounts_nested_in_a_cache_are_attached_inside_it(tmp_path: Path, sentinel: Sentinel) -> None:
    from engine.runtime.base import BindMount, TmpfsMount
    from engine.solver.mounts import Staging, open_dir_in_root
    from engine.solver.nested_mounts import attach_under_caches

    cache = tmp_path / "cache"
    cache.mkdir()
    os.symlink(str(sentinel.victim), cache / "sub")  # a link a step left in the shared cache
    os.symlink("../" * 10 + str(sentinel.root).lstrip("/"), cache / "up")
    data = tmp_path / "data.txt"
    data.write_text("data\n")
    with Staging(tmp_path / "mounts", overlay=True) as staging:
        fd = open_dir_in_root(str(cache), "/")
        source = staging.bind_fd(fd)
        os.close(fd)
        mounts = [
            BindMount(source, "/c", readonly=False),
            TmpfsMount("/c/sub/t"),
            BindMount(str(data), "/c/up/victim/b", readonly=True),
            BindMount(str(tmp_path / "mounts"), "/other", readonly=True),
        ]
        left = attach_under_caches(mounts, {"/c"}, str(staging.dir))
        assert left == [mounts[0], mounts[3]]
        inside = Path(source) / str(sentinel.victim).lstrip("/")
        assert (inside / "b").read_text() == "data\n"
        try:
            (inside / "b").write_text("changed")
            raise AssertionError("the read-only bind is writable")
        except OSError:
            pass
        (inside / "t" / "in-tmpfs").write_text("x")
        with open("/proc/self/mountinfo") as handle:
            points = [line.split()[4] for line in handle]
        assert str(inside / "t") in points and str(inside / "b") in points
        sentinel.check()
    with open("/proc/self/mountinfo") as handle:
        assert not [line for line in handle if str(tmp_path) in line]
    assert not (cache / str(sentinel.victim).lstrip("/") / "t" / "in-tmpfs").exists()  # it was on the tmpfs
    assert data.read_text() == "data\n"
    sentinel.check()
