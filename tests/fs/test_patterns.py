"""moby/patternmatcher semantics (the cases of its own test suite, plus walking rules)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.fs.gomatch import BadPatternError
from engine.fs.patterns import PatternMatcher

EXACT, INEXACT, FAIL = "exact", "inexact", "fail"

# (pattern, path, kind): exact = the path itself matches; inexact = only a parent does.
SINGLE = [
    ("**", "file", EXACT),
    ("**", "file/", EXACT),
    ("**/", "file", EXACT),
    ("**/", "file/", EXACT),
    ("**", "/", EXACT),
    ("**/", "/", EXACT),
    ("**", "dir/file", EXACT),
    ("**/", "dir/file", EXACT),
    ("**", "dir/file/", EXACT),
    ("**/", "dir/file/", EXACT),
    ("**/**", "dir/file", EXACT),
    ("**/**", "dir/file/", EXACT),
    ("dir/**", "dir/file", EXACT),
    ("dir/**", "dir/file/", EXACT),
    ("dir/**", "dir/dir2/file", EXACT),
    ("dir/**", "dir/dir2/file/", EXACT),
    ("**/dir", "dir", EXACT),
    ("**/dir", "dir/file", INEXACT),
    ("**/dir2/*", "dir/dir2/file", EXACT),
    ("**/dir2/*", "dir/dir2/file/", INEXACT),
    ("**/dir2/**", "dir/dir2/dir3/file", EXACT),
    ("**/dir2/**", "dir/dir2/dir3/file/", EXACT),
    ("**file", "file", EXACT),
    ("**file", "dir/file", EXACT),
    ("**/file", "dir/file", EXACT),
    ("**file", "dir/dir/file", EXACT),
    ("**/file", "dir/dir/file", EXACT),
    ("**/file*", "dir/dir/file", EXACT),
    ("**/file*", "dir/dir/file.txt", EXACT),
    ("**/file*txt", "dir/dir/file.txt", EXACT),
    ("**/file*.txt", "dir/dir/file.txt", EXACT),
    ("**/file*.txt*", "dir/dir/file.txt", EXACT),
    ("**/**/*.txt", "dir/dir/file.txt", EXACT),
    ("**/**/*.txt2", "dir/dir/file.txt", FAIL),
    ("**/*.txt", "file.txt", EXACT),
    ("**/**/*.txt", "file.txt", EXACT),
    ("a**/*.txt", "a/file.txt", EXACT),
    ("a**/*.txt", "a/dir/file.txt", EXACT),
    ("a**/*.txt", "a/dir/dir/file.txt", EXACT),
    ("a/*.txt", "a/dir/file.txt", FAIL),
    ("a/*.txt", "a/file.txt", EXACT),
    ("a/*.txt**", "a/file.txt", EXACT),
    ("a[b-d]e", "ae", FAIL),
    ("a[b-d]e", "ace", EXACT),
    ("a[b-d]e", "aae", FAIL),
    ("a[^b-d]e", "aze", EXACT),
    (".*", ".foo", EXACT),
    (".*", "foo", FAIL),
    ("abc.def", "abcdef", FAIL),
    ("abc.def", "abc.def", EXACT),
    ("abc.def", "abcZdef", FAIL),
    ("abc?def", "abcZdef", EXACT),
    ("abc?def", "abcdef", FAIL),
    ("**/foo/bar", "foo/bar", EXACT),
    ("**/foo/bar", "dir/foo/bar", EXACT),
    ("**/foo/bar", "dir/dir2/foo/bar", EXACT),
    ("abc/**", "abc", FAIL),
    ("abc/**", "abc/def", EXACT),
    ("abc/**", "abc/def/ghi", EXACT),
    ("**/.foo", ".foo", EXACT),
    ("**/.foo", "bar.foo", FAIL),
    ("a(b)c/def", "a(b)c/def", EXACT),
    ("a(b)c/def", "a(b)c/xyz", FAIL),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", EXACT),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", EXACT),
    ("a\\\\", "a\\", EXACT),
    ("a\\*b", "a*b", EXACT),
    # Anchored at the root, unlike .gitignore.
    ("abc", "x/abc", FAIL),
    ("foo/bar", "foo/bar", EXACT),
    ("foo/bar", "x/foo/bar", FAIL),
    ("docs", "docs/README.md", INEXACT),
    ("*.go", "pkg/a.go", FAIL),
    ("*/*.go", "pkg/a.go", EXACT),
    ("./docs/", "docs/x", INEXACT),  # patterns are filepath.Clean'ed
    ("x$", "x$", EXACT),
    ("*", "x\n", EXACT),
]

MULTI = [
    (["**", "!util/docker/web"], "util/docker/web/foo", FAIL),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", EXACT),
    (["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", FAIL),
    (["!fileutils.go", "*.go"], "fileutils.go", EXACT),
    (["*.go", "!fileutils.go"], "fileutils.go", FAIL),
    (["docs", "!docs/README.md"], "docs/README.md", FAIL),
    (["docs/", "!docs/README.md"], "docs/README.md", FAIL),
    (["docs/*", "!docs/README.md"], "docs/README.md", FAIL),
    (["docs/*", "!docs/README.md"], "docs/other.md", EXACT),
    # Last match wins, an exception can be excluded again.
    (["*.md", "!README.md", "README.md"], "README.md", EXACT),
    (["*.md", "!*.md"], "a.md", FAIL),
]


def _walk_match(pm: PatternMatcher, path: str) -> bool:
    """Match like a top-down walk does: thread each parent's MatchInfo down."""
    parent = path[: path.rfind("/")] if "/" in path else ""  # Go's filepath.Dir
    parts = parent.split("/") if parent else []
    info = None
    for i in range(len(parts)):
        _, info = pm.matches_with_parent("/".join(parts[: i + 1]), info)
    return pm.matches_with_parent(path, info)[0]


