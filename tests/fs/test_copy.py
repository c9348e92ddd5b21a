"""COPY into a destination root: Docker/BuildKit placement rules, metadata, safety.

Every test runs on real directories: a source tree with symlinks (relative, absolute,
pointing out of the root), hardlinks, setuid/setgid/sticky modes, empty dirs, a fifo,
a device node, xattrs and wildcard-looking names; a destination root with symlinks to
`/`, to `../../etc` and to the host. A sentinel tree outside both roots is compared
before and after every test: nothing may escape.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.errors import ContextError, ShipyardError
from engine.fs.copy import MULTIPLE_SOURCES_MESSAGE, CopyError, CopyOptions, CopyStats, copy_into
from engine.fs.selection import select_sources, split_parents

T0 = 1_600_000_000_000_000_000  # fixed source mtimes (ns), one second apart per entry
SECRET = b"TOP SECRET host file"


@dataclass
class Env:
    src: Path
    dst: Path
    host: Path

    def copy(self, *sources: str, dest: str, opts: CopyOptions | None = None, **select: bool) -> CopyStats:
        selected = [s for src in sources for s in select_sources(str(self.src), src, **select)]
        return copy_into(str(self.src), selected, str(self.dst), dest, opts or CopyOptions())

    def d(self, path: str) -> Path:
        return self.dst / path.lstrip("/")


def _snapshot(root: Path) -> dict[str, tuple[int, int, int, str]]:
    out: dict[str, tuple[int, int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            digest = hashlib.sha256(Path(p).read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


def _build_source(src: Path, host: Path) -> None:
    for d in ("dir/sub", "dir/empty", "dir2", "dor", "sgid_dir", "sticky", "deep/a/b"):
        (src / d).mkdir(parents=True)
    files = {
        "a.txt": "A",
        "b.txt": "B",
        "c.md": "C",
        "[ab].txt": "literal brackets",
        "a*b.txt": "literal star",
        "setuid.sh": "#!/bin/sh\n",
        "dir/x.txt": "X",
        "dir/sub/y.txt": "Y",
        "dir2/x.txt": "X2",
        "dir2/w.txt": "W2",
        "dor/z.txt": "Z",
        "sgid_dir/f": "F",
        "deep/a/b/f.txt": "deep",
        "hard1": "linked",
    }
    for rel, text in files.items():
        (src / rel).write_text(text)
    os.link(src / "hard1", src / "dir/hard2")
    os.symlink("a.txt", src / "link_rel")
    os.symlink("dir", src / "link_dir")
    os.symlink("../a.txt", src / "dir/inner_link")
    os.symlink("../host/secret.txt", src / "link_out")
    os.symlink(str(host / "secret.txt"), src / "link_abs_out")
    os.mkfifo(src / "fifo")
    os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(src / "setuid.sh", 0o4755)
    os.chmod(src / "b.txt", 0o600)
    os.chmod(src / "dir", 0o750)
    os.chmod(src / "sgid_dir", 0o2775)
    os.chmod(src / "sticky", 0o1777)
    os.chown(src / "a.txt", 1234, 5678)
    os.chown(src / "dir", 1111, 2222)
    os.chown(src / "link_rel", 4321, 8765, follow_symlinks=False)
    os.setxattr(src / "a.txt", "user.test", b"v1")
    os.setxattr(src / "dir", "user.d", b"dv")
    os.setxattr(src / "dir2", "trusted.overlay.opaque", b"y")
    os.setxattr(src / "dir2", "trusted.other", b"kept")
    # Fixed, distinct mtimes (deepest first so a parent's time is not bumped later).
    paths = sorted((p for p in src.rglob("*")), key=lambda p: (-len(p.parts), str(p)))
    for i, p in enumerate(paths + [src]):
        os.utime(p, ns=(T0 + i * 10**9, T0 + i * 10**9), follow_symlinks=False)


def _build_dest(dst: Path, host: Path) -> None:
    (dst / "etc").mkdir(parents=True)
    (dst / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (dst / "existing_dir").mkdir()
    (dst / "existing_dir/old.txt").write_text("old")
    os.chmod(dst / "existing_dir", 0o700)
    os.chown(dst / "existing_dir", 42, 42)
    (dst / "existing_file").write_text("existing")
    os.symlink("/", dst / "to_root")
    os.symlink("../../etc", dst / "to_etc")
    os.symlink(str(host / "victim"), dst / "to_host")
    os.symlink(str(host / "secret.txt"), dst / "to_secret")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.fail("these tests need root (chown, device nodes, trusted.* xattrs)")
    host = tmp_path / "host"
    (host / "victim").mkdir(parents=True)
    (host / "secret.txt").write_bytes(SECRET)
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    _build_source(src, host)
    _build_dest(dst, host)
    before = _snapshot(host)
    yield Env(src=src, dst=dst, host=host)
    assert _snapshot(host) == before, "something outside the roots changed"
    assert os.listdir(host / "victim") == []
    for dirpath, _, filenames in os.walk(dst):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                assert Path(p).read_bytes() != SECRET, f"host secret copied to {p}"


def describe(root: Path, *, times: bool = True) -> dict[str, tuple[object, ...]]:
    """rel → (type, mode, uid, gid, mtime, payload) for everything below root."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(kind):
                payload: object = Path(p).read_bytes()
            elif stat.S_ISLNK(kind):
                payload = os.readlink(p)
            elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
                payload = st.st_rdev
            else:
                payload = None
            out[os.path.relpath(p, root)] = (
                kind,
                stat.S_IMODE(st.st_mode) if not stat.S_ISLNK(kind) else None,
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns if times else None,
                payload,
            )
    return out


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


