"""The pieces of engine.solver.mounts that keep mounts inside their roots, on the real kernel.

In-root descriptor resolution (openat2), mountpoint stubs that are removed only if
still ours, descriptor-pinned staging binds, the rw overlay, and the ssh socket
forwarder talking to a real ssh-agent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from engine.runtime.base import BindMount, TmpfsMount
from engine.solver.mounts import MountError, MountStubs, Staging, open_dir_in_root, open_in_root


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """(root, host): a root whose links point at a host directory by absolute path."""
    root, host = tmp_path / "root", tmp_path / "host"
    (root / "real").mkdir(parents=True)
    host.mkdir()
    (host / "secret.txt").write_text("host\n")
    os.symlink(str(host), root / "abs")
    os.symlink("../../../../../..", root / "up")
    return root, host


def test_open_in_root_resolves_links_inside_the_root(tree: tuple[Path, Path]) -> None:
    root, _host = tree
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        fd = open_in_root(root_fd, "up", os.O_PATH)
        assert _fd_path(fd) == str(root)
        os.close(fd)
        with pytest.raises(FileNotFoundError):
            open_in_root(root_fd, "abs/secret.txt", os.O_PATH)  # /…/host inside the root: absent
    finally:
        os.close(root_fd)


def test_open_dir_in_root_makes_missing_dirs_where_a_dangling_link_points(tree: tuple[Path, Path]) -> None:
    root, host = tree
    fd = open_dir_in_root(str(root), "abs/sub")
    try:
        made = _fd_path(fd)
    finally:
        os.close(fd)
    assert made == str(root) + str(host) + "/sub"
    assert sorted(os.listdir(host)) == ["secret.txt"]


def test_stubs_are_removed_only_while_still_ours(tree: tuple[Path, Path]) -> None:
    root, host = tree
    stubs = MountStubs(str(root))
    stubs.make_all([TmpfsMount("/a/b/c"), BindMount(str(host / "secret.txt"), "/f/file"), TmpfsMount("/a/b/c/nested")])
    assert (root / "a" / "b" / "c").is_dir() and (root / "f" / "file").is_file()
    assert not (root / "a" / "b" / "c" / "nested").exists()  # under another mount: the runtime's job
    # the step swaps /a for a link to the host, where an empty "b/c" directory waits
    os.rename(root / "a", root / "a.moved")
    os.symlink(str(host), root / "a")
    (host / "b" / "c").mkdir(parents=True)
    (root / "f" / "file").write_text("written through the mountpoint's place")
    stubs.remove()
    assert (host / "b" / "c").is_dir(), "cleanup followed the swapped parent out of the root"
    assert (root / "a.moved" / "b" / "c").is_dir()  # moved away: no longer where it was made
    assert (root / "f" / "file").exists()  # not empty any more: not ours to delete
    again = MountStubs(str(root))
    again.make("/g/h", directory=True)
    again.remove()
    assert not (root / "g").exists()


def test_stub_target_escaping_with_links_lands_inside_the_root(tree: tuple[Path, Path]) -> None:
    root, host = tree
    stubs = MountStubs(str(root))
    stubs.make("/abs/new/target", directory=True)
    assert (root / str(host).lstrip("/") / "new" / "target").is_dir()
    assert sorted(os.listdir(host)) == ["secret.txt"]
    stubs.remove()
    assert not (root / str(host).lstrip("/") / "new").exists()


def test_staging_bind_pins_the_directory_that_was_resolved(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "sub").mkdir(parents=True)
    (cache / "sub" / "inside.txt").write_text("in\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "host.txt").write_text("host\n")
    with Staging(tmp_path / "mounts", overlay=True) as staging:
        fd = open_dir_in_root(str(cache), "sub")
        path = staging.bind_fd(fd)
        os.close(fd)
        # a concurrent step swaps the subpath for a link out of the cache
        os.rename(cache / "sub", cache / "old")
        os.symlink(str(outside), cache / "sub")
        assert sorted(os.listdir(path)) == ["inside.txt"]
        staging_dir = staging.dir
    assert staging_dir is not None and not staging_dir.exists()
    assert (outside / "host.txt").read_text() == "host\n"


def test_writable_copy_discards_writes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("original\n")
    for overlay in (True, False):
        with Staging(tmp_path / f"mounts-{overlay}", overlay=overlay) as staging:
            path = Path(staging.writable_copy(str(src)))
            (path / "f").write_text("changed\n")
            (path / "new").write_text("new\n")
            assert (path / "f").read_text() == "changed\n"
        assert (src / "f").read_text() == "original\n" and not (src / "new").exists()


def test_secret_file_has_the_mode_and_owner_asked_for(tmp_path: Path) -> None:
    with Staging(tmp_path / "mounts", overlay=True) as staging:
        path = staging.secret_file(b"value", 7, 8, 0o440)
        st = os.stat(path)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (7, 8, 0o440)
        assert Path(path).read_bytes() == b"value"
        with open("/proc/self/mountinfo") as handle:
            mounted = [line.split() for line in handle if os.path.dirname(path) in line]
        assert mounted and mounted[0][mounted[0].index("-") + 1] == "tmpfs"
    assert not os.path.exists(path)


def _ssh_add(sock: str) -> subprocess.CompletedProcess:
    env = {"SSH_AUTH_SOCK": sock, "PATH": os.environ["PATH"]}
    return subprocess.run(["ssh-add", "-l"], env=env, capture_output=True, text=True, check=False)


def test_ssh_forwarder_and_key_agent_serve_real_ssh_clients(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test-key", "-f", str(key)], check=True)
    with Staging(tmp_path / "mounts", overlay=True) as staging:
        agent = staging.agent_socket((str(key),))
        forwarded = staging.forward_socket(agent, 0, 0, 0o600)
        assert os.stat(forwarded).st_mode & 0o777 == 0o600
        listing = _ssh_add(forwarded)
        assert listing.returncode == 0 and "test-key" in listing.stdout
        with pytest.raises(MountError, match="neither an agent socket nor a key file"):
            staging.agent_socket((str(tmp_path / "missing"),))
        socket_dir = os.path.dirname(forwarded)
    assert not os.path.exists(socket_dir)
    assert shutil.which("ssh-agent")


def test_ssh_forwarder_relays_to_an_existing_agent_socket(tmp_path: Path) -> None:
    sock = str(tmp_path / "agent.sock")
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(sock):
            time.sleep(0.01)
        with Staging(tmp_path / "mounts", overlay=True) as staging:
            assert staging.agent_socket(("/nonexistent.sock", sock)) == sock
            forwarded = staging.forward_socket(sock, 0, 0, 0o600)
            for _ in range(3):  # several connections, one after another
                listing = _ssh_add(forwarded)
                assert listing.returncode == 1 and "no identities" in listing.stdout
    finally:
        agent.terminate()
        agent.wait()


def test_filtered_view_hides_what_dockerignore_excludes(tmp_path: Path) -> None:
    from engine.fs.selection import ContextFilter

    ctx = tmp_path / "ctx"
    for rel in ("app/main.py", "app/.env.secret", "build/out.o", "build/keep/k.txt", "README.md"):
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text(rel)
    flt = ContextFilter(["**/*.secret", "build", "!build/keep"])
    with Staging(tmp_path / "mounts", overlay=True) as staging:
        whole = Path(staging.filtered_view(str(ctx), str(ctx), flt))
        found = sorted(str(p.relative_to(whole)) for p in whole.rglob("*") if p.is_file())
        assert found == ["README.md", "app/main.py", "build/keep/k.txt"]
        sub = Path(staging.filtered_view(str(ctx), str(ctx / "app"), flt))
        assert sorted(os.listdir(sub)) == ["main.py"]
        with pytest.raises(Exception, match="excluded by"):
            staging.filtered_view(str(ctx), str(ctx / "app" / ".env.secret"), flt)
    assert (ctx / "app" / "main.py").read_text() == "app/main.py"
