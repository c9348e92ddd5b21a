"""ADD in all its forms: local archives, URLs (with ETag revalidation and --checksum), git.

Remote sources come from a small HTTP server on 127.0.0.1 started by the test (with
ETag / If-None-Match support and a request log), and git repositories are served by
the same server as dumb-HTTP repositories (`git update-server-info`).
"""

from __future__ import annotations

import bz2
import email.utils
import hashlib
import io
import lzma
import os
import stat
import subprocess
import tarfile
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.conftest import Shipyard, steps, write
from tests.helpers import require_root

LAST_MODIFIED = 1_600_000_000  # 2020-09-13, a whole second


class _Files(BaseHTTPRequestHandler):
    """GET with ETag (sha256 of the body), If-None-Match → 304, Last-Modified; logs (path, status)."""

    server: _Server

    def do_GET(self) -> None:
        path = self.server.root / self.path.lstrip("/").split("?")[0]
        if path.is_dir() and (path / "index.html").is_file():
            path = path / "index.html"
        if not path.is_file():
            self._reply(404, b"not found\n")
            return
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        wanted = [t.strip() for t in self.headers.get("If-None-Match", "").split(",") if t.strip()]
        if etag in wanted:
            self._reply(304, b"", etag)
            return
        self._reply(200, body, etag, email.utils.formatdate(LAST_MODIFIED, usegmt=True))

    def _reply(self, status: int, body: bytes, etag: str = "", last_modified: str = "") -> None:
        self.server.log.append((self.path, status))
        self.send_response(status)
        if etag:
            self.send_header("ETag", etag)
        if last_modified:
            self.send_header("Last-Modified", last_modified)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Files)
        self.root = root
        self.log: list[tuple[str, int]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fetched(self, path: str) -> Counter:
        """Status codes of the requests made for `path`."""
        return Counter(status for p, status in self.log if p == path)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    root = tmp_path / "www"
    root.mkdir()
    srv = _Server(root)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def sy(tmp_path: Path) -> Shipyard:
    """A state root without images: these builds start FROM scratch and run nothing."""
    require_root()
    return Shipyard(tmp_path / "state", "runc")


def _build(sy: Shipyard, ctx: Path, dockerfile: str, out: Path, *args: str, check: bool = True):
    write(ctx / "Dockerfile", dockerfile)
    return sy.build(ctx, "--output", f"type=local,dest={out}", *args, check=check)


def _tar(members: dict[str, bytes], *, mode: int = 0o644, uid: int = 0) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            if name.endswith("/"):
                info = tarfile.TarInfo(name.rstrip("/"))
                info.type = tarfile.DIRTYPE
                info.mode = 0o750
            else:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = mode
            info.uid = info.gid = uid
            info.mtime = LAST_MODIFIED
            tar.addfile(info, io.BytesIO(data) if not name.endswith("/") else None)
    return buf.getvalue()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_local_archives_are_extracted_whatever_their_compression(sy: Shipyard, tmp_path: Path) -> None:
    import gzip

    import zstandard

    ctx = tmp_path / "ctx"
    plain = _tar({"d/": b"", "d/plain.txt": b"plain\n"}, mode=0o755, uid=1234)
    (ctx / "arch").mkdir(parents=True)
    (ctx / "arch" / "a.tar").write_bytes(plain)
    (ctx / "arch" / "b.tgz").write_bytes(gzip.compress(_tar({"gz.txt": b"gz\n"})))
    (ctx / "arch" / "c.tar.bz2").write_bytes(bz2.compress(_tar({"bz2.txt": b"bz2\n"})))
    (ctx / "arch" / "d.tar.xz").write_bytes(lzma.compress(_tar({"xz.txt": b"xz\n"})))
    (ctx / "arch" / "e.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(_tar({"zst.txt": b"zst\n"})))
    (ctx / "fake.tar.gz").write_bytes(gzip.compress(b"not a tar archive\n"))
    (ctx / "named-anything").write_bytes(plain)  # detected by content, not by name
    out = tmp_path / "out"
    _build(
        sy,
        ctx,
        "FROM scratch\n"
        "ADD arch/* /x/\n"
        "ADD fake.tar.gz /fake/\n"
        "ADD named-anything /by-content\n"
        "ADD --unpack=false arch/a.tar /kept/\n"
        "ADD --chown=42:43 arch/a.tar /owned/\n"
        "COPY arch/a.tar /copied/\n",
        out,
    )
    for name in ("gz", "bz2", "xz", "zst"):
        assert (out / "x" / f"{name}.txt").read_text() == f"{name}\n"
    extracted = out / "x" / "d" / "plain.txt"
    assert extracted.read_text() == "plain\n"
    assert _mode(extracted) == 0o755 and _mode(out / "x" / "d") == 0o750
    assert (extracted.stat().st_uid, extracted.stat().st_gid) == (1234, 1234)
    assert extracted.stat().st_mtime == LAST_MODIFIED
    assert not (out / "x" / "a.tar").exists()
    assert (out / "fake" / "fake.tar.gz").read_bytes() == (ctx / "fake.tar.gz").read_bytes()
    assert (out / "by-content" / "d" / "plain.txt").is_file()
    assert (out / "kept" / "a.tar").read_bytes() == plain
    assert (out / "copied" / "a.tar").read_bytes() == plain
    owned = out / "owned" / "d" / "plain.txt"
    assert (owned.stat().st_uid, owned.stat().st_gid) == (42, 43)
    assert (out / "owned" / "d").stat().st_uid == 42 and _mode(owned) == 0o755


def test_add_url_downloads_once_and_revalidates_by_etag(sy: Shipyard, server: _Server, tmp_path: Path) -> None:
    (server.root / "files").mkdir()
    (server.root / "files" / "data.txt").write_text("v1\n")
    (server.root / "files" / "pkg.tar.gz").write_bytes(_tar({"inside.txt": b"x\n"}))
    (server.root / "index.html").write_text("<html></html>\n")
    url = server.url
    ctx = tmp_path / "ctx"
    dockerfile = (
        "FROM scratch\n"
        f"ADD {url}/files/data.txt /dl/\n"
        f"ADD {url}/files/data.txt /renamed.txt\n"
        f"ADD {url}/files/pkg.tar.gz /remote/\n"
        f"ADD --unpack=true {url}/files/pkg.tar.gz /unpacked/\n"
        f"ADD --chmod=640 {url}/ /root-url/\n"
    )
    out = tmp_path / "out"
    _build(sy, ctx, dockerfile, out)
    data = out / "dl" / "data.txt"
    assert data.read_text() == "v1\n" and _mode(data) == 0o600
    assert data.stat().st_mtime == LAST_MODIFIED  # the Last-Modified header
    assert (out / "renamed.txt").read_text() == "v1\n"
    assert (out / "remote" / "pkg.tar.gz").is_file()  # remote archives are not extracted
    assert (out / "unpacked" / "inside.txt").read_text() == "x\n"  # unless --unpack=true
    assert _mode(out / "root-url" / "__unnamed__") == 0o640
    assert server.fetched("/files/data.txt") == {200: 1}  # two ADDs, one request

    _, meta = sy.build(ctx)
    assert all(steps(meta).values())
    assert server.fetched("/files/data.txt") == {200: 1, 304: 1}  # revalidated, not downloaded

    (server.root / "files" / "data.txt").write_text("v2\n")
    _, meta = _build(sy, ctx, dockerfile, out)
    assert (out / "dl" / "data.txt").read_text() == "v2\n"
    changed = [name for name, cached in steps(meta).items() if not cached]
    assert "data.txt /dl/" in changed[0]  # from the changed download on
    assert server.fetched("/files/data.txt")[200] == 2
    assert server.fetched("/files/pkg.tar.gz") == {200: 1, 304: 2}  # the unchanged one is never downloaded again


def test_add_checksum_pins_the_content(sy: Shipyard, server: _Server, tmp_path: Path) -> None:
    (server.root / "tool.bin").write_bytes(b"binary\n")
    good = "sha256:" + hashlib.sha256(b"binary\n").hexdigest()
    bad = "sha256:" + "0" * 64
    ctx = tmp_path / "ctx"
    out = tmp_path / "out"
    _build(sy, ctx, f"FROM scratch\nADD --checksum={good} {server.url}/tool.bin /bin/\n", out)
    assert (out / "bin" / "tool.bin").read_bytes() == b"binary\n"
    requests = len(server.log)
    _, meta = sy.build(ctx)
    assert all(steps(meta).values()) and len(server.log) == requests  # pinned: no network at all

    proc, _ = _build(sy, ctx, f"FROM scratch\nADD --checksum={bad} {server.url}/tool.bin /bin/\n", out, check=False)
    assert proc.returncode != 0
    assert "digest mismatch" in proc.stderr and good in proc.stderr and bad in proc.stderr
    proc, _ = _build(sy, ctx, "FROM scratch\nCOPY x /x\nADD --checksum=sha256:abc y /y\n", out, check=False)
    assert "checksum requires HTTP(S) or Git sources" in proc.stderr
    proc, _ = _build(sy, ctx, f"FROM scratch\nCOPY {server.url}/tool.bin /x\n", out, check=False)
    assert "source can't be a URL for COPY" in proc.stderr


def _git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@e")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def test_add_git_repository_over_dumb_http(sy: Shipyard, server: _Server, tmp_path: Path) -> None:
    work = tmp_path / "work"
    write(work / "README", "top\n")
    write(work / "sub" / "dir" / "file.txt", "in subdir\n")
    _git(work, "init", "-q", "-b", "main")
    _git(work, "add", ".")
    _git(work, "commit", "-q", "-m", "one")
    _git(work, "tag", "-a", "v1", "-m", "v1")
    first = _git(work, "rev-parse", "HEAD")
    bare = server.root / "repo.git"
    _git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    _git(bare, "update-server-info")
    url = f"{server.url}/repo.git"
    ctx = tmp_path / "ctx"
    out = tmp_path / "out"
    dockerfile = (
        "FROM scratch\n"
        f"ADD {url}#v1:sub /tagged/\n"
        f"ADD --keep-git-dir {url} /full\n"
        f"ADD {url}#main /branch\n"
    )
    _build(sy, ctx, dockerfile, out)
    assert (out / "tagged" / "dir" / "file.txt").read_text() == "in subdir\n"
    assert not (out / "tagged" / "README").exists() and not (out / "tagged" / ".git").exists()
    assert (out / "full" / "README").read_text() == "top\n"
    assert _git(out / "full", "rev-parse", "HEAD") == first
    assert not (out / "branch" / ".git").exists()

    write(work / "README", "second\n")
    _git(work, "commit", "-q", "-am", "two")
    _git(work, "push", "-q", str(bare), "main")
    _git(bare, "update-server-info")
    _, meta = _build(sy, ctx, dockerfile, out)
    assert (out / "branch" / "README").read_text() == "second\n"
    assert (out / "tagged" / "dir" / "file.txt").is_file()
    reran = [name for name, cached in steps(meta).items() if not cached]
    assert any("#main" in name for name in reran) and not any("#v1" in name for name in reran)

    proc, _ = _build(sy, ctx, f"FROM scratch\nADD --checksum={'f' * 40} {url}#v1 /x\n", out, check=False)
    assert proc.returncode != 0 and "expected checksum to match" in proc.stderr and first in proc.stderr