# -- COPY . /dst/ : everything, exactly -----------------------------------------------


def test_copy_whole_context_preserves_everything(env: Env) -> None:
    stats = env.copy("/", dest="/app/")
    assert describe(env.d("/app")) == describe(env.src)
    app = env.d("/app")
    # The destination dir: created 0755, times of the source root (BuildKit).
    assert mode(app) == 0o755
    assert os.lstat(app).st_mtime_ns == os.lstat(env.src).st_mtime_ns
    # Hardlinks stay hardlinks.
    assert os.lstat(app / "hard1").st_ino == os.lstat(app / "dir/hard2").st_ino
    assert os.lstat(app / "hard1").st_nlink == 2
    # setuid / setgid / sticky.
    assert mode(app / "setuid.sh") == 0o4755
    assert mode(app / "sgid_dir") == 0o2775
    assert mode(app / "sticky") == 0o1777
    # Symlinks are copied as links, targets unchanged, never followed.
    assert os.readlink(app / "link_out") == "../host/secret.txt"
    assert os.readlink(app / "link_abs_out") == str(env.host / "secret.txt")
    assert os.readlink(app / "dir/inner_link") == "../a.txt"
    # Special files and xattrs (trusted.overlay.* excluded).
    assert stat.S_ISFIFO(os.lstat(app / "fifo").st_mode)
    assert os.lstat(app / "null").st_rdev == os.makedev(1, 3)
    assert os.getxattr(app / "a.txt", "user.test") == b"v1"
    assert os.getxattr(app / "dir", "user.d") == b"dv"
    assert os.getxattr(app / "dir2", "trusted.other") == b"kept"
    assert "trusted.overlay.opaque" not in os.listxattr(app / "dir2")
    assert stats.hardlinks == 1
    assert stats.symlinks == 5
    assert stats.special == 2
    regular = [p for p in env.src.rglob("*") if p.is_file() and not p.is_symlink()]
    assert stats.files == len(regular) - 1  # dir/hard2 is a link, not a copy


def test_second_copy_over_the_first_is_identical(env: Env) -> None:
    env.copy("/", dest="/app/")
    first = describe(env.d("/app"))
    env.copy("/", dest="/app/")
    assert describe(env.d("/app")) == first


