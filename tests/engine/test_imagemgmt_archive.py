"""The archive index that `load` reads archives through: links stay inside, hostile names fail."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from engine.imagemgmt.archive import ArchiveError, ArchiveIndex
from engine.imagemgmt.load import read_images


def _tar(path: Path, members: list[tuple[str, str, bytes | str]]) -> Path:
    """members: (kind, name, data-or-link-target); kinds: file, dir, symlink, hardlink, chr."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = value.encode() if isinstance(value, str) else value
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = str(value)
            tar.addfile(info)
    return path


def _index(path: Path, tmp: Path) -> ArchiveIndex:
    return ArchiveIndex.from_file(str(path), str(tmp / "spool"), path.name)


def test_reads_members_and_follows_links_inside(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "a.tar",
        [
            ("dir", "a", ""),
            ("file", "a/layer.tar", b"LAYER"),
            ("dir", "b", ""),
            ("symlink", "b/layer.tar", "../a/layer.tar"),
            ("hardlink", "c.tar", "a/layer.tar"),
            ("symlink", "d", "a"),
            ("file", "./manifest.json", "[]"),
        ],
    )
    with _index(archive, tmp_path) as index:
        assert index.read("a/layer.tar") == b"LAYER"
        assert index.read("b/layer.tar") == b"LAYER"
        assert index.read("c.tar") == b"LAYER"
        assert index.read("d/layer.tar") == b"LAYER"  # through a symlinked directory
        assert index.read("manifest.json") == b"[]"
        assert not index.has("a/missing")
        assert index.names() == ["a/layer.tar", "manifest.json"]


def test_gzip_compressed_archive_is_spooled(tmp_path: Path) -> None:
    plain = _tar(tmp_path / "p.tar", [("file", "x", b"hello")])
    packed = tmp_path / "p.tar.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    with _index(packed, tmp_path) as index:
        assert index.read("x") == b"hello"
    assert list((tmp_path / "spool").iterdir()) == []  # the spool file is anonymous


@pytest.mark.parametrize(
    "members, message",
    [
        ([("file", "../../etc/evil", b"x")], '"../../etc/evil" has a ".." path component'),
        ([("file", "/etc/evil", b"x")], '"/etc/evil" has an absolute path'),
        ([("chr", "dev/null", "")], "has tar type '3'"),
    ],
)
def test_hostile_member_names_are_refused(tmp_path: Path, members: list, message: str) -> None:
    archive = _tar(tmp_path / "h.tar", members)
    with pytest.raises(ArchiveError, match=message.replace("(", r"\(").replace(".", r"\.")):
        _index(archive, tmp_path)


@pytest.mark.parametrize(
    "members, wanted, message",
    [
        ([("symlink", "manifest.json", "/etc/passwd")], "manifest.json", "outside the archive"),
        ([("symlink", "x", "../../etc")], "x/passwd", "leads outside the archive"),
        ([("symlink", "x", "y"), ("symlink", "y", "x")], "x", "too many links"),
        ([("symlink", "x", "")], "x", "empty target"),
    ],
)
def test_links_never_leave_the_archive(tmp_path: Path, members: list, wanted: str, message: str) -> None:
    with _index(_tar(tmp_path / "l.tar", members), tmp_path) as index, pytest.raises(ArchiveError, match=message):
        index.read(wanted)


def test_not_a_tar_and_not_an_image(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar archive at all" * 40)
    with pytest.raises(ArchiveError, match="garbage.tar: not a readable tar archive"):
        _index(garbage, tmp_path)
    rootfs = _tar(tmp_path / "rootfs.tar", [("dir", "etc", ""), ("file", "etc/passwd", "root:x:0:0::/:/bin/sh\n")])
    with _index(rootfs, tmp_path) as index, pytest.raises(ArchiveError, match="not an image archive.*shipyard import"):
        read_images(index)


def test_docker_manifest_naming_a_path_outside_is_refused(tmp_path: Path) -> None:
    manifest = json.dumps([{"Config": "../../etc/passwd", "RepoTags": ["x:1"], "Layers": []}])
    archive = _tar(tmp_path / "m.tar", [("file", "manifest.json", manifest)])
    with _index(archive, tmp_path) as index, pytest.raises(ArchiveError, match="leads outside the archive"):
        read_images(index)


def test_oversized_metadata_is_refused(tmp_path: Path) -> None:
    big = _tar(tmp_path / "big.tar", [("file", "index.json", b" " * (33 << 20))])
    with _index(big, tmp_path) as index, pytest.raises(ArchiveError, match="more than the"):
        read_images(index)
