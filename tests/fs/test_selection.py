"""Source selection for COPY: paths, wildcards, symlinks, all resolved inside the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.errors import ContextError
from engine.fs.gomatch import BadPatternError
from engine.fs.selection import Selected, select_sources, split_parents


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A source root; tmp_path/host holds a file that must never be selected."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret.txt").write_text("host secret")
    r = tmp_path / "src"
    for d in ("dir/sub", "dor", "empty", "etc", "deep/a/b"):
        (r / d).mkdir(parents=True)
    for f in ("a.txt", "b.txt", "c.md", "[ab].txt", "a*b.txt", "dir/x.txt", "dir/sub/y.txt", "dor/z.txt", "etc/passwd"):
        (r / f).write_text(f)
    (r / "deep/a/b/f.txt").write_text("deep")
    os.symlink("dir", r / "link_dir")
    os.symlink("/dir", r / "link_abs")
    os.symlink("../host/secret.txt", r / "link_up")
    os.symlink(str(host / "secret.txt"), r / "link_host")
    os.symlink("/etc/passwd", r / "link_etc")
    os.symlink("nope", r / "dangling")
    return r


def sel(root: Path, rel: str, is_dir: bool, wildcard: bool, host: str | None = None) -> Selected:
    return Selected(
        rel=rel, host_path=str(root / (host if host is not None else rel)), is_dir=is_dir, from_wildcard=wildcard
    )


def rels(items: list[Selected]) -> list[str]:
    return [s.rel for s in items]


def test_root_itself(root: Path) -> None:
    assert select_sources(str(root), "/") == [Selected(rel="", host_path=str(root), is_dir=True, from_wildcard=False)]
    assert select_sources(str(root), "/.") == select_sources(str(root), "/")


@pytest.mark.parametrize(
    ("src", "rel", "is_dir"),
    [
        ("/a.txt", "a.txt", False),
        ("/dir", "dir", True),
        ("/dir/", "dir", True),  # a trailing slash on a source is ignored
        ("/dir/sub/y.txt", "dir/sub/y.txt", False),
        ("/../../a.txt", "a.txt", False),  # '..' never climbs above the root
        ("/dir/../c.md", "c.md", False),
    ],
)
def test_plain_paths(root: Path, src: str, rel: str, is_dir: bool) -> None:
    assert select_sources(str(root), src) == [sel(root, rel, is_dir, False)]


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("/*.txt", ["[ab].txt", "a*b.txt", "a.txt", "b.txt"]),  # sorted like Go's Glob (bytes)
        ("/?.txt", ["a.txt", "b.txt"]),
        ("/[ab].txt", ["a.txt", "b.txt"]),  # a class, not the file named "[ab].txt"
        ("/[^a].txt", ["b.txt"]),
        ("/\\[ab].txt", ["[ab].txt"]),  # escaped: the literal name
        ("/a\\*b.txt", ["a*b.txt"]),
        ("/d?r/*", ["dir/sub", "dir/x.txt", "dor/z.txt"]),
        ("/*/*/y.txt", ["dir/sub/y.txt"]),
        ("/deep/*/b/*.txt", ["deep/a/b/f.txt"]),
        ("/dir/*", ["dir/sub", "dir/x.txt"]),
        ("/link_dir/*.txt", ["link_dir/x.txt"]),  # a symlink before the first wildcard is resolved
        ("/*.nothing", []),
    ],
)
def test_wildcards(root: Path, src: str, expected: list[str]) -> None:
    got = select_sources(str(root), src)
    assert rels(got) == expected
    escaped_only = "\\" in src and not any(c in src.replace("\\[", "").replace("\\*", "") for c in "*?[")
    assert all(s.from_wildcard is not escaped_only for s in got)


def test_wildcard_match_details(root: Path) -> None:
    got = select_sources(str(root), "/d?r/*")
    assert got == [
        sel(root, "dir/sub", True, True),
        sel(root, "dir/x.txt", False, True),
        sel(root, "dor/z.txt", False, True),
    ]


def test_wildcard_does_not_descend_symlinked_directories(root: Path) -> None:
    # BuildKit walks without following links: link_dir matches "link_*" but is not
    # a directory to descend into.
    assert select_sources(str(root), "/link_*/x.txt") == []


def test_wildcard_follows_a_matched_symlink_inside_the_root(root: Path) -> None:
    assert select_sources(str(root), "/link_d*") == [sel(root, "link_dir", True, True, host="dir")]
    assert select_sources(str(root), "/link_d*", follow_symlinks=False) == [sel(root, "link_dir", False, True)]


def test_wildcard_over_a_dangling_symlink_is_not_found(root: Path) -> None:
    with pytest.raises(ContextError, match='"/dangling": not found'):
        select_sources(str(root), "/dangl*")


@pytest.mark.parametrize(
    ("src", "host", "is_dir"),
    [
        ("/link_dir", "dir", True),
        ("/link_abs", "dir", True),  # an absolute target restarts at the root
        ("/link_dir/x.txt", "dir/x.txt", False),
        ("/link_abs/sub/y.txt", "dir/sub/y.txt", False),
        ("/link_etc", "etc/passwd", False),  # /etc/passwd of the root, not of the host
    ],
)
def test_symlinks_resolved_inside_root(root: Path, src: str, host: str, is_dir: bool) -> None:
    assert select_sources(str(root), src) == [sel(root, src.lstrip("/"), is_dir, False, host=host)]


def test_final_symlink_kept_without_follow(root: Path) -> None:
    assert select_sources(str(root), "/link_dir", follow_symlinks=False) == [sel(root, "link_dir", False, False)]
    # ...but parents are always resolved.
    assert select_sources(str(root), "/link_dir/x.txt", follow_symlinks=False) == [
        sel(root, "link_dir/x.txt", False, False, host="dir/x.txt")
    ]


@pytest.mark.parametrize("src", ["/link_up", "/link_host"])
def test_symlink_out_of_root_never_reaches_the_host(root: Path, src: str) -> None:
    with pytest.raises(ContextError, match="not found"):
        select_sources(str(root), src)
    # The same target recreated *inside* the root is what gets selected.
    inside = root / "host"
    inside.mkdir()
    (inside / "secret.txt").write_text("in-root copy")
    if src == "/link_host":
        target = root / str(root.parent / "host" / "secret.txt").lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("in-root copy")
    (got,) = select_sources(str(root), src)
    assert got.host_path.startswith(str(root) + "/")
    assert Path(got.host_path).read_text() == "in-root copy"


@pytest.mark.parametrize("src", ["/nope", "/dir/nope.txt", "/a.txt/x", "/dangling"])
def test_missing_source(root: Path, src: str) -> None:
    with pytest.raises(ContextError, match=f'^"{src}": not found$'):
        select_sources(str(root), src)


def test_missing_directory_before_a_wildcard(root: Path) -> None:
    with pytest.raises(ContextError, match='"/nope": not found'):
        select_sources(str(root), "/nope/*.txt")


def test_empty_wildcard(root: Path) -> None:
    assert select_sources(str(root), "/*.nothing") == []
    with pytest.raises(ContextError, match='"/\\*.nothing": not found'):
        select_sources(str(root), "/*.nothing", allow_empty_wildcard=False)
    assert select_sources(str(root), "/a.txt/*") == []  # a file has no entries


def test_without_wildcards_the_pattern_is_a_literal_name(root: Path) -> None:
    assert select_sources(str(root), "/a*b.txt", allow_wildcard=False) == [sel(root, "a*b.txt", False, False)]
    assert select_sources(str(root), "/[ab].txt", allow_wildcard=False) == [sel(root, "[ab].txt", False, False)]


def test_bad_pattern(root: Path) -> None:
    with pytest.raises(BadPatternError):
        select_sources(str(root), "/a[")


def test_go_byte_order(tmp_path: Path) -> None:
    r = tmp_path / "r"
    r.mkdir()
    names = [b"B", b"_", b"a", "é".encode(), "\uffda".encode(), b"\xff"]  # \xff is not UTF-8
    for n in names:
        (r / os.fsdecode(n)).touch()
    got = [os.fsencode(s.rel) for s in select_sources(str(r), "/*")]
    assert got == sorted(names)


def test_selection_is_deterministic(root: Path) -> None:
    first = select_sources(str(root), "/*", follow_symlinks=False)
    assert len(first) == 16
    for _ in range(3):
        assert select_sources(str(root), "/*", follow_symlinks=False) == first


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("/x/./y/*.txt", ("/x", "y/*.txt")),
        ("/x/y", ("/", "x/y")),
        ("/./x", ("/", "x")),
        ("/test/a/./b/./c", ("/test/a", "b/c")),
        ("/test/a/b/c/d/.", ("/", "test/a/b/c/d")),
        ("/test/a/b*/./c/**/e", ("/test/a/b*", "c/**/e")),
    ],
)
def test_split_parents(src: str, expected: tuple[str, str]) -> None:
    assert split_parents(src) == expected