# -- placement rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sources", "dest", "expected"),
    [
        # COPY dir /dst: the contents of dir.
        (
            ["/dir"],
            "/dst",
            {"dst/x.txt": "X", "dst/sub/y.txt": "Y", "dst/hard2": "linked", "dst/inner_link": "-> ../a.txt"},
        ),
        (
            ["/dir/"],
            "/dst/",
            {"dst/x.txt": "X", "dst/sub/y.txt": "Y", "dst/hard2": "linked", "dst/inner_link": "-> ../a.txt"},
        ),
        # COPY file /dst/ and COPY file /dst (rename).
        (["/a.txt"], "/dst/", {"dst/a.txt": "A"}),
        (["/a.txt"], "/dst", {"dst": "A"}),
        (["/a.txt"], "/deep/er/name.txt", {"deep/er/name.txt": "A"}),
        # An existing directory without a trailing slash still receives the file.
        (["/a.txt"], "/existing_dir", {"existing_dir/a.txt": "A", "existing_dir/old.txt": "old"}),
        # An existing file is replaced.
        (["/a.txt"], "/existing_file", {"existing_file": "A"}),
        # Several sources into a directory; directories merge.
        (
            ["/a.txt", "/dir", "/dir2"],
            "/m/",
            {
                "m/a.txt": "A",
                "m/x.txt": "X2",
                "m/w.txt": "W2",
                "m/sub/y.txt": "Y",
                "m/hard2": "linked",
                "m/inner_link": "-> ../a.txt",
            },
        ),
        # Wildcards.
        (
            ["/*.txt"],
            "/w/",
            {"w/a.txt": "A", "w/b.txt": "B", "w/[ab].txt": "literal brackets", "w/a*b.txt": "literal star"},
        ),
        (["/[ab].txt"], "/w/", {"w/a.txt": "A", "w/b.txt": "B"}),
        (["/\\[ab].txt"], "/w/", {"w/[ab].txt": "literal brackets"}),
        (["/a\\*b.txt"], "/w/", {"w/a*b.txt": "literal star"}),
        # d?r/* matches dir/* and dor/*; matched directories contribute their contents
        # and a matched symlink is followed (inside the root).
        (
            ["/d?r/*"],
            "/w/",
            {"w/x.txt": "X", "w/y.txt": "Y", "w/z.txt": "Z", "w/hard2": "linked", "w/inner_link": "A"},
        ),
        # A wildcard with a single match may name the destination file.
        (["/c.*"], "/renamed.md", {"renamed.md": "C"}),
        # A source symlink is followed, inside the source root.
        (["/link_rel"], "/l", {"l": "A"}),
        (
            ["/link_dir"],
            "/l/",
            {"l/x.txt": "X", "l/sub/y.txt": "Y", "l/hard2": "linked", "l/inner_link": "-> ../a.txt"},
        ),
    ],
)
def test_placement(env: Env, sources: list[str], dest: str, expected: dict[str, str]) -> None:
    env.copy(*sources, dest=dest)
    for rel, text in expected.items():
        p = env.d(rel)
        if text.startswith("-> "):
            assert os.readlink(p) == text[3:], rel
            continue
        assert p.is_file() and not p.is_symlink(), rel
        assert p.read_text() == text, rel
    top = {rel.split("/")[0] for rel in expected}
    for name in top:
        if env.d(name).is_dir():
            got = {os.path.relpath(os.path.join(dp, f), env.dst) for dp, _, fs in os.walk(env.d(name)) for f in fs}
            assert got == set(expected) | ({"existing_dir/old.txt"} if name == "existing_dir" else set())


def test_several_sources_need_a_trailing_slash(env: Env) -> None:
    with pytest.raises(CopyError, match=MULTIPLE_SOURCES_MESSAGE.replace("/", "\\/")):
        env.copy("/a.txt", "/b.txt", dest="/dst")
    with pytest.raises(CopyError, match="more than one source file"):
        env.copy("/*.txt", dest="/dst")  # a wildcard with several matches
    assert not env.d("/dst").exists()
    env.copy("/a.txt", "/b.txt", dest="/dst/")
    assert sorted(os.listdir(env.d("/dst"))) == ["a.txt", "b.txt"]


def test_dir_itself_when_not_contents_only(env: Env) -> None:
    env.copy("/dir", dest="/existing_dir", opts=CopyOptions(dir_contents_only=False))
    assert (env.d("/existing_dir/dir/x.txt")).read_text() == "X"
    assert mode(env.d("/existing_dir/dir")) == 0o750
    env.copy("/dir", dest="/newname", opts=CopyOptions(dir_contents_only=False))
    assert (env.d("/newname/x.txt")).read_text() == "X"
    assert mode(env.d("/newname")) == 0o750


