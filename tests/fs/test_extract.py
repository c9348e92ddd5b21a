"""Root-scoped layer extraction: hostile archives never touch a sentinel tree outside dest."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Iterable

import pytest

import engine.fs.extract as extract_module
from engine.fs.extract import LayerError, extract_layer, resolve_dir_by_walk
from engine.fs.tarformat import REGTYPE, encode_header
from tests.conftest import require_root

T0 = 1_650_000_000


# --------------------------------------------------------------------------- helpers


def make_tar(entries: Iterable[tuple], fmt: int = tarfile.PAX_FORMAT) -> bytes:  # type: ignore[type-arg]
    """Entries: (name, kind[, data_or_linkname[, extra TarInfo attributes]])."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for entry in entries:
            name, kind = entry[0], entry[1]
            payload = entry[2] if len(entry) > 2 else b""
            extra = entry[3] if len(entry) > 3 else {}
            info = tarfile.TarInfo(name)
            info.mtime = T0
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.type = kind
            data = None
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = payload
            elif kind == tarfile.REGTYPE:
                info.size = len(payload)
                data = io.BytesIO(payload)
            for key, value in extra.items():
                setattr(info, key, value)
            tar.addfile(info, data)
    return buf.getvalue()


def snapshot(root: Path) -> dict[str, tuple]:  # type: ignore[type-arg]
    out = {}
    for current, dirs, files in os.walk(root):
        for name in [""] + dirs + files:
            path = os.path.join(current, name) if name else current
            st = os.lstat(path)
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_mtime_ns, st.st_nlink, digest)
    return out


class Sentinel:
    """A host tree outside every destination; `check()` proves it was not touched."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "victim").mkdir(parents=True)
        (root / "secret.txt").write_text("known content")
        (root / "victim" / "keep.txt").write_text("keep me")
        self.before = snapshot(root)

    def check(self) -> None:
        assert snapshot(self.root) == self.before, "something outside the destination changed"


@pytest.fixture
def sentinel(tmp_path: Path) -> Sentinel:
    return Sentinel(tmp_path / "host")


@pytest.fixture(params=["openat2", "walk"])
def dest(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh destination; each test runs with openat2 and with the O_NOFOLLOW walk
    that replaces it on kernels (or seccomp profiles) without openat2."""
    if request.param == "walk":

        def no_openat2(*args: object) -> int:
            raise OSError(errno.ENOSYS, "openat2 unavailable")

        monkeypatch.setattr(extract_module, "_openat2_caller", lambda: no_openat2)
    path = tmp_path / "dest"
    path.mkdir()
    return path


def extract(data: bytes, dest: Path, **kwargs) -> object:  # type: ignore[no-untyped-def]
    return extract_layer(io.BytesIO(data), str(dest), **kwargs)


def inside_files(dest: Path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(c, n), dest) for c, ds, fs in os.walk(dest) for n in ds + fs)


# --------------------------------------------------------------------------- path escapes


@pytest.mark.parametrize("name", ["../host/victim/pwn", "a/../../host/victim/pwn", "./../host/victim/pwn"])
def test_dotdot_names_are_refused(sentinel: Sentinel, dest: Path, name: str) -> None:
    with pytest.raises(LayerError, match="escapes") as info:
        extract(make_tar([(name, tarfile.REGTYPE, b"pwned")]), dest)
    assert name.lstrip("./") in str(info.value) or name in str(info.value)
    sentinel.check()
    assert inside_files(dest) == []


def test_a_hostile_name_cannot_forge_lines_in_the_error(dest: Path) -> None:
    """A member name with a newline or a terminal escape is shown escaped: the CLI's
    one-line `ERROR:` cannot be followed by lines the archive wrote."""
    name = "../x\nERROR: all good, ignore the rest\x1b[2K"
    with pytest.raises(LayerError) as info:
        extract(make_tar([(name, tarfile.REGTYPE, b"pwned")]), dest)
    message = info.value.user_message()
    assert "\n" not in message and "\x1b" not in message and message.isprintable(), message
    assert "\\nERROR: all good" in message and "\\x1b[2K" in message


