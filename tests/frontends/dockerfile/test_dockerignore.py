"""`.dockerignore`: reading (moby's ignorefile), choosing the file (dockerui), matching (ContextFilter)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ContextError, UsageError
from engine.fs.selection import ContextFilter, select_sources
from frontends.dockerfile.dockerignore import (
    IgnorePatterns,
    context_filter,
    exclude_factory,
    find_ignore_file,
    load_ignore,
    read_patterns,
)


def test_reading_follows_ignorefile_readall() -> None:
    text = (
        "\ufeff# a comment\n"
        "  # not a comment: leading spaces make it a pattern\n"
        "\n"
        "   *.log  \r\n"
        "/abs/path\n"
        "./rel/../other\n"
        "!  keep.log\n"
        "a//b/\n"
        "/\n"
        "**/*.tmp\n"
    )
    assert list(read_patterns(text)) == [
        "# not a comment: leading spaces make it a pattern",
        "*.log",
        "abs/path",
        "other",
        "!keep.log",
        "a/b",
        "/",
        "**/*.tmp",
    ]


def test_patterns_remember_their_file() -> None:
    patterns = read_patterns(b"x\n", "app.Dockerfile.dockerignore")
    assert isinstance(patterns, IgnorePatterns) and patterns == ("x",)
    assert patterns.source == "app.Dockerfile.dockerignore"
    assert context_filter(patterns).label == "app.Dockerfile.dockerignore"
    assert context_filter(()) is None


def test_dockerfile_specific_file_wins(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / ".dockerignore").write_text("from-context\n")
    assert find_ignore_file(str(ctx), str(ctx / "Dockerfile")) == (str(ctx / ".dockerignore"), ".dockerignore")
    (ctx / "Dockerfile.dockerignore").write_text("from-dockerfile\n")
    assert load_ignore(str(ctx), str(ctx / "Dockerfile")).patterns == ("from-dockerfile",)
    other = tmp_path / "elsewhere" / "app.Dockerfile"
    other.parent.mkdir()
    (other.parent / "app.Dockerfile.dockerignore").write_text("beside\n")
    ignore = load_ignore(str(ctx), str(other))
    assert ignore.name == "app.Dockerfile.dockerignore" and ignore.patterns == ("beside",)
    assert load_ignore(str(ctx), None).patterns == ("from-context",)  # stdin: the context's only
    assert load_ignore(str(tmp_path / "elsewhere"), None).path is None


def test_bad_pattern_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("ok\n!\n")
    with pytest.raises(UsageError, match=r"failed parsing \.dockerignore"):
        load_ignore(str(tmp_path), None)


@pytest.mark.parametrize(
    ("patterns", "path", "is_dir", "excluded"),
    [
        (["*.log"], "a.log", False, True),
        (["*.log"], "sub/a.log", False, False),  # anchored at the root
        (["**/*.log"], "sub/deep/a.log", False, True),
        (["**"], "anything/at/all", False, True),
        (["build"], "build/out/x", False, True),  # below an excluded directory
        (["build", "!build/keep"], "build/keep", False, False),
        (["build", "!build/keep"], "build/keep/inner", False, False),
        (["build", "!build/keep"], "build/other", False, True),
        (["*.md", "!README.md"], "README.md", False, False),
        (["!README.md", "*.md"], "README.md", False, True),  # the last match wins
        (["a?c"], "abc", False, True),
        (["a?c"], "a/c", False, False),
        (["dir/"], "dir", True, True),
        (["Dockerfile", ".dockerignore"], "Dockerfile", False, True),
    ],
)
def test_matching(patterns: list[str], path: str, is_dir: bool, excluded: bool) -> None:
    flt = ContextFilter(read_patterns("\n".join(patterns)))
    assert flt(path, is_dir) is excluded
    # the memoized walk agrees with a cold one on every ancestor order
    fresh = ContextFilter(read_patterns("\n".join(patterns)))
    parts = path.split("/")
    for i in range(1, len(parts)):
        fresh("/".join(parts[:i]), True)
    assert fresh(path, is_dir) is excluded


def _tree(root: Path, files: list[str]) -> None:
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)


def test_selection_treats_excluded_entries_as_absent(tmp_path: Path) -> None:
    _tree(tmp_path, ["a.txt", "secret.txt", "build/keep/k.txt", "build/drop.txt", "gone/x.txt"])
    (tmp_path / "link").symlink_to("secret.txt")
    flt = ContextFilter(read_patterns("secret.txt\nbuild\n!build/keep\ngone\n"))
    names = [s.rel for s in select_sources(str(tmp_path), "/*", context_filter=flt)]
    assert names == ["a.txt", "build"]  # build stays: something below it is re-included
    with pytest.raises(ContextError, match=r'"/secret.txt": not found \(excluded by \.dockerignore\)'):
        select_sources(str(tmp_path), "/secret.txt", context_filter=flt)
    with pytest.raises(ContextError, match="excluded by"):
        select_sources(str(tmp_path), "/link", context_filter=flt)  # resolves to an excluded file
    with pytest.raises(ContextError, match="excluded by"):
        select_sources(str(tmp_path), "/gone", context_filter=flt)
    assert select_sources(str(tmp_path), "/build", context_filter=flt)[0].is_dir
    with pytest.raises(ContextError, match=r'"/missing": not found$'):
        select_sources(str(tmp_path), "/missing", context_filter=flt)


def test_copy_skips_what_the_context_excludes(tmp_path: Path) -> None:
    from engine.fs.copy import CopyOptions, copy_into

    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, ["a.txt", "x.log", "build/keep/k.txt", "build/drop.txt", "sub/y.log", "sub/z.txt", "empty/e.log"])
    flt = ContextFilter(read_patterns("*.log\nbuild\n!build/keep\n**/y.log\nempty/*\n"))
    dst.mkdir()
    copy_into(str(src), select_sources(str(src), "/", context_filter=flt), str(dst), "/out/", CopyOptions(context_filter=flt))
    got = sorted(str(p.relative_to(dst / "out")) for p in (dst / "out").rglob("*"))
    assert got == ["a.txt", "build", "build/keep", "build/keep/k.txt", "empty", "sub", "sub/z.txt"]
    # a source below the root is filtered by its path from the root, not from itself
    dst2 = tmp_path / "dst2"
    dst2.mkdir()
    copy_into(str(src), select_sources(str(src), "/sub", context_filter=flt), str(dst2), "/", CopyOptions(context_filter=flt))
    assert sorted(p.name for p in dst2.iterdir()) == ["z.txt"]


def test_exclude_factory_is_the_hasher_predicate(tmp_path: Path) -> None:
    make = exclude_factory("custom.dockerignore")
    predicate = make(("*.log",))
    assert predicate is not None and predicate("a.log", False) and not predicate("a.txt", False)
    assert predicate.label == "custom.dockerignore"  # type: ignore[attr-defined]
    assert make(()) is None