def test_missing_source_and_empty_wildcard(env: Env) -> None:
    with pytest.raises(ContextError, match='"/nope": not found'):
        env.copy("/nope", dest="/x/")
    assert env.copy("/*.nothing", dest="/x/") == CopyStats()
    assert not env.d("/x").exists()  # an empty match creates nothing
    with pytest.raises(ContextError, match="not found"):
        env.copy("/*.nothing", dest="/x/", allow_empty_wildcard=False)


def test_create_dest_path_false(env: Env) -> None:
    with pytest.raises(CopyError, match="failed to stat /missing/x"):
        env.copy("/a.txt", dest="/missing/x", opts=CopyOptions(create_dest_path=False))
    env.copy("/a.txt", dest="/existing_dir/x", opts=CopyOptions(create_dest_path=False))
    assert env.d("/existing_dir/x").read_text() == "A"


# -- existing destinations -------------------------------------------------------------


def test_existing_file_is_replaced_not_rewritten(env: Env) -> None:
    os.link(env.d("/existing_file"), env.d("/keep"))  # another name for the old inode
    env.copy("/a.txt", dest="/existing_file")
    assert env.d("/existing_file").read_text() == "A"
    assert env.d("/keep").read_text() == "existing"


def test_existing_dir_is_merged_and_keeps_mode_and_owner(env: Env) -> None:
    env.copy("/dir", dest="/existing_dir")
    d = env.d("/existing_dir")
    assert sorted(os.listdir(d)) == ["empty", "hard2", "inner_link", "old.txt", "sub", "x.txt"]
    assert mode(d) == 0o700 and owner(d) == (42, 42)
    # ...but takes the source directory's times, like BuildKit.
    assert os.lstat(d).st_mtime_ns == os.lstat(env.src / "dir").st_mtime_ns


def test_nested_existing_dir_takes_source_metadata(env: Env) -> None:
    (env.d("/m/sub")).mkdir(parents=True)
    os.chmod(env.d("/m/sub"), 0o700)
    os.chown(env.d("/m/sub"), 42, 42)
    env.copy("/dir", dest="/m")
    src_sub = os.lstat(env.src / "dir/sub")
    assert mode(env.d("/m/sub")) == stat.S_IMODE(src_sub.st_mode)
    assert owner(env.d("/m/sub")) == (src_sub.st_uid, src_sub.st_gid)
    assert os.lstat(env.d("/m/sub")).st_mtime_ns == src_sub.st_mtime_ns


def test_file_cannot_replace_a_directory(env: Env) -> None:
    env.d("/t/a.txt").mkdir(parents=True)
    with pytest.raises(CopyError, match="cannot replace to directory /t/a.txt with file"):
        env.copy("/a.txt", dest="/t/")


def test_directory_cannot_replace_a_file(env: Env) -> None:
    with pytest.raises(CopyError, match="cannot copy to non-directory: /existing_file"):
        env.copy("/dir", dest="/existing_file")
    env.d("/t").mkdir()
    env.d("/t/sub").write_text("a file where the source has a directory")
    with pytest.raises(CopyError, match="cannot copy to non-directory: /t/sub"):
        env.copy("/dir", dest="/t")


def test_symlink_below_the_destination_is_never_followed(env: Env) -> None:
    env.d("/t").mkdir()
    os.symlink(str(env.host / "victim"), env.d("/t/sub"))  # the source has a dir "sub"
    with pytest.raises(CopyError, match="cannot copy to non-directory: /t/sub"):
        env.copy("/dir", dest="/t")
    os.unlink(env.d("/t/sub"))
    os.symlink(str(env.host / "secret.txt"), env.d("/t/x.txt"))  # the source has a file x.txt
    env.copy("/dir/x.txt", dest="/t/")
    assert not env.d("/t/x.txt").is_symlink()
    assert env.d("/t/x.txt").read_text() == "X"


# -- destinations through symlinks stay inside the root ------------------------------------


@pytest.mark.parametrize(
    ("dest", "lands_at"),
    [
        ("/to_root/", "/a.txt"),
        ("/to_root/sub/", "/sub/a.txt"),
        ("/to_etc/", "/etc/a.txt"),
        ("/to_etc/passwd", "/etc/passwd"),
        ("/to_host/", None),  # <root>/<host path>/victim/a.txt
        ("/to_secret", None),  # replaces <root>/<host path>/secret.txt, not the host file
    ],
)
def test_destination_symlinks_resolve_inside_the_root(env: Env, dest: str, lands_at: str | None) -> None:
    env.copy("/a.txt", dest=dest)
    if lands_at is None:
        base = env.dst / str(env.host).lstrip("/")
        lands = base / "victim/a.txt" if dest.endswith("/") else base / "secret.txt"
    else:
        lands = env.d(lands_at)
    assert lands.read_text() == "A"
    link = env.d(dest.strip("/").split("/")[0])
    assert link.is_symlink()  # the symlink itself is untouched


