"""Which ADD sources are git repositories, which are URLs, and what a download is named."""

from __future__ import annotations

import pytest

from frontends.dockerfile.addsources import (
    UNNAMED,
    GitRef,
    SourceError,
    is_http_source,
    parse_checksum,
    parse_git_ref,
    url_filename,
)


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("https://github.com/moby/buildkit.git", GitRef("https://github.com/moby/buildkit.git")),
        ("https://host/r.git#v1.2:sub/dir", GitRef("https://host/r.git", "v1.2", "sub/dir")),
        ("http://127.0.0.1:8000/r.git#main", GitRef("http://127.0.0.1:8000/r.git", "main", unencrypted=True)),
        ("git@github.com:moby/buildkit.git#main", GitRef("git@github.com:moby/buildkit.git", "main")),
        ("ssh://git@host/x/y#abc:d", GitRef("ssh://git@host/x/y", "abc", "d")),
        ("git://host/x.git", GitRef("git://host/x.git", unencrypted=True)),
        ("https://host/r.git##ref=v1,subdir=docs", GitRef("https://host/r.git", "v1", "docs")),
        (
            "https://host/r.git?branch=dev&subdir=a&keep-git-dir",
            GitRef("https://host/r.git", "refs/heads/dev", "a", keep_git_dir=True),
        ),
        ("https://host/r.git?tag=v1", GitRef("https://host/r.git", "refs/tags/v1")),
        ("https://host/r.git?checksum=abc123", GitRef("https://host/r.git", "abc123", checksum="abc123")),
        ("config:value", GitRef("config:value")),  # scp-like: BuildKit reads this as git over ssh
    ],
)
def test_git_sources(src: str, expected: GitRef) -> None:
    assert parse_git_ref(src) == expected


@pytest.mark.parametrize(
    "src",
    [
        "https://host/file.tar.gz",  # http without .git is a download
        "https://host/r.git.tar",
        "./a:b",
        "../x",
        "github.com/moby/buildkit",  # deprecated form: a local path for ADD
        "file:///etc/passwd",  # not a git scheme, and not http either: a local path
        "src/*.txt",
        "dir/a:b",
        "x:/abs",  # a scheme and a path: not scp-like
    ],
)
def test_not_git(src: str) -> None:
    assert parse_git_ref(src) is None


@pytest.mark.parametrize(
    "src",
    ["https://h/r.git?ref=a&ref=b", "https://h/r.git?nope=1", "https://h/r.git?tag=a&branch=b", "https://h/r.git##x"],
)
def test_malformed_git_sources(src: str) -> None:
    with pytest.raises(SourceError):
        parse_git_ref(src)


def test_http_sources_and_their_file_names() -> None:
    assert is_http_source("https://host/a/b.txt") and not is_http_source("https://host/r.git")
    assert not is_http_source("ftp://host/x")
    assert url_filename("https://host/dir/file.tar.gz?x=1#frag") == "file.tar.gz"
    assert url_filename("https://host/dir/") == "dir"
    assert url_filename("https://host/a%20b.txt") == "a b.txt"
    assert url_filename("https://host/") == UNNAMED
    assert url_filename("https://host") == UNNAMED


def test_checksums() -> None:
    assert parse_checksum("sha256:" + "a" * 64) == ("sha256", "a" * 64)
    assert parse_checksum("sha512:" + "0" * 128)[0] == "sha512"
    for bad in ("sha256:abc", "md5:" + "a" * 32, "nonsense", "sha256:" + "A" * 64):
        with pytest.raises(ValueError):
            parse_checksum(bad)