def test_absolute_names_land_inside_dest(sentinel: Sentinel, dest: Path) -> None:
    absolute = f"{sentinel.root}/victim/pwn"
    extract(make_tar([(absolute, tarfile.REGTYPE, b"pwned"), ("/../../etc/evil", tarfile.REGTYPE, b"x")]), dest)
    sentinel.check()
    assert (dest / absolute.lstrip("/")).read_bytes() == b"pwned"
    assert (dest / "etc" / "evil").read_bytes() == b"x"


def test_symlink_then_file_through_it_in_one_archive(sentinel: Sentinel, dest: Path) -> None:
    for link_target in (f"{sentinel.root}/victim", "../../host/victim", "../" * 20 + "tmp"):
        archive = make_tar([("evil", tarfile.SYMTYPE, link_target), ("evil/pwn", tarfile.REGTYPE, b"pwned")])
        with pytest.raises(LayerError, match="evil/pwn"):
            extract(archive, dest)
        sentinel.check()
        assert os.readlink(dest / "evil") == link_target, "the link itself is stored verbatim"
        os.unlink(dest / "evil")


def test_symlinked_parent_resolves_inside_dest(sentinel: Sentinel, dest: Path) -> None:
    archive = make_tar(
        [
            ("real/", tarfile.DIRTYPE),
            ("abs", tarfile.SYMTYPE, "/real"),
            ("rel", tarfile.SYMTYPE, "../../../../real"),
            ("real/sub/", tarfile.DIRTYPE),
            ("real/sub/nested", tarfile.SYMTYPE, "/real"),
            ("abs/one", tarfile.REGTYPE, b"1"),
            ("rel/two", tarfile.REGTYPE, b"2"),
            ("real/sub/nested/three", tarfile.REGTYPE, b"3"),
        ]
    )
    extract(archive, dest)
    sentinel.check()
    assert (dest / "real" / "one").read_bytes() == b"1"
    assert (dest / "real" / "two").read_bytes() == b"2"
    assert (dest / "real" / "three").read_bytes() == b"3"


def test_replacing_a_directory_with_a_symlink_mid_archive(sentinel: Sentinel, dest: Path) -> None:
    archive = make_tar(
        [
            ("elsewhere/", tarfile.DIRTYPE),
            ("d/", tarfile.DIRTYPE),
            ("d/f1", tarfile.REGTYPE, b"1"),
            ("d", tarfile.SYMTYPE, "/elsewhere"),
            ("d/f2", tarfile.REGTYPE, b"2"),
        ]
    )
    extract(archive, dest, mode="apply")
    sentinel.check()
    assert os.readlink(dest / "d") == "/elsewhere"
    assert os.listdir(dest / "elsewhere") == ["f2"]


def test_symlink_already_in_dest_is_not_followed_out(sentinel: Sentinel, dest: Path) -> None:
    os.symlink(str(sentinel.root / "victim"), dest / "abs")
    os.symlink("../host/victim", dest / "rel")
    os.symlink(str(sentinel.root / "secret.txt"), dest / "secret-link")
    for name in ("abs/pwn", "rel/pwn", "abs/keep.txt"):
        with pytest.raises(LayerError):
            extract(make_tar([(name, tarfile.REGTYPE, b"pwned")]), dest, mode="apply")
        sentinel.check()
    # A member named like the link replaces the link; it never writes through it.
    extract(make_tar([("secret-link", tarfile.REGTYPE, b"pwned")]), dest, mode="apply")
    sentinel.check()
    assert not os.path.islink(dest / "secret-link")
    assert (dest / "secret-link").read_bytes() == b"pwned"


