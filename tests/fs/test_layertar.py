"""Deterministic layer tars from real directories and real overlayfs upper dirs."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import stat
import struct
import subprocess
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from engine import linux
from engine.fs.extract import extract_layer
from engine.fs.layertar import LayerError, write_layer_tar
from tests.conftest import require_root

T0 = 1_600_000_000


def _tar(layer: Path, **kwargs) -> bytes:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    write_layer_tar(str(layer), out, **kwargs)
    return out.getvalue()


def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as tar:
        return tar.getmembers()


def _names(data: bytes) -> list[str]:
    return [m.name + ("/" if m.isdir() else "") for m in _members(data)]


def _set_times(root: Path, when: int = T0) -> None:
    """Fix every mtime (deepest first, so directory times are not disturbed afterwards)."""
    for current, dirs, files in os.walk(root, topdown=False):
        for name in files + dirs:
            os.utime(os.path.join(current, name), (when, when), follow_symlinks=False)
    os.utime(root, (when, when))


def _make_tree(root: Path, order: list[str]) -> None:
    root.mkdir()
    for name in order:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text(f"content of {name}")
    _set_times(root)


def test_same_tree_gives_same_bytes_whatever_the_creation_order(tmp_path: Path) -> None:
    names = ["b.txt", "a/z.txt", "a/b/c.txt", "a-c.txt", "a.txt", "Z.txt", "dir/", "x/y/z/w.txt"]
    _make_tree(tmp_path / "one", names)
    _make_tree(tmp_path / "two", list(reversed(names)))
    first = _tar(tmp_path / "one")
    assert first == _tar(tmp_path / "one"), "same directory, same bytes"
    assert first == _tar(tmp_path / "two"), "readdir order and inode numbers must not matter"
    # parents before children, siblings in byte order, depth first
    assert _names(first) == [
        "Z.txt", "a/", "a/b/", "a/b/c.txt", "a/z.txt", "a-c.txt", "a.txt", "b.txt", "dir/",
        "x/", "x/y/", "x/y/z/", "x/y/z/w.txt",
    ]


def test_header_rules(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "f").write_bytes(b"data")
    os.chown(layer / "f", 1234, 5678)
    os.chmod(layer / "f", 0o4751)
    os.utime(layer / "f", ns=(T0 * 10**9 + 999_999_999, T0 * 10**9 + 999_999_999))
    data = _tar(layer)
    (member,) = _members(data)
    assert (member.uid, member.gid, member.uname, member.gname) == (1234, 5678, "", "")
    assert member.mode == 0o4751
    assert member.mtime == T0, "mtime truncated to whole seconds"
    assert "atime" not in member.pax_headers and "ctime" not in member.pax_headers
    assert data.endswith(bytes(1024)) and len(data) % 512 == 0


def test_source_date_epoch_clamps_newer_times_only(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "old").write_text("old")
    (layer / "new").write_text("new")
    os.utime(layer / "old", (T0, T0))
    os.utime(layer / "new", (T0 + 10**6, T0 + 10**6))
    epoch = T0 + 1000
    times = {m.name: m.mtime for m in _members(_tar(layer, source_date_epoch=epoch))}
    assert times == {"new": epoch, "old": T0}
    unclamped = {m.name: m.mtime for m in _members(_tar(layer))}
    assert unclamped["new"] == T0 + 10**6


def test_hardlinks_symlinks_fifos_devices_and_sockets(tmp_path: Path) -> None:
    require_root()
    layer = tmp_path / "layer"
    (layer / "sub").mkdir(parents=True)
    (layer / "z-first-created").write_text("shared")
    os.link(layer / "z-first-created", layer / "a-link")
    os.link(layer / "z-first-created", layer / "sub" / "b-link")
    os.symlink("/etc/passwd", layer / "abs-link")
    os.symlink("../z-first-created", layer / "sub" / "rel-link")
    os.mkfifo(layer / "fifo")
    os.mknod(layer / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(layer / "loop", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(layer / "sock"))
    sock.close()
    by_name = {m.name: m for m in _members(_tar(layer))}
    assert "sock" not in by_name, "sockets are skipped"
    # first occurrence in archive order is the file, the others link to it
    assert by_name["a-link"].isfile() and by_name["a-link"].size == 6
    assert by_name["sub/b-link"].islnk() and by_name["sub/b-link"].linkname == "a-link"
    assert by_name["z-first-created"].islnk() and by_name["z-first-created"].linkname == "a-link"
    assert by_name["abs-link"].issym() and by_name["abs-link"].linkname == "/etc/passwd"
    assert by_name["sub/rel-link"].linkname == "../z-first-created"
    assert "etc/passwd" not in by_name, "symlinks are never followed"
    assert by_name["fifo"].isfifo()
    assert by_name["null"].ischr() and (by_name["null"].devmajor, by_name["null"].devminor) == (1, 3)
    assert by_name["loop"].isblk() and (by_name["loop"].devmajor, by_name["loop"].devminor) == (7, 0)


def _capability_blob() -> bytes:
    # VFS_CAP_REVISION_2 | effective, CAP_NET_BIND_SERVICE (10) permitted
    return struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)


def test_xattr_filtering_and_order(tmp_path: Path) -> None:
    require_root()
    layer = tmp_path / "layer"
    layer.mkdir()
    target = layer / "bin"
    target.write_text("binary")
    for name, value in [
        ("user.zeta", b"z"),
        ("user.alpha", b"\x00binary\xff"),
        ("trusted.secret", b"t"),
        ("user.overlay.opaque", b"y"),
        ("security.capability", _capability_blob()),
    ]:
        os.setxattr(target, name, value)
    (member,) = _members(_tar(layer))
    xattrs = [key for key in member.pax_headers if key.startswith("SCHILY.xattr.")]
    assert xattrs == ["SCHILY.xattr.security.capability", "SCHILY.xattr.user.alpha", "SCHILY.xattr.user.zeta"]
    raw = member.pax_headers["SCHILY.xattr.user.alpha"].encode("utf-8", "surrogateescape")
    assert raw == b"\x00binary\xff"


def _mount_overlay(lower: str, upper: Path, work: Path, merged: Path, readonly: bool = False) -> None:
    options = f"lowerdir={lower}"
    if not readonly:
        options += f",upperdir={upper},workdir={work}"
    linux.mount("overlay", str(merged), "overlay", linux.MS_RDONLY if readonly else 0, options)


def _listing(root: Path) -> dict[str, str]:
    out = {}
    for current, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(current, name)
            rel = os.path.relpath(path, root)
            out[rel] = "dir" if os.path.isdir(path) else Path(path).read_text()
    return out


@pytest.fixture
def overlay_upper(tmp_path: Path) -> tuple[Path, Path]:
    """A real overlayfs upper dir after deleting, replacing and adding files (kernel whiteouts)."""
    require_root()
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (upper, work, merged):
        d.mkdir()
    (lower / "gone-dir" / "inner").mkdir(parents=True)
    (lower / "gone-dir" / "inner" / "f").write_text("f")
    (lower / "replaced").mkdir(parents=True)
    for name in ("x", "y"):
        (lower / "replaced" / name).write_text(name)
    (lower / "kept").mkdir()
    (lower / "kept" / "k1").write_text("k1")
    (lower / "deleted.txt").write_text("bye")
    (lower / "edited.txt").write_text("before")
    _mount_overlay(str(lower), upper, work, merged)
    try:
        os.unlink(merged / "deleted.txt")
        subprocess.run(["rm", "-rf", str(merged / "gone-dir")], check=True)
        subprocess.run(["rm", "-rf", str(merged / "replaced")], check=True)
        (merged / "replaced").mkdir()
        (merged / "replaced" / "new").write_text("new")
        (merged / "kept" / "k2").write_text("k2")
        (merged / "edited.txt").write_text("after")
    finally:
        linux.umount(str(merged))
    _set_times(upper)
    return lower, upper


def test_kernel_overlay_whiteouts_become_oci_whiteouts(overlay_upper: tuple[Path, Path], tmp_path: Path) -> None:
    lower, upper = overlay_upper
    # the kernel really wrote overlay-style whiteouts and an opaque directory
    assert stat.S_ISCHR(os.lstat(upper / "deleted.txt").st_mode) and os.lstat(upper / "deleted.txt").st_rdev == 0
    assert os.getxattr(upper / "replaced", "trusted.overlay.opaque") == b"y"
    data = _tar(upper, whiteouts="overlay")
    assert _names(data) == [
        ".wh.deleted.txt", ".wh.gone-dir", "edited.txt", "kept/", "kept/k2",
        "replaced/", "replaced/.wh..wh..opq", "replaced/new",
    ]
    members = {m.name: m for m in _members(data)}
    for name in (".wh.deleted.txt", ".wh.gone-dir", "replaced/.wh..wh..opq"):
        whiteout = members[name]
        assert whiteout.isfile() and whiteout.size == 0 and whiteout.mtime == 0
        assert (whiteout.mode, whiteout.uid, whiteout.gid) == (0, 0, 0)
    for member in members.values():
        assert not any("overlay" in key for key in member.pax_headers), member.name

    # The same layer stored in OCI form (mode="oci" keeps the .wh. files) writes the same bytes.
    oci_dir = tmp_path / "oci-form"
    oci_dir.mkdir()
    extract_layer(io.BytesIO(data), str(oci_dir), mode="oci")
    assert (oci_dir / ".wh.deleted.txt").is_file()
    assert _tar(oci_dir, whiteouts="oci") == data

    # Round trip through overlay form: the kernel reads our whiteouts like its own.
    again = tmp_path / "again"
    again.mkdir()
    extract_layer(io.BytesIO(data), str(again), mode="overlay")
    assert _tar(again, whiteouts="overlay") == data
    view_ours, view_kernel = tmp_path / "view-ours", tmp_path / "view-kernel"
    view_ours.mkdir()
    view_kernel.mkdir()
    _mount_overlay(f"{again}:{lower}", upper, upper, view_ours, readonly=True)
    try:
        _mount_overlay(f"{upper}:{lower}", upper, upper, view_kernel, readonly=True)
        try:
            expected = {
                "edited.txt": "after", "kept": "dir", "kept/k1": "k1", "kept/k2": "k2",
                "replaced": "dir", "replaced/new": "new",
            }
            assert _listing(view_kernel) == expected
            assert _listing(view_ours) == expected
        finally:
            linux.umount(str(view_kernel))
    finally:
        linux.umount(str(view_ours))


def test_round_trip_write_extract_write(tmp_path: Path, busybox_rootfs: Path) -> None:
    require_root()
    layer = tmp_path / "layer"
    subprocess.run(["cp", "-a", str(busybox_rootfs), str(layer)], check=True)
    (layer / "opt" / "deep").mkdir(parents=True)
    (layer / "opt" / "deep" / "setuid").write_text("x")
    os.chmod(layer / "opt" / "deep" / "setuid", 0o4755)
    os.chmod(layer / "opt" / "deep", 0o1777)
    (layer / "opt" / ("long-" + "n" * 200)).write_text("long")
    (layer / os.fsdecode(b"opt/latin1-\xe9")).write_text("not utf-8")
    os.setxattr(layer / "bin" / "busybox", "user.note", b"\x00\x01")
    os.setxattr(layer / "bin" / "busybox", "security.capability", _capability_blob())
    os.chown(layer / "opt", 1000, 1000)
    os.link(layer / "etc" / "passwd", layer / "etc" / "passwd-link")
    os.mkfifo(layer / "opt" / "fifo")
    os.mknod(layer / "opt" / "zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    _set_times(layer)
    first = _tar(layer)
    for mode in ("overlay", "oci", "apply"):
        dest = tmp_path / f"extracted-{mode}"
        dest.mkdir()
        extract_layer(io.BytesIO(first), str(dest), mode=mode)  # type: ignore[arg-type]
        assert _tar(dest) == first, mode


def test_reserved_whiteout_names_are_refused_in_overlay_dirs(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / ".wh.sneaky").write_text("")
    with pytest.raises(LayerError, match=r"\.wh\.sneaky"):
        _tar(layer, whiteouts="overlay")


def test_missing_layer_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="nope"):
        _tar(tmp_path / "nope")


class _HashingSink:
    """A non-file destination (like a compressor or a digest writer): no sendfile shortcut."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        return len(data)


def test_streams_large_files_in_bounded_memory(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    with open(layer / "big", "wb") as f:
        f.truncate(96 << 20)  # sparse: cheap to make, still 96 MiB to read
    (layer / "small").write_text("s")
    sink = _HashingSink()
    tracemalloc.start()
    try:
        write_layer_tar(str(layer), sink)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak Python memory {peak} bytes"
    assert sink.size > 96 << 20
    # the sendfile path (plain file output) writes the same bytes
    with open(tmp_path / "out.tar", "wb") as out:
        write_layer_tar(str(layer), out)
    assert hashlib.sha256((tmp_path / "out.tar").read_bytes()).digest() == sink.hasher.digest()
