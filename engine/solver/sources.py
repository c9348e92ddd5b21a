"""ADD's remote sources: HTTP(S) files and git checkouts, fetched into snapshots.

Like BuildKit, a remote source is keyed on what it holds, not on where it came from:
an HTTP file on its content digest (plus its name, mode and `Last-Modified`), a git
checkout on its commit (plus subdir and `.git`). Learning that identity is the
frontend's job, through the `RemoteResolver` methods here (`resolve_http`,
`resolve_git`), as it learns a base image's digest; the solver later asks for the
snapshot (`snapshot`), which is usually already there.

Remote fetches have a cache of their own so that a rebuild does not download again:

- HTTP: every download is a snapshot recorded in the cache index under the source's
  key; per URL, the ETags seen (with the digest each stood for) are kept in
  `<state>/remote/http/`, and the next resolution sends `If-None-Match` — a 304
  costs one round trip and no body. A `--checksum` pin needs no network at all
  until the content is actually needed (and then is verified against the pin).
- git: one bare repository per remote in `<state>/remote/git/` accumulates fetched
  objects; `ls-remote` resolves a branch or tag (a full commit needs no network),
  and a commit already present is not fetched again. Checkouts are snapshots
  recorded under the source's key.

git runs as BuildKit runs it: no system or user config (`HOME=/dev/null`,
`GIT_CONFIG_NOSYSTEM=1`), no terminal prompts, `protocol.file.allow=user`; a shallow
fetch that the server cannot serve (dumb HTTP) is retried in full. Submodules are
not fetched.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from engine.errors import ShipyardError
from engine.graph.ops import GitSource, HttpSource
from engine.graph.vertex import Vertex, walk
from engine.solver.context import Engine
from engine.solver.keys import source_key
from frontends.dockerfile.addsources import ResolvedHttp, is_commit

if TYPE_CHECKING:
    from frontends.base import ImageResolver, ResolvedImage

USER_AGENT = "shipyard/0.1 (BuildKit-compatible)"
HTTP_CHUNK = 1 << 20
GIT_TIMEOUT = 600.0
_HTTP_ALGORITHMS = ("sha256", "sha384", "sha512")


class RemoteSourceError(ShipyardError):
    """A remote ADD source that could not be fetched or does not match its pin."""


def redact(url: str) -> str:
    """`url` with any password replaced (BuildKit's `urlutil.RedactCredentials`)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:xxxxx@{host}"))


def remote_sources_pinned(target: Vertex) -> bool:
    """Whether every remote source below `target` is pinned to its content.

    A build that reads an unpinned URL or branch can give another result with nothing
    local changed, so its whole-build memo must not be trusted.
    """
    for vertex in walk([target]):
        op = vertex.op
        if isinstance(op, HttpSource) and not op.checksum:
            return False
        if isinstance(op, GitSource) and not (is_commit(op.ref) or is_commit(op.checksum)):
            return False
    return True


class BuildResolver:
    """The frontend's resolver for one build: images from the store, remote sources from the network."""

    def __init__(self, images: ImageResolver, remotes: RemoteSources) -> None:
        self.images = images
        self.remotes = remotes

    def resolve(self, ref: str) -> ResolvedImage:
        return self.images.resolve(ref)

    def resolve_http(self, url: str, filename: str, checksum: str) -> ResolvedHttp:
        return self.remotes.resolve_http(url, filename, checksum)

    def resolve_git(self, remote: str, ref: str, checksum: str) -> str:
        return self.remotes.resolve_git(remote, ref, checksum)


class RemoteSources:
    """Fetching remote sources into snapshots for one engine (state directory)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.root = os.path.join(str(engine.state.root), "remote")
        self._resolved: dict[tuple[str, ...], ResolvedHttp | str] = {}
        """Answers already given in this build: one request per URL or ref, however often named."""

    # ------------------------------------------------------------------ common

    def snapshot(self, op: HttpSource | GitSource) -> int:
        """The snapshot holding `op`'s content, fetched unless the cache has it."""
        if isinstance(op, HttpSource):
            return self._http_snapshot(op)
        return self._git_snapshot(op)

    def _recorded(self, key: str) -> int | None:
        record = self.engine.index.lookup([key]).get(key)
        if record is None or record.snapshot is None:
            return None
        try:
            self.engine.index.snapshot(record.snapshot)
        except KeyError:
            return None
        return record.snapshot

    @contextlib.contextmanager
    def _locked(self, kind: str, name: str) -> Iterator[str]:
        """A per-name working directory, held exclusively (threads and processes alike)."""
        base = os.path.join(self.root, kind)
        os.makedirs(base, exist_ok=True)
        path = os.path.join(base, name)
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield path
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ http

    def resolve_http(self, url: str, filename: str, checksum: str, perm: int = 0o600) -> ResolvedHttp:
        """The digest of `url`'s content: the pin itself, or what a (conditional) GET finds."""
        if checksum:
            return ResolvedHttp(checksum, "")
        memo = ("http", url, filename, str(perm))
        known = self._resolved.get(memo)
        if isinstance(known, ResolvedHttp):
            return known
        digest, last_modified, _ = self._download(url, filename, perm, "")
        resolved = self._resolved[memo] = ResolvedHttp(digest, last_modified)
        return resolved

    def _http_snapshot(self, op: HttpSource) -> int:
        key = source_key(op)
        found = self._recorded(key)
        if found is not None:
            return found
        expected = op.checksum or op.digest
        return self._download(op.url, op.filename, op.perm, expected, key=key)[2]

    def _url_name(self, url: str, filename: str, perm: int) -> str:
        return hashlib.sha256(json.dumps([url, filename, perm]).encode()).hexdigest()[:40]

    def _etag_entries(self, name: str, perm: int, filename: str) -> list[dict[str, str]]:
        """Stored ETag entries for a URL whose snapshot is still in the cache."""
        path = os.path.join(self.root, "http", name + ".json")
        try:
            with open(path) as f:
                entries = json.load(f)
        except (OSError, ValueError):
            return []
        live = []
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or not entry.get("etag") or not entry.get("digest"):
                continue
            key = source_key(HttpSource("", filename, digest=entry["digest"], last_modified=entry.get("last_modified", ""), perm=perm))
            if self._recorded(key) is not None:
                live.append(entry)
        return live

    def _save_etag(self, name: str, etag: str, digest: str, last_modified: str) -> None:
        directory = os.path.join(self.root, "http")
        path = os.path.join(directory, name + ".json")
        try:
            with open(path) as f:
                entries = [e for e in json.load(f) if isinstance(e, dict) and e.get("etag") != etag]
        except (OSError, ValueError, TypeError):
            entries = []
        entries.append({"etag": etag, "digest": digest, "last_modified": last_modified})
        tmp = f"{path}.{secrets.token_hex(4)}.tmp"
        with open(tmp, "w") as f:
            json.dump(entries[-8:], f)
        os.replace(tmp, path)

    def _download(
        self, url: str, filename: str, perm: int, expected: str, key: str | None = None
    ) -> tuple[str, str, int]:
        """(sha256 digest, Last-Modified, snapshot) of `url`, revalidated by ETag when possible.

        With `expected` (a pin or the digest the build was planned with), content that
        differs is an error naming both digests. The snapshot is recorded under `key`
        (default: the key of an unpinned source with the content found).
        """
        import httpx

        name = self._url_name(url, filename, perm)
        with self._locked("http", name):
            entries = [] if key is not None else self._etag_entries(name, perm, filename)
            headers = {"User-Agent": USER_AGENT}
            etags = [e["etag"] for e in entries]
            if etags:
                headers["If-None-Match"] = ", ".join(etags)
            host = urlsplit(url).hostname or ""
            try:
                with httpx.Client(
                    follow_redirects=True,
                    timeout=httpx.Timeout(60.0, connect=30.0),
                    trust_env=host not in ("localhost", "127.0.0.1", "::1"),
                ) as client, client.stream("GET", url, headers=headers) as resp:
                    if resp.status_code == 304:
                        return self._not_modified(url, resp.headers.get("ETag", ""), entries, perm, filename)
                    if resp.status_code < 200 or resp.status_code >= 400:
                        raise RemoteSourceError(f"failed to fetch {redact(url)}: invalid response status {resp.status_code}")
                    last_modified = resp.headers.get("Last-Modified", "")
                    digest, snapshot = self._save(resp, url, filename, perm, last_modified, expected, key)
                    etag = _etag_value(resp.headers.get("ETag", ""))
            except httpx.HTTPError as exc:
                raise RemoteSourceError(f"failed to fetch {redact(url)}: {exc}") from None
            if etag and key is None:
                self._save_etag(name, etag, digest, last_modified)
            return digest, last_modified, snapshot

    def _not_modified(
        self, url: str, etag: str, entries: list[dict[str, str]], perm: int, filename: str
    ) -> tuple[str, str, int]:
        etag = _etag_value(etag) or (entries[0]["etag"] if len(entries) == 1 else "")
        for entry in entries:
            if entry["etag"] == etag:
                op = HttpSource(url, filename, digest=entry["digest"], last_modified=entry.get("last_modified", ""), perm=perm)
                snapshot = self._recorded(source_key(op))
                if snapshot is not None:
                    return entry["digest"], entry.get("last_modified", ""), snapshot
        raise RemoteSourceError(f"failed to fetch {redact(url)}: invalid not-modified ETag: {etag}")

    def _save(
        self, resp, url: str, filename: str, perm: int, last_modified: str, expected: str, key: str | None  # type: ignore[no-untyped-def]
    ) -> tuple[str, int]:
        """Stream a response body into a new single-file snapshot; (sha256 digest, snapshot)."""
        if not filename or "/" in filename or filename in (".", ".."):
            raise RemoteSourceError(f"invalid file name {filename!r} for {redact(url)}")
        algorithm = expected.partition(":")[0] if expected else "sha256"
        if algorithm not in _HTTP_ALGORITHMS:
            algorithm = "sha256"
        hashers = {"sha256": hashlib.sha256()}
        if algorithm != "sha256":
            hashers[algorithm] = hashlib.new(algorithm)
        snapshotter = self.engine.snapshotter
        active = snapshotter.prepare_layer(None)
        try:
            path = os.path.join(active.root, filename)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                for chunk in resp.iter_bytes(HTTP_CHUNK):
                    f.write(chunk)
                    for h in hashers.values():
                        h.update(chunk)
                os.fchmod(f.fileno(), perm)
                if os.geteuid() == 0:
                    os.fchown(f.fileno(), 0, 0)
            mtime = _http_time(last_modified)
            os.utime(path, (mtime, mtime))
            digest = "sha256:" + hashers["sha256"].hexdigest()
            if expected:
                got = f"{algorithm}:{hashers[algorithm].hexdigest()}"
                if got != expected:
                    raise RemoteSourceError(f"digest mismatch for {redact(url)}: {got} (expected: {expected})")
            if key is None:
                key = source_key(HttpSource(url, filename, digest=digest, last_modified=last_modified, perm=perm))
            existing = self._recorded(key)
            if existing is not None:
                snapshotter.abort(active)
                return digest, existing
            snapshot = snapshotter.commit(active)
        except BaseException:
            snapshotter.abort(active)
            raise
        self.engine.index.record([key], snapshot, f"http url {redact(url)}")
        return digest, snapshot

    # ------------------------------------------------------------------ git

    def resolve_git(self, remote: str, ref: str, checksum: str) -> str:
        """The commit `ref` names in `remote` (a full commit needs no network); it must start with `checksum`."""
        if is_commit(ref):
            commit = ref
        else:
            memo = ("git", remote, ref)
            known = self._resolved.get(memo)
            commit = known if isinstance(known, str) else self._ls_remote(remote, ref)
            self._resolved[memo] = commit
        if checksum and not commit.startswith(checksum):
            raise RemoteSourceError(f"expected checksum to match {checksum}, got {commit}")
        return commit

    def _ls_remote(self, remote: str, ref: str) -> str:
        patterns = [ref, ref + "^{}"] if ref else ["HEAD"]
        out = _git(["ls-remote", remote, *patterns], what=f"failed to fetch remote {redact(remote)}")
        rows = [line.split("\t", 1) for line in out.splitlines() if "\t" in line]
        if not rows:
            raise RemoteSourceError(f"repository {redact(remote)} does not contain ref {ref or 'HEAD'}")
        sha, name = rows[0]
        for other_sha, other in rows:
            if other == name + "^{}":  # an annotated tag: the commit it points to
                sha = other_sha
        if not is_commit(sha):
            raise RemoteSourceError(f"invalid commit sha {sha!r}")
        return sha

    def _git_snapshot(self, op: GitSource) -> int:
        key = source_key(op)
        found = self._recorded(key)
        if found is not None:
            return found
        commit = op.commit or self.resolve_git(op.remote, op.ref, op.checksum)
        name = hashlib.sha256(op.remote.encode()).hexdigest()[:40]
        with self._locked("git", name) as bare:
            self._ensure_repo(bare, op.remote)
            self._fetch(bare, op.remote, op.ref, commit)
            snapshotter = self.engine.snapshotter
            active = snapshotter.prepare_layer(None)
            try:
                subdir = os.path.normpath("/" + op.subdir).lstrip("/") if op.subdir else ""
                if op.keep_git_dir and not subdir:
                    self._checkout_with_git_dir(bare, op.remote, commit, active.root)
                else:
                    self._checkout(bare, commit, subdir, active.root, op.remote)
                existing = self._recorded(key)
                if existing is not None:
                    snapshotter.abort(active)
                    return existing
                snapshot = snapshotter.commit(active)
            except BaseException:
                snapshotter.abort(active)
                raise
        self.engine.index.record([key], snapshot, f"git snapshot for {redact(op.remote)}#{op.ref or commit}")
        return snapshot

    def _ensure_repo(self, bare: str, remote: str) -> None:
        if os.path.isfile(os.path.join(bare, "HEAD")):
            _git(["--git-dir", bare, "remote", "set-url", "origin", remote], what="failed to update the cached repository")
            return
        shutil.rmtree(bare, ignore_errors=True)
        os.makedirs(bare)
        _git(["-c", "init.defaultBranch=master", "init", "--bare", bare], what="failed to init the cached repository")
        _git(["--git-dir", bare, "remote", "add", "origin", remote], what="failed to add the remote")

    def _has_commit(self, bare: str, commit: str) -> bool:
        try:
            _git(["--git-dir", bare, "cat-file", "-e", commit + "^{commit}"], what="")
        except RemoteSourceError:
            return False
        return True

    def _fetch(self, bare: str, remote: str, ref: str, commit: str) -> None:
        """Make `commit` present in the bare repository, fetching as little as the server allows."""
        if self._has_commit(bare, commit):
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(bare, "shallow.lock"))
        what = f"failed to fetch remote {redact(remote)}"
        attempts: list[list[str]] = []
        if ref and not is_commit(ref):
            attempts.append(["fetch", "--depth=1", "--no-tags", "origin", "--force", f"{ref}:refs/tags/{ref}"])
        elif not ref:
            attempts.append(["fetch", "--depth=1", "--no-tags", "origin", "--force", "HEAD:refs/shipyard/head"])
        attempts.append(["fetch", "origin", commit])
        attempts.append(["fetch", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*"])
        error: RemoteSourceError | None = None
        for args in attempts:
            if os.path.exists(os.path.join(bare, "shallow")) and "--depth=1" not in args:
                args = args[:1] + ["--unshallow"] + args[1:]
            try:
                _git(["--git-dir", bare, *args], what=what, retry_without_depth=True)
            except RemoteSourceError as exc:
                error = exc
                continue
            if self._has_commit(bare, commit):
                return
        if error is not None:
            raise error
        raise RemoteSourceError(f"{what}: commit {commit} not found (the ref moved during the build?)")

    def _checkout(self, bare: str, commit: str, subdir: str, dest: str, remote: str) -> None:
        from engine.fs.safepath import resolve_in_root

        tmp_root = str(self.engine.state.tmp)
        os.makedirs(tmp_root, exist_ok=True)
        work = tempfile.mkdtemp(prefix="git-checkout-", dir=tmp_root)
        try:
            tree = os.path.join(work, "tree") if subdir else dest
            os.makedirs(tree, exist_ok=True)
            env = {"GIT_INDEX_FILE": os.path.join(work, "index")}
            _git(
                ["--git-dir", bare, "--work-tree", tree, "checkout", commit, "--", "."],
                what=f"failed to checkout remote {redact(remote)}",
                env=env,
            )
            if subdir:
                source = resolve_in_root(tree, subdir)
                if not os.path.isdir(source) or os.path.islink(source):
                    raise RemoteSourceError(f"failed to open subdir {subdir}: not a directory in {redact(remote)}")
                for entry in os.listdir(source):
                    shutil.move(os.path.join(source, entry), os.path.join(dest, entry))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _checkout_with_git_dir(self, bare: str, remote: str, commit: str, dest: str) -> None:
        """A checkout that keeps `.git` (`--keep-git-dir`): a shallow clone at `commit`, detached."""
        git_dir = os.path.join(dest, ".git")
        what = f"failed to checkout remote {redact(remote)}"
        temp_ref = f"refs/shipyard/{secrets.token_hex(8)}"
        _git(["--git-dir", bare, "update-ref", temp_ref, commit], what=what)
        try:
            _git(["--git-dir", git_dir, "-c", "init.defaultBranch=master", "init"], what=what)
            _git(["--git-dir", git_dir, "remote", "add", "origin", "file://" + bare], what=what)
            _git(["--git-dir", git_dir, "fetch", "-u", "--depth=1", "origin", temp_ref], what=what, retry_without_depth=True)
            _git(["--git-dir", git_dir, "--work-tree", dest, "checkout", "FETCH_HEAD"], what=what)
            _git(["--git-dir", git_dir, "remote", "set-url", "origin", redact(remote)], what=what)
            _git(["--git-dir", git_dir, "reflog", "expire", "--all", "--expire=now"], what=what)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(git_dir, "FETCH_HEAD"))
        finally:
            with contextlib.suppress(RemoteSourceError):
                _git(["--git-dir", bare, "update-ref", "-d", temp_ref], what="")


def _git(args: list[str], *, what: str, env: dict[str, str] | None = None, retry_without_depth: bool = False) -> str:
    """Run git BuildKit's way (no user or system config, no prompts); stdout, or RemoteSourceError."""
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": "/dev/null",
        "LC_ALL": "C",
        "GIT_SSH_COMMAND": "ssh -F /dev/null -o StrictHostKeyChecking=no",
    }
    if os.environ.get("SSH_AUTH_SOCK"):
        full_env["SSH_AUTH_SOCK"] = os.environ["SSH_AUTH_SOCK"]
    full_env.update(env or {})
    while True:
        try:
            proc = subprocess.run(
                ["git", "-c", "protocol.file.allow=user", *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=full_env,
                timeout=GIT_TIMEOUT,
                check=False,
            )
        except FileNotFoundError:
            raise RemoteSourceError("git sources need the git binary, which is not installed") from None
        except subprocess.TimeoutExpired:
            raise RemoteSourceError(f"{what}: git timed out after {GIT_TIMEOUT:.0f}s") from None
        if proc.returncode == 0:
            return proc.stdout
        if retry_without_depth and "--depth=1" in args and ("--depth" in proc.stderr or "shallow" in proc.stderr):
            args = [a for a in args if a != "--depth=1"]
            continue
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        detail = lines[-1] if lines else f"git exited with status {proc.returncode}"
        raise RemoteSourceError(f"{what}: {detail}" if what else detail)


def _etag_value(value: str) -> str:
    """An ETag compared as BuildKit does: the weak marker dropped."""
    return value.removeprefix("W/")


def _http_time(value: str) -> float:
    """A `Last-Modified` date as a timestamp; the epoch when absent or unreadable (BuildKit)."""
    if not value:
        return 0.0
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0