def test_source_symlink_out_of_the_root_is_followed_inside_it(env: Env) -> None:
    for src in ("/link_out", "/link_abs_out"):
        with pytest.raises(ContextError, match="not found"):
            env.copy(src, dest="/l")
    # The same targets recreated inside the source root are what gets copied.
    (env.src / "host").mkdir()
    (env.src / "host/secret.txt").write_text("in-root one")
    inside = env.src / str(env.host / "secret.txt").lstrip("/")
    inside.parent.mkdir(parents=True)
    inside.write_text("in-root two")
    env.copy("/link_out", dest="/l1")
    env.copy("/link_abs_out", dest="/l2")
    assert env.d("/l1").read_text() == "in-root one"
    assert env.d("/l2").read_text() == "in-root two"


def test_source_symlink_copied_as_a_link_without_follow(env: Env) -> None:
    env.copy("/link_abs_out", dest="/l", follow_symlinks=False)
    assert os.readlink(env.d("/l")) == str(env.host / "secret.txt")
    env.copy("/link_dir", dest="/k/", follow_symlinks=False)
    assert os.readlink(env.d("/k/link_dir")) == "dir"


def test_symlinks_inside_a_copied_dir_are_links(env: Env) -> None:
    env.copy("/", dest="/all/")
    for name in ("link_out", "link_abs_out", "link_dir"):
        assert env.d(f"/all/{name}").is_symlink()


# -- ownership and modes ---------------------------------------------------------------


def test_owner_preserved_by_default(env: Env) -> None:
    env.copy("/", dest="/o/")
    assert owner(env.d("/o/a.txt")) == (1234, 5678)
    assert owner(env.d("/o/dir")) == (1111, 2222)
    assert owner(env.d("/o/link_rel")) == (4321, 8765)
    assert owner(env.d("/o/b.txt")) == (0, 0)


def test_owner_reset_to_root(env: Env) -> None:
    env.copy("/", dest="/o/", opts=CopyOptions(preserve_owner=False))
    assert {v[2:4] for v in describe(env.d("/o")).values()} == {(0, 0)}


def test_explicit_owner(env: Env) -> None:
    env.copy("/", dest="/p/q/", opts=CopyOptions(owner=(1000, 1001)))
    assert {v[2:4] for v in describe(env.d("/p/q")).values()} == {(1000, 1001)}
    # Created parents belong to --chown's owner too (BuildKit); without it, to root.
    assert owner(env.d("/p")) == (1000, 1001)
    assert mode(env.d("/p")) == 0o755
    env.copy("/a.txt", dest="/r/s/")
    assert owner(env.d("/r")) == (0, 0)


@pytest.mark.parametrize(
    ("opts", "file_mode", "dir_mode", "setuid_mode"),
    [
        (CopyOptions(mode=0o640), 0o640, 0o640, 0o640),
        (CopyOptions(mode=0o4711), 0o4711, 0o4711, 0o4711),
        (CopyOptions(mode_str="u+x,g-w"), 0o744, 0o750, 0o4755),
        (CopyOptions(mode_str="go-rwx"), 0o600, 0o700, 0o4700),
        (CopyOptions(mode_str="a+X"), 0o644, 0o751, 0o4755),
        (CopyOptions(mode_str="u=rw,go=r"), 0o644, 0o644, 0o644),
    ],
)
def test_chmod(env: Env, opts: CopyOptions, file_mode: int, dir_mode: int, setuid_mode: int) -> None:
    env.copy("/", dest="/c/", opts=opts)
    c = env.d("/c")
    assert mode(c / "a.txt") == file_mode  # source 0644
    assert mode(c / "dir") == dir_mode  # source 0750
    assert mode(c / "setuid.sh") == setuid_mode  # source 04755
    assert mode(c) == 0o755  # the destination directory itself is not changed
    assert os.readlink(c / "link_rel") == "a.txt"