@pytest.mark.parametrize(("pattern", "path", "kind"), SINGLE)
def test_single_pattern(pattern: str, path: str, kind: str) -> None:
    pm = PatternMatcher([pattern])
    assert pm.matches_exact(path) is (kind == EXACT)
    assert pm.matches(path) is (kind != FAIL)
    assert pm.matches_with_parent(path, None)[0] is (kind != FAIL)
    assert _walk_match(pm, path) is (kind != FAIL)


@pytest.mark.parametrize(("patterns", "path", "kind"), MULTI)
def test_pattern_lists(patterns: list[str], path: str, kind: str) -> None:
    pm = PatternMatcher(patterns)
    assert pm.matches(path) is (kind != FAIL)
    assert _walk_match(pm, path) is (kind != FAIL)


def test_cleaning_and_exceptions_flag() -> None:
    pm = PatternMatcher(["docs", "  !docs/README.md  ", ""])
    assert len(pm.patterns) == 2
    assert pm.exclusions
    assert not PatternMatcher(["docs"]).exclusions
    assert not PatternMatcher([])


@pytest.mark.parametrize("bad", [["!"], ["["], ["a/[b"], ["\\"]])
def test_bad_patterns(bad: list[str]) -> None:
    with pytest.raises(BadPatternError):
        PatternMatcher(bad)


@pytest.mark.parametrize(
    ("patterns", "directory", "exclusion", "expected"),
    [
        (["a/*/c"], "a", False, True),
        (["a/*/c"], "a/b", False, True),
        (["a/*/c"], "x", False, False),
        (["a/*/c"], "a/b/c", False, False),  # matching the dir itself is the caller's rule
        (["src/**/*.txt"], "other", False, True),  # ** is never pruned
        (["x/y.txt"], "x", False, True),
        (["x/y.txt"], "y", False, False),
        (["node_modules", "!node_modules/keep/*"], "node_modules", True, True),
        (["node_modules", "!other/*"], "node_modules", True, False),
        (["node_modules"], "node_modules", True, False),
    ],
)
def test_may_match_below(patterns: list[str], directory: str, exclusion: bool, expected: bool) -> None:
    assert PatternMatcher(patterns).may_match_below(directory, exclusion=exclusion) is expected


_SEG = st.sampled_from(["a", "b", "ab", ".x", "a.txt"])
_PAT_SEG = st.sampled_from(["a", "b", "*", "?", "a*", "*.txt", "**", "[ab]", ".x"])


@settings(max_examples=400, deadline=None)
@given(
    patterns=st.lists(st.tuples(st.booleans(), st.lists(_PAT_SEG, min_size=1, max_size=3)), min_size=1, max_size=3),
    path=st.lists(_SEG, min_size=1, max_size=4),
)
def test_walk_equals_parent_matching(patterns: list[tuple[bool, list[str]]], path: list[str]) -> None:
    """Threading MatchInfo down a walk gives moby's MatchesOrParentMatches answer...

    ...except where moby documents they differ: MatchesUsingParentResults skips
    evaluating a pattern once the result is decided, so a parent hit on a skipped
    pattern is not inherited (moby/buildkit copies with exactly this behaviour).
    Single-pattern lists and lists without exceptions never hit that case.
    """
    texts = [("!" if neg else "") + "/".join(segs) for neg, segs in patterns]
    if any(neg for neg, _ in patterns) and len(patterns) > 1:
        return
    pm = PatternMatcher(texts)
    p = "/".join(path)
    assert _walk_match(pm, p) is pm.matches(p)