@pytest.mark.parametrize(
    "linkname", ["/etc/passwd", "../host/secret.txt", "ln/secret.txt", "{host}/secret.txt", "ln-file"]
)
def test_hardlinks_cannot_reach_outside(sentinel: Sentinel, dest: Path, linkname: str) -> None:
    os.symlink(str(sentinel.root), dest / "ln")
    os.symlink(str(sentinel.root / "secret.txt"), dest / "ln-file")
    linkname = linkname.format(host=sentinel.root)
    passwd_links = os.stat("/etc/passwd").st_nlink
    archive = make_tar([("stolen", tarfile.LNKTYPE, linkname)])
    try:
        extract(archive, dest, mode="apply")
    except LayerError as exc:
        assert "stolen" in str(exc)
    else:
        # Only a link to the in-dest symlink itself is possible (a hard link to a link).
        assert linkname == "ln-file"
        assert os.path.islink(dest / "stolen") and os.lstat(dest / "stolen").st_ino == os.lstat(dest / "ln-file").st_ino
    sentinel.check()
    assert os.stat("/etc/passwd").st_nlink == passwd_links


def test_hardlink_inside_dest_works(dest: Path) -> None:
    archive = make_tar([("a", tarfile.REGTYPE, b"shared"), ("dir/b", tarfile.LNKTYPE, "a"), ("/c", tarfile.LNKTYPE, "/a")])
    extract(archive, dest)
    assert os.stat(dest / "a").st_nlink == 3
    assert (dest / "dir" / "b").read_bytes() == b"shared"


def test_max_bytes_stops_a_huge_member_before_writing(sentinel: Sentinel, dest: Path) -> None:
    huge = encode_header(b"bomb", REGTYPE, size=10**12) + b"only a little data"
    start = time.monotonic()
    with pytest.raises(LayerError, match=r'"bomb".*limit of 1048576 bytes'):
        extract(huge, dest, max_bytes=1 << 20)
    assert time.monotonic() - start < 1
    assert not (dest / "bomb").exists()
    sentinel.check()


def test_max_bytes_counts_the_whole_layer(dest: Path) -> None:
    archive = make_tar([(f"f{i}", tarfile.REGTYPE, b"x" * 400) for i in range(5)])
    with pytest.raises(LayerError, match='"f2"'):
        extract(archive, dest, max_bytes=1000)
    stats = extract(archive, dest, max_bytes=2000)
    assert stats.bytes == 2000  # type: ignore[attr-defined]


def test_nul_bytes_and_unknown_types_are_refused(dest: Path) -> None:
    archive = encode_header(b"ok", b"Z") + bytes(1024)
    with pytest.raises(LayerError, match="unsupported tar entry type"):
        extract(archive, dest)
    pax_nul = make_tar([("x" * 120 + "\x00evil", tarfile.REGTYPE, b"")])
    with pytest.raises(LayerError, match="NUL"):
        extract(pax_nul, dest)


# --------------------------------------------------------------------------- whiteouts


def _lower(dest: Path) -> None:
    (dest / "d" / "sub").mkdir(parents=True)
    for path in ("a", "b", "d/x", "d/sub/y", "e/z", "keep/k"):
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        (dest / path).write_text(path)


def test_apply_mode_carries_out_whiteouts_and_opaque_dirs(dest: Path) -> None:
    _lower(dest)
    archive = make_tar(
        [
            (".wh.a", tarfile.REGTYPE),
            ("b/", tarfile.DIRTYPE),  # file -> dir
            ("b/c", tarfile.REGTYPE, b"c"),
            ("d/", tarfile.DIRTYPE),
            ("d/.wh..wh..opq", tarfile.REGTYPE),
            ("d/new", tarfile.REGTYPE, b"new"),
            ("e", tarfile.REGTYPE, b"was a dir"),  # dir -> file
            ("keep/.wh.missing", tarfile.REGTYPE),
        ]
    )
    stats = extract(archive, dest, mode="apply")
    assert inside_files(dest) == ["b", "b/c", "d", "d/new", "e", "keep", "keep/k"]
    assert (dest / "e").read_bytes() == b"was a dir"
    assert stats.whiteouts == 3  # type: ignore[attr-defined]