def test_chmod_leaves_an_existing_destination_dir_alone(env: Env) -> None:
    env.copy("/dir", dest="/existing_dir", opts=CopyOptions(mode=0o777))
    assert mode(env.d("/existing_dir")) == 0o700
    assert mode(env.d("/existing_dir/x.txt")) == 0o777


def test_invalid_chmod(env: Env) -> None:
    with pytest.raises(ShipyardError, match="invalid chmod parameter"):
        env.copy("/a.txt", dest="/x", opts=CopyOptions(mode_str="u+q"))


def test_timestamp_option(env: Env) -> None:
    ts = 1_700_000_000_123_456_789
    env.copy("/dir", dest="/t/", opts=CopyOptions(timestamp_ns=ts))
    assert {v[4] for rel, v in describe(env.d("/t")).items()} == {ts}


# -- --parents -------------------------------------------------------------------------


def test_parents_full_path(env: Env) -> None:
    env.copy("/dir/sub/y.txt", "/dir2/x.txt", dest="/p/", opts=CopyOptions(parents=True))
    assert env.d("/p/dir/sub/y.txt").read_text() == "Y"
    assert env.d("/p/dir2/x.txt").read_text() == "X2"
    assert sorted(os.listdir(env.d("/p"))) == ["dir", "dir2"]
    # Recreated parents carry the source directories' metadata.
    for rel in ("dir", "dir/sub", "dir2"):
        assert describe(env.d("/p"))[rel][:5] == describe(env.src)[rel][:5], rel


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("/dir/./sub/*.txt", {"sub/y.txt"}),
        ("/./dir/x.txt", {"dir/x.txt"}),
        ("/deep/a/./b/f.txt", {"b/f.txt"}),
        ("/d*/./x.txt", {"x.txt"}),  # from dir and dir2: the later source wins
        ("/dir/./**/*.txt", {"x.txt", "sub/y.txt"}),
        ("/deep/./a", {"a/b/f.txt"}),
    ],
)
def test_parents_with_pivot(env: Env, src: str, expected: set[str]) -> None:
    pivot, pattern = split_parents(src)
    env.copy(pivot, dest="/p/", opts=CopyOptions(parents=True, include_patterns=(pattern,)))
    got = {os.path.relpath(os.path.join(dp, f), env.d("/p")) for dp, _, fs in os.walk(env.d("/p")) for f in fs}
    assert got == expected


def test_parents_required_path(env: Env) -> None:
    pivot, pattern = split_parents("/dir/./nope.txt")
    with pytest.raises(ContextError, match='"/dir/nope.txt": not found'):
        env.copy(pivot, dest="/p/", opts=CopyOptions(parents=True, include_patterns=(pattern,)))


def test_parents_lazily_created_dirs_get_source_metadata(env: Env) -> None:
    env.copy("/", dest="/p/", opts=CopyOptions(parents=True, include_patterns=("dir/sub/y.txt",)))
    assert describe(env.d("/p")) == {
        k: v for k, v in describe(env.src).items() if k in ("dir", "dir/sub", "dir/sub/y.txt")
    }


# -- --exclude ----------------------------------------------------------------------------


def _files(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(dp, f), root) for dp, _, fs in os.walk(root) for f in fs}


@pytest.mark.parametrize(
    ("src", "patterns", "missing", "present"),
    [
        ("/", ("*.txt",), {"a.txt", "b.txt"}, {"dir/x.txt", "c.md"}),  # anchored at the source
        ("/", ("**/*.txt",), {"a.txt", "dir/x.txt", "dir/sub/y.txt"}, {"c.md", "hard1"}),
        ("/", ("**/*.txt", "!dir/x.txt"), {"a.txt", "dir/sub/y.txt"}, {"dir/x.txt"}),
        ("/", ("*.md", "!c.md", "c.md"), {"c.md"}, {"a.txt"}),  # the last match wins
        ("/", ("dir",), {"dir/x.txt", "dir/sub/y.txt", "dir/hard2"}, {"dir2/x.txt"}),
        ("/", ("dir", "!dir/sub/y.txt"), {"dir/x.txt", "dir/hard2"}, {"dir/sub/y.txt"}),
        ("/", ("*/*.txt",), {"dir/x.txt", "dir2/x.txt"}, {"a.txt", "dir/sub/y.txt"}),
        ("/", ("deep/**",), {"deep/a/b/f.txt"}, {"a.txt"}),
        # Patterns apply below each source: BuildKit's `--exclude=*.png dir*` case.
        ("/d*", ("*.txt",), {"x.txt", "w.txt", "z.txt"}, {"hard2", "sub/y.txt"}),
        ("/dir", ("sub",), {"sub/y.txt"}, {"x.txt"}),
        # A file source whose own name matches is not copied.
        ("/*.txt", ("b*",), {"b.txt"}, {"a.txt"}),
    ],
)
def test_exclude(env: Env, src: str, patterns: tuple[str, ...], missing: set[str], present: set[str]) -> None:
    env.copy(src, dest="/e/", opts=CopyOptions(exclude_patterns=patterns))
    got = _files(env.d("/e"))
    assert not (missing & got), missing & got
    assert present <= got, present - got


