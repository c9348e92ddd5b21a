"""What an ADD/COPY source names: a git repository, an HTTP(S) file, or a local path.

BuildKit decides with `dfgitutil.ParseGitRef` first, then the `http(s)://` prefix,
and this module keeps its rules, surprising ones included:

- `./x` and `../x` are always local; `github.com/…` (no scheme) too (deprecated form,
  honoured only for build contexts);
- a URL with a scheme is git only for `http`, `https`, `ssh` and `git`, and an
  `http(s)` URL only when its path ends in `.git`; any other scheme (`file://…`) is
  not git — and not HTTP either, so it is a (strange) local path;
- without a scheme, an scp-like `[user@]host:path` is git over ssh — so `ADD a:b /x`
  names a repository `a`, exactly as in BuildKit;
- the fragment says what to check out: `#ref`, `#ref:subdir`, or the CSV form
  `##ref=…,subdir=…,commit=…`; the query may carry `ref`, `tag`, `branch`, `subdir`,
  `checksum`/`commit`, `keep-git-dir` and `submodules`.

An HTTP source's file name is the last element of the URL's (decoded) path, or
`__unnamed__` when the path has none (`https://host/`).

The frontend resolves remote sources through a `RemoteResolver` (the engine's), as it
resolves images through an `ImageResolver`: the content digest of a URL and the commit
of a git ref become part of the graph, so cache keys follow the content.
"""

from __future__ import annotations

import csv
import posixpath
import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qsl, unquote, urlsplit

UNNAMED = "__unnamed__"
GIT_SCHEMES = ("http", "https", "ssh", "git")

_PROTO = re.compile(r"^[a-zA-Z0-9]+://")
_SCP = re.compile(r"^(?:([a-zA-Z0-9\-_]+)@)?([a-zA-Z0-9\-.]+):(.*?)(?:#(.*))?$", re.DOTALL)
_URL_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+\-.]*):")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class SourceError(ValueError):
    """A source that is recognisably git but malformed (BuildKit fails the build)."""


@dataclass(frozen=True)
class GitRef:
    """A parsed git source (BuildKit's `dfgitutil.GitRef`)."""

    remote: str
    ref: str = ""
    subdir: str = ""
    checksum: str = ""
    keep_git_dir: bool | None = None
    submodules: bool | None = None
    unencrypted: bool = False


@dataclass(frozen=True)
class ResolvedHttp:
    """What a resolver found for a URL: the content digest and its `Last-Modified`."""

    digest: str
    last_modified: str = ""


@runtime_checkable
class RemoteResolver(Protocol):
    def resolve_http(self, url: str, filename: str, checksum: str) -> ResolvedHttp:
        """The content digest of `url` (the pin itself when `checksum` is given)."""
        ...

    def resolve_git(self, remote: str, ref: str, checksum: str) -> str:
        """The commit `ref` (the default branch when empty) names in `remote`."""
        ...


def is_commit(ref: str) -> bool:
    return bool(_COMMIT.match(ref))


def parse_git_ref(src: str) -> GitRef | None:
    """The git source `src` names, or None when it is not one.

    Raises SourceError when `src` is git but its fragment or query is malformed.
    """
    if src.startswith(("./", "../", "github.com/")):
        return None
    proto = _PROTO.match(src)
    if proto:
        scheme = proto.group(0)[:-3].lower()
        if scheme not in GIT_SCHEMES:
            return None
        parts = urlsplit(src)
        if scheme in ("http", "https") and not unquote(parts.path).endswith(".git"):
            return None
        remote = parts._replace(fragment="", query="").geturl()
        frag_ref, frag_subdir, commit = _fragment(parts.fragment)
        ref = _query(GitRef(remote, frag_ref, frag_subdir, commit, unencrypted=scheme in ("http", "git")), parts.query)
        return ref
    scheme = _URL_SCHEME.match(src)
    if scheme and src[scheme.end() : scheme.end() + 1] == "/":
        return None  # Go's url.Parse finds a scheme and no opaque part: not scp-like
    match = _SCP.match(src)
    if match is None:
        return None
    user, host, path, fragment = match.groups()
    remote = f"{user + '@' if user else ''}{host}:{path}"
    frag_ref, frag_subdir, commit = _fragment(fragment or "")
    return GitRef(remote, frag_ref, frag_subdir, commit)