def test_apply_mode_whiteouts_only_hide_lower_layers(dest: Path) -> None:
    _lower(dest)
    archive = make_tar(
        [
            ("d/", tarfile.DIRTYPE),
            ("d/mine", tarfile.REGTYPE, b"mine"),
            ("d/.wh..wh..opq", tarfile.REGTYPE),  # after this layer's own child: keeps it
            ("f", tarfile.REGTYPE, b"f"),
            (".wh.f", tarfile.REGTYPE),  # same layer: does not delete f
        ]
    )
    extract(archive, dest, mode="apply")
    assert sorted(os.listdir(dest / "d")) == ["mine"]
    assert (dest / "f").read_bytes() == b"f"


def test_apply_mode_whiteouts_stay_inside(sentinel: Sentinel, dest: Path) -> None:
    os.symlink(str(sentinel.root), dest / "hostlink")
    os.symlink(str(sentinel.root / "victim"), dest / "victimlink")
    for name in ("hostlink/.wh.secret.txt", "hostlink/victim/.wh..wh..opq", "victimlink/.wh..wh..opq", ".wh.victimlink"):
        extract(make_tar([(name, tarfile.REGTYPE)]), dest, mode="apply")
        sentinel.check()
    assert not os.path.lexists(dest / "victimlink"), "the whiteout removed the link itself"
    with pytest.raises(LayerError, match="escapes"):
        extract(make_tar([("../host/.wh.secret.txt", tarfile.REGTYPE)]), dest, mode="apply")
    sentinel.check()


def test_overlay_mode_writes_overlay_whiteouts(dest: Path) -> None:
    require_root()
    archive = make_tar(
        [
            (".wh.gone", tarfile.REGTYPE),
            ("d/", tarfile.DIRTYPE),
            ("d/.wh..wh..opq", tarfile.REGTYPE),
            ("d/new", tarfile.REGTYPE, b"n"),
            ("x/.wh.deep", tarfile.REGTYPE),
        ]
    )
    extract(archive, dest, mode="overlay")
    st = os.lstat(dest / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(dest / "d", "trusted.overlay.opaque") == b"y"
    assert stat.S_ISCHR(os.lstat(dest / "x" / "deep").st_mode)
    assert not os.path.lexists(dest / ".wh.gone")


def test_oci_mode_keeps_whiteout_files(dest: Path) -> None:
    archive = make_tar([(".wh.gone", tarfile.REGTYPE), ("d/.wh..wh..opq", tarfile.REGTYPE)])
    extract(archive, dest, mode="oci")
    assert (dest / ".wh.gone").is_file() and (dest / "d" / ".wh..wh..opq").is_file()


def test_overlay_mode_refuses_a_real_0_0_device(dest: Path) -> None:
    require_root()
    archive = make_tar([("dev0", tarfile.CHRTYPE, b"", {"devmajor": 0, "devminor": 0})])
    with pytest.raises(LayerError, match="whiteout"):
        extract(archive, dest, mode="overlay")


# --------------------------------------------------------------------------- metadata


def test_metadata_is_preserved(dest: Path) -> None:
    require_root()
    cap = b"\x01\x00\x00\x02" + bytes(16)
    archive = make_tar(
        [
            ("dir/", tarfile.DIRTYPE, b"", {"mode": 0o1770, "uid": 12, "gid": 34, "mtime": T0 + 1}),
            ("dir/suid", tarfile.REGTYPE, b"x", {"mode": 0o4755, "uid": 1000, "gid": 1000, "mtime": T0 + 2}),
            ("dir/ro-dir/", tarfile.DIRTYPE, b"", {"mode": 0o555}),
            ("dir/ro-dir/inner", tarfile.REGTYPE, b"i"),
            ("link", tarfile.SYMTYPE, "dir/suid", {"uid": 5, "gid": 6, "mtime": T0 + 3}),
            ("fifo", tarfile.FIFOTYPE, b"", {"mode": 0o620}),
            ("null", tarfile.CHRTYPE, b"", {"devmajor": 1, "devminor": 3, "mode": 0o666}),
            ("loop", tarfile.BLKTYPE, b"", {"devmajor": 7, "devminor": 1, "mode": 0o660}),
            ("xattrs", tarfile.REGTYPE, b"", {"pax_headers": {
                "SCHILY.xattr.user.keep": "v",
                "SCHILY.xattr.trusted.overlay.opaque": "y",
                "SCHILY.xattr.security.capability": cap.decode("latin-1"),
            }}),
        ]
    )
    extract(archive, dest, mode="apply")
    st = os.lstat(dest / "dir")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o1770, 12, 34, T0 + 1)
    st = os.lstat(dest / "dir" / "suid")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o4755, 1000, 1000, T0 + 2)
    assert stat.S_IMODE(os.lstat(dest / "dir" / "ro-dir").st_mode) == 0o555
    st = os.lstat(dest / "link")
    assert (os.readlink(dest / "link"), st.st_uid, st.st_gid, st.st_mtime) == ("dir/suid", 5, 6, T0 + 3)
    assert stat.S_ISFIFO(os.lstat(dest / "fifo").st_mode) and stat.S_IMODE(os.lstat(dest / "fifo").st_mode) == 0o620
    null = os.lstat(dest / "null")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3) and stat.S_IMODE(null.st_mode) == 0o666
    assert stat.S_ISBLK(os.lstat(dest / "loop").st_mode)
    assert os.getxattr(dest / "xattrs", "user.keep") == b"v"
    assert "trusted.overlay.opaque" not in os.listxattr(dest / "xattrs"), "overlay xattrs from an archive are ignored"


