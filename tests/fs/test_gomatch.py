"""Go `path.Match` semantics: Go's own table, the regex fast path agrees with the port."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.fs import gomatch
from engine.fs.gomatch import BadPatternError

BAD = "bad"

# Go's path/filepath match_test.go table (pattern, name, result).
GO_MATCH_TESTS = [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", False),
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-ζ]*", "α", True),
    ("*[a-ζ]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("[\\-x]", "-", True),
    ("[\\-x]", "a", False),
    ("[]a]", "]", BAD),
    ("[-]", "-", BAD),
    ("[x-]", "x", BAD),
    ("[x-]", "-", BAD),
    ("[x-]", "z", BAD),
    ("[-x]", "x", BAD),
    ("[-x]", "-", BAD),
    ("[-x]", "a", BAD),
    ("\\", "a", BAD),
    ("[a-b-c]", "a", BAD),
    ("[", "a", BAD),
    ("[^", "a", BAD),
    ("[^bc", "a", BAD),
    ("a[", "a", BAD),
    ("a[", "ab", BAD),
    ("a[", "x", BAD),
    ("a/b[", "x", BAD),
    ("*x", "xxx", True),
    # More of the documented rules.
    ("[!a]", "!", True),  # Go negates with ^ only: [!a] is the set {!, a}
    ("[!a]", "b", False),
    ("[^a]", "b", True),
    ("[a-z]", "m", True),
    ("[a-z]", "M", False),
    ("\\\\", "\\", True),  # an escaped backslash
    ("a\\b", "ab", True),
    ("[z-a]", "m", False),  # an empty range is allowed and matches nothing
    ("[^z-a]", "m", True),
    ("[^a]", "/", True),  # a class may match '/', unlike ? and *
    ("*.txt", ".txt", True),
    ("*", "", True),
    ("", "", True),
    ("", "a", False),
    ("a*", "a/", False),
    ("x*y*z", "xAyBz", True),
    ("x*y*z", "xyz/", False),
]


@pytest.mark.parametrize(("pattern", "name", "expected"), GO_MATCH_TESTS)
def test_go_match_table(pattern: str, name: str, expected: object) -> None:
    if expected == BAD:
        with pytest.raises(BadPatternError):
            gomatch.match(pattern, name)
        with pytest.raises(BadPatternError):
            gomatch.compile(pattern)
    else:
        assert gomatch.match(pattern, name) is expected
        assert gomatch.compile(pattern)(name) is expected


def test_bad_pattern_is_reported_even_after_a_mismatch() -> None:
    # Go validates the rest of the pattern before answering "no match".
    with pytest.raises(BadPatternError):
        gomatch.match("x*[", "abc")
    with pytest.raises(BadPatternError):
        gomatch.validate("ok/then[")
    gomatch.validate("fine*[a-c]?")


def test_bad_pattern_error_is_a_user_error() -> None:
    from engine.errors import ShipyardError

    with pytest.raises(ShipyardError, match="syntax error in pattern"):
        gomatch.match("[", "a")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a*b", True), ("a?b", True), ("a[b", True), ("a\\*b", False), ("plain", False), ("a\\\\*", True), ("", False)],
)
def test_contains_wildcards(name: str, expected: bool) -> None:
    assert gomatch.contains_wildcards(name) is expected


@pytest.mark.parametrize(
    ("pattern", "static", "rest"),
    [
        ("/app/*.py", ["app"], ["*.py"]),
        ("/", [], []),
        ("/sub/", ["sub"], []),
        ("/a/b/c", ["a", "b", "c"], []),
        ("/a/./b*/c/d?", ["a"], ["b*", "c", "d?"]),
        ("/x\\*y/*", ["x\\*y"], ["*"]),
        ("*", [], ["*"]),
        ("/[ab].txt", [], ["[ab].txt"]),
    ],
)
def test_split_static_prefix(pattern: str, static: list[str], rest: list[str]) -> None:
    assert gomatch.split_static_prefix(pattern) == (static, rest)


@pytest.mark.parametrize(
    ("component", "literal"), [("a\\*b", "a*b"), ("plain", "plain"), ("\\\\x", "\\x"), ("tail\\", "tail\\")]
)
def test_unescape(component: str, literal: str) -> None:
    assert gomatch.unescape(component) == literal


def test_has_meta_follows_go_glob() -> None:
    assert gomatch.has_meta("a\\b")  # Go's Glob treats a backslash as magic on Unix
    assert gomatch.has_meta("a*")
    assert not gomatch.has_meta("a.b")


_ALPHABET = st.sampled_from(list("ab/*?[]^-\\.x☺"))


@settings(max_examples=3000, deadline=None)
@given(pattern=st.text(_ALPHABET, max_size=8), name=st.text(st.sampled_from(list("ab/.x-^]☺*?")), max_size=8))
def test_compiled_regex_agrees_with_go_port(pattern: str, name: str) -> None:
    try:
        expected = gomatch.match(pattern, name)
    except BadPatternError:
        with pytest.raises(BadPatternError):
            gomatch.compile(pattern)
        return
    assert gomatch.compile(pattern)(name) is expected, (pattern, name)