def _fragment(fragment: str) -> tuple[str, str, str]:
    """(ref, subdir, commit) of a `#ref:subdir` or `##key=value,…` fragment."""
    if fragment.startswith("#"):
        body = fragment[1:]
        if not body:
            return "", "", ""
        try:
            fields = next(csv.reader([body]))
        except csv.Error as exc:
            raise SourceError(f"failed to parse URL fragment {fragment!r}: {exc}") from None
        ref = subdir = commit = ""
        for item in fields:
            key, sep, value = item.partition("=")
            if not sep:
                raise SourceError(f"invalid field '{item}' must be a key=value pair")
            key = key.lower()
            if key == "ref":
                ref = value
            elif key == "commit":
                commit = value
            elif key == "subdir":
                subdir = value
            else:
                raise SourceError(f"unexpected key '{key}' in '{item}' (supported keys: ref, commit, subdir)")
        return ref or commit, subdir, commit
    ref, _, subdir = fragment.partition(":")
    return ref, subdir, ""


def _query(ref: GitRef, query: str) -> GitRef:
    """Apply BuildKit's URL query options (`?ref=…&subdir=…&keep-git-dir`)."""
    if not query:
        return ref if not ref.checksum else _with(ref, ref=ref.ref or ref.checksum)
    values: dict[str, list[str]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        values.setdefault(key, []).append(value)
    fields = {"ref": ref.ref, "subdir": ref.subdir, "checksum": ref.checksum}
    keep: bool | None = None
    submodules: bool | None = None
    tag = branch = ""
    for key, items in values.items():
        if len(items) > 1:
            raise SourceError(f"query {key!r} has multiple values")
        value = items[0]
        if value == "" and key not in ("submodules", "keep-git-dir"):
            raise SourceError(f"query {key!r} has no value")
        if key in ("ref", "subdir"):
            if fields[key] and fields[key] != value:
                raise SourceError(f"{key} conflicts: {fields[key]!r} vs {value!r}")
            fields[key] = value
        elif key == "tag":
            tag = value
        elif key == "branch":
            branch = value
        elif key in ("checksum", "commit"):
            fields["checksum"] = value
        elif key in ("keep-git-dir", "submodules"):
            flag = True if value == "" else _go_bool(value, key)
            if key == "keep-git-dir":
                keep = flag
            else:
                submodules = flag
        else:
            raise SourceError(f"unexpected query {key!r}")
    if tag:
        tag = tag if tag.startswith("refs/tags/") else "refs/tags/" + tag
        if fields["ref"] and fields["ref"] != tag:
            raise SourceError(f"ref conflicts: {fields['ref']!r} vs {tag!r}")
        fields["ref"] = tag
    if branch:
        if tag:
            raise SourceError("branch conflicts with tag")
        branch = branch if branch.startswith("refs/heads/") else "refs/heads/" + branch
        if fields["ref"] and fields["ref"] != branch:
            raise SourceError(f"ref conflicts: {fields['ref']!r} vs {branch!r}")
        fields["ref"] = branch
    if fields["checksum"] and not fields["ref"]:
        fields["ref"] = fields["checksum"]
    return _with(ref, ref=fields["ref"], subdir=fields["subdir"], checksum=fields["checksum"], keep_git_dir=keep, submodules=submodules)


def _with(git: GitRef, **changes: object) -> GitRef:
    from dataclasses import replace

    return replace(git, **changes)  # type: ignore[arg-type]


def _go_bool(value: str, key: str) -> bool:
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise SourceError(f"invalid {key} value: {value!r}")


def is_http_source(src: str) -> bool:
    """`http(s)://…` that is not a git repository."""
    if not src.startswith(("http://", "https://")):
        return False
    try:
        return parse_git_ref(src) is None
    except SourceError:
        return False


def url_filename(url: str) -> str:
    """The file name ADD gives a download: Go's `path.Base` of the decoded URL path."""
    try:
        path = unquote(urlsplit(url).path)
    except ValueError:
        return UNNAMED
    base = _go_base(path)
    return UNNAMED if base in (".", "/") else base


def _go_base(path: str) -> str:
    if not path:
        return "."
    path = path.rstrip("/")
    if not path:
        return "/"
    return posixpath.basename(path) or "/"


_CHECKSUM = re.compile(r"^(sha256|sha384|sha512):([0-9a-f]+)$")
_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}


def parse_checksum(value: str) -> tuple[str, str]:
    """(algorithm, hex) of a `--checksum` digest; ValueError with BuildKit's wording otherwise."""
    match = _CHECKSUM.match(value)
    if match is None:
        if ":" not in value:
            raise ValueError("invalid checksum digest format")
        algorithm = value.split(":", 1)[0]
        if algorithm not in _HEX_LEN:
            raise ValueError("unsupported digest algorithm")
        raise ValueError("invalid checksum digest format")
    algorithm, hexdigest = match.groups()
    if len(hexdigest) != _HEX_LEN[algorithm]:
        raise ValueError("invalid checksum digest length")
    return algorithm, hexdigest