def test_devices_need_root() -> None:
    require_root()
    dest = Path(tempfile.mkdtemp(prefix="shipyard-unpriv-", dir="/tmp"))  # reachable for uid 65534
    try:
        os.chown(dest, 65534, 65534)
        archive = make_tar([("ok", tarfile.REGTYPE, b"ok"), ("null", tarfile.CHRTYPE, b"", {"devmajor": 1, "devminor": 3})])
        script = textwrap.dedent(
            f"""
            import sys
            from engine.fs.extract import LayerError, extract_layer
            try:
                extract_layer(sys.stdin.buffer, {str(dest)!r}, mode="apply")
            except LayerError as exc:
                print(exc)
                sys.exit(3)
            """
        )
        repo = str(Path(__file__).resolve().parents[2])
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", script],
            input=archive,
            capture_output=True,
            cwd="/",
            env={**os.environ, "PYTHONPATH": repo},
        )
        assert result.returncode == 3, result.stderr.decode()
        assert 'layer member "null": character device nodes can only be created by root' in result.stdout.decode()
        assert (dest / "ok").read_bytes() == b"ok"
    finally:
        shutil.rmtree(dest)


# --------------------------------------------------------------------------- resolution without openat2


def test_walk_resolver_matches_resolve_in_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "outside-looking").mkdir()
    os.symlink("/a", root / "abs")
    os.symlink("../../../../a/b", root / "a" / "up")
    os.symlink("/", root / "slash")
    os.symlink("/a/b", root / "a" / "nested-abs")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    (root / "file").write_text("f")
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for path, expected in [
            ((b"abs", b"b"), root / "a" / "b"),
            ((b"a", b"up"), root / "a" / "b"),
            ((b"a", b"nested-abs"), root / "a" / "b"),
            ((b"slash", b"..", b"..", b"a"), root / "a"),
            ((b"..", b"..", b"a", b"b", b".."), root / "a"),
            ((), root),
        ]:
            fd = resolve_dir_by_walk(root_fd, path)
            try:
                assert os.path.samestat(os.fstat(fd), os.stat(expected)), path
            finally:
                os.close(fd)
        with pytest.raises(OSError) as info:
            resolve_dir_by_walk(root_fd, (b"loop1",))
        assert info.value.errno == errno.ELOOP
        with pytest.raises(NotADirectoryError):
            resolve_dir_by_walk(root_fd, (b"file",))
        with pytest.raises(FileNotFoundError):
            resolve_dir_by_walk(root_fd, (b"abs", b"missing"))
    finally:
        os.close(root_fd)
