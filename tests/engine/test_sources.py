"""Remote ADD sources: cache identities, pinning, git ref resolution; ADD's archive detection and extraction."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from engine.errors import ShipyardError
from engine.graph.ops import GitSource, HttpSource, LocalSource
from engine.graph.vertex import GraphBuilder
from engine.solver.context import Engine
from engine.solver.file_op import is_archive, unpack_archive
from engine.solver.keys import source_key
from engine.solver.sources import (
    RemoteSourceError,
    RemoteSources,
    redact,
    remote_sources_pinned,
)


def test_http_key_is_the_content_not_the_url() -> None:
    a = HttpSource("https://a/x.tgz", "x.tgz", digest="sha256:1", last_modified="d")
    assert source_key(a) == source_key(HttpSource("https://mirror/x.tgz", "x.tgz", digest="sha256:1", last_modified="d"))
    for other in (
        HttpSource("https://a/x.tgz", "x.tgz", digest="sha256:2", last_modified="d"),
        HttpSource("https://a/x.tgz", "y.tgz", digest="sha256:1", last_modified="d"),
        HttpSource("https://a/x.tgz", "x.tgz", digest="sha256:1", last_modified="e"),
        HttpSource("https://a/x.tgz", "x.tgz", digest="sha256:1", last_modified="d", perm=0o644),
    ):
        assert source_key(other) != source_key(a)


def test_git_key_is_the_commit_and_options_not_the_remote() -> None:
    base = GitSource("https://a/r.git", "main", "c" * 40)
    assert source_key(base) == source_key(GitSource("git@b:r.git", "v1", "c" * 40))
    assert source_key(base) != source_key(GitSource("https://a/r.git", "main", "d" * 40))
    assert source_key(base) != source_key(GitSource("https://a/r.git", "main", "c" * 40, subdir="s"))
    assert source_key(base) != source_key(GitSource("https://a/r.git", "main", "c" * 40, keep_git_dir=True))


def test_pinned_sources_keep_the_build_memoizable() -> None:
    g = GraphBuilder()
    ctx = g.add(LocalSource("context", "/ctx"))
    pinned = g.add(HttpSource("https://a/x", "x", checksum="sha256:" + "0" * 64))
    commit = g.add(GitSource("https://a/r.git", "a" * 40, "a" * 40))
    assert remote_sources_pinned(pinned) and remote_sources_pinned(commit) and remote_sources_pinned(ctx)
    assert not remote_sources_pinned(g.add(HttpSource("https://a/x", "x", digest="sha256:1")))
    assert not remote_sources_pinned(g.add(GitSource("https://a/r.git", "main", "a" * 40)))


def test_redact_hides_passwords_only() -> None:
    assert redact("https://user:secret@host:8443/r.git") == "https://user:xxxxx@host:8443/r.git"
    assert redact("https://host/r.git") == "https://host/r.git"
    assert redact("git@github.com:a/b.git") == "git@github.com:a/b.git"


def _git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@e")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def test_git_refs_resolve_to_commits(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "f").write_text("1\n")
    _git(repo, "init", "-q", "-b", "trunk")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    _git(repo, "tag", "-a", "v1", "-m", "annotated")
    commit = _git(repo, "rev-parse", "HEAD")
    remotes = RemoteSources(Engine.open(tmp_path / "state"))
    assert remotes.resolve_git(str(repo), "trunk", "") == commit
    assert remotes.resolve_git(str(repo), "v1", "") == commit  # the tag's commit, not the tag object
    assert remotes.resolve_git(str(repo), "", "") == commit  # the default branch
    assert remotes.resolve_git(str(repo), "f" * 40, "") == "f" * 40  # a full commit needs no network
    assert remotes.resolve_git(str(repo), "trunk", commit[:12]) == commit
    with pytest.raises(RemoteSourceError, match="expected checksum to match"):
        remotes.resolve_git(str(repo), "trunk", "0" * 12)
    with pytest.raises(RemoteSourceError, match="does not contain ref nope"):
        remotes.resolve_git(str(repo), "nope", "")


def _tar(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
    return buf.getvalue()


def test_archives_are_recognised_by_content(tmp_path: Path) -> None:
    cases = {
        "plain.tar": _tar([("a", b"a")]),
        "zipped": gzip.compress(_tar([("a", b"a")])),
        "text.tar": b"just text\n" * 100,
        "gz-text.tar.gz": gzip.compress(b"just text\n"),
        "empty.tar": b"",
        "zeros.tar": bytes(1024),  # an empty archive has no first header: not unpacked (BuildKit)
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "link.tar").symlink_to("plain.tar")
    got = {name: is_archive(str(tmp_path / name)) for name in [*cases, "link.tar"]}
    assert got == {
        "plain.tar": True, "zipped": True, "text.tar": False, "gz-text.tar.gz": False,
        "empty.tar": False, "zeros.tar": False, "link.tar": False,
    }


def test_unpack_stays_inside_the_destination(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "escape").symlink_to("/tmp")  # an absolute link already in the image
    link = tarfile.TarInfo("out")
    link.type, link.linkname = tarfile.SYMTYPE, "../../.."
    archive = tmp_path / "a.tar"
    archive.write_bytes(_tar([link, ("out/pwned", b"x"), ("escape/pwned", b"y"), (".wh.keep", b"")]))
    unpack_archive(str(archive), str(root), "/dst", (5, 6))
    assert (root / "dst" / "pwned").read_bytes() == b"x"  # `out` -> ../../.. stays at the destination's root
    assert (root / "dst" / "escape" / "pwned").read_bytes() == b"y"
    assert (root / "dst" / ".wh.keep").is_file()  # whiteout names are plain files (as Docker writes them)
    assert not (tmp_path / "pwned").exists() and not Path("/tmp/pwned").exists()
    assert (root / "dst" / "escape" / "pwned").stat().st_uid == 5 and (root / "dst").stat().st_uid == 5
    climbing = tmp_path / "b.tar"
    climbing.write_bytes(_tar([("../../evil", b"z")]))
    with pytest.raises(ShipyardError):
        unpack_archive(str(climbing), str(root), "/dst2", None)
    assert not (tmp_path / "evil").exists()