def test_exclude_everything_leaves_an_empty_destination(env: Env) -> None:
    env.copy("/d*", dest="/six/", opts=CopyOptions(exclude_patterns=("*",)))
    assert os.listdir(env.d("/six")) == []


def test_excluded_parent_dirs_of_exceptions_are_created_with_source_metadata(env: Env) -> None:
    env.copy("/", dest="/e/", opts=CopyOptions(exclude_patterns=("dir", "!dir/sub/y.txt")))
    assert sorted(os.listdir(env.d("/e/dir"))) == ["sub"]
    assert mode(env.d("/e/dir")) == 0o750
    assert owner(env.d("/e/dir")) == (1111, 2222)


# -- many files, big files: the worker pool ---------------------------------------------------


def test_many_and_large_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    dst.mkdir()
    blob = os.urandom(1 << 20)
    for i in range(300):
        sub = src / f"d{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}").write_bytes(blob[i : i + 5000])
    for i in range(12):
        (src / f"big{i}").write_bytes(blob * 2 + bytes([i]))
    os.link(src / "big0", src / "d0/big0-link")
    stats = copy_into(str(src), select_sources(str(src), "/"), str(dst), "/out/", CopyOptions())
    assert stats.files == 312
    assert stats.hardlinks == 1
    assert stats.bytes == 300 * 5000 + 12 * (2 * len(blob) + 1)
    assert describe(dst / "out") == describe(src)


def test_errors_are_one_line_with_in_root_paths(env: Env) -> None:
    env.d("/ro").mkdir()
    env.d("/ro/a.txt").mkdir()
    with pytest.raises(CopyError) as info:
        env.copy("/a.txt", dest="/ro/")
    assert str(env.dst) not in str(info.value)
    assert "\n" not in str(info.value)


def test_later_sources_replace_files_of_earlier_ones_with_workers(tmp_path: Path) -> None:
    """Enough files to go through the worker threads: source B must win everywhere."""
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    dst.mkdir()
    for name, text in (("A", "from A"), ("B", "from B")):
        (src / name / "sub").mkdir(parents=True)
        for i in range(150):
            (src / name / ("sub" if i % 2 else ".") / f"f{i}").write_text(text)
    sources = select_sources(str(src), "/A") + select_sources(str(src), "/B")
    copy_into(str(src), sources, str(dst), "/m/", CopyOptions())
    texts = {Path(dp, f).read_text() for dp, _, fs in os.walk(dst / "m") for f in fs}
    assert texts == {"from B"}
    assert len(_files(dst / "m")) == 150


def test_a_source_outside_the_source_root_is_refused(env: Env) -> None:
    from engine.fs.selection import Selected

    outside = Selected(rel="secret.txt", host_path=str(env.host / "secret.txt"), is_dir=False, from_wildcard=False)
    with pytest.raises(ContextError, match="escapes the source root"):
        copy_into(str(env.src), [outside], str(env.dst), "/x/", CopyOptions())
    assert not env.d("/x").exists()


def test_parents_with_an_empty_pattern_copies_the_whole_pivot(env: Env) -> None:
    pivot, pattern = split_parents("/dir/./")
    assert (pivot, pattern) == ("/dir", "")
    env.copy(pivot, dest="/p/", opts=CopyOptions(parents=True, include_patterns=(pattern,)))
    assert _files(env.d("/p")) == {"x.txt", "sub/y.txt", "hard2", "inner_link"}
