"""Word expansion, checked against BuildKit's own expectations (shell/envVarTest and
wordsTest) and against the quirks users meet in Dockerfiles."""

from __future__ import annotations

import time

import pytest

from engine.errors import DockerfileError
from frontends.dockerfile.shell_lexer import ExpansionError, ShellLex, go_quote

ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어"}

# (word, expected) — "error" means the expansion must fail. From BuildKit's envVarTest.
BUILDKIT_TABLE = [
    ("hello", "hello"),
    ("he'll'o", "hello"),
    ("he'llo", "error"),
    ("he\\'llo", "he'llo"),
    ("he\\\\'llo", "error"),
    ("abc\\tdef", "abctdef"),
    ('"abc\\tdef"', "abc\\tdef"),
    ('"abc\\\\tdef"', "abc\\tdef"),
    ("'abc\\tdef'", "abc\\tdef"),
    ("hello\\", "hello"),
    ("hello\\\\", "hello\\"),
    ('"hello', "error"),
    ('"hello\\"', "error"),
    ('"hel\'lo"', "hel'lo"),
    ("'hello", "error"),
    ("'hello\\'", "hello\\"),
    ("\"''\"", "''"),
    ("$.", "$."),
    ("he$1x", "hex"),
    ("he$.x", "he$.x"),
    ("he$pwd.", "he."),
    ("he$PWD", "he/home"),
    ("he\\$PWD", "he$PWD"),
    ("he\\\\$PWD", "he\\/home"),
    ('"he\\$PWD"', "he$PWD"),
    ('"he\\\\$PWD"', "he\\/home"),
    ("\\${}", "${}"),
    ("he\\${}xx", "he${}xx"),
    ("${}", "error"),
    ("he${}xx", "error"),
    ("he${hi}xx", "hexx"),
    ("he${PWD}", "he/home"),
    ("he${.}", "error"),
    ("he${XXX:-000}xx", "he000xx"),
    ("he${PWD:-000}xx", "he/homexx"),
    ("he${XXX:-$PWD}xx", "he/homexx"),
    ("he${XXX:-${PWD:-yyy}}xx", "he/homexx"),
    ("he${XXX:-${YYY:-yyy}}xx", "heyyyxx"),
    ("he${XXX:YYY}", "error"),
    ("he${XXX?}", "error"),
    ("he${XXX:?}", "error"),
    ("he${PWD?}", "he/home"),
    ("he${PWD:?}", "he/home"),
    ("he${XXX:+${PWD}}xx", "hexx"),
    ("he${PWD:+${XXX}}xx", "hexx"),
    ("he${PWD:+${SHELL}}xx", "hebashxx"),
    ("he${XXX:+000}xx", "hexx"),
    ("he${PWD:+000}xx", "he000xx"),
    ("'he${XX}'", "he${XX}"),
    ('"he${PWD}"', "he/home"),
    ("\"he'$PWD'\"", "he'/home'"),
    ("'$PWD'", "$PWD"),
    ("'\\$PWD'", "\\$PWD"),
    ("he${PWD", "error"),
    ("he${PWD:=000}xx", "error"),
    ("he${PWD:+${PWD}:}xx", "he/home:xx"),
    ("he${XXX:-\\$PWD:}xx", "he$PWD:xx"),
    ("he${XXX:-\\${PWD}z}xx", "he${PWDz}xx"),
    ("안녕하세요", "안녕하세요"),
    ("안'녕'하세요", "안녕하세요"),
    ("안'녕하세요", "error"),
    ("안녕\\'하세요", "안녕'하세요"),
    ('"안녕\\t어때요"', "안녕\\t어때요"),
    ("$KOREAN", "한국어"),
    ("안녕$KOREAN", "안녕한국어"),
    ("$#", ""),
    ("$$", ""),
    ("$@", ""),
    ("${#PWD}", "error"),  # BuildKit has no length operator
]


@pytest.mark.parametrize(("word", "expected"), BUILDKIT_TABLE)
def test_buildkit_expansion_table(word: str, expected: str) -> None:
    lex = ShellLex()
    if expected == "error":
        with pytest.raises(ExpansionError):
            lex.process_word(word, ENV)
    else:
        assert lex.process_word(word, ENV) == expected


def test_unset_versus_empty_modifiers() -> None:
    env = {"EMPTY": ""}
    lex = ShellLex()
    assert lex.process_word("${EMPTY:-d}", env) == "d"
    assert lex.process_word("${EMPTY-d}", env) == ""
    assert lex.process_word("${UNSET-d}", env) == "d"
    assert lex.process_word("${EMPTY:+x}", env) == ""
    assert lex.process_word("${EMPTY+x}", env) == "x"
    assert lex.process_word("${UNSET+x}", env) == ""
    assert lex.process_word("${EMPTY?}", env) == ""
    with pytest.raises(ExpansionError, match="EMPTY: is not allowed to be empty"):
        lex.process_word("${EMPTY:?}", env)
    with pytest.raises(ExpansionError, match="UNSET: custom message"):
        lex.process_word("${UNSET?custom message}", env)


def test_error_messages_match_buildkit() -> None:
    lex = ShellLex()
    cases = {
        "${}": "syntax error: bad substitution",
        "${A:#x}": "unsupported modifier (:#) in substitution",
        "${A:x}": "unsupported modifier (:x) in substitution",
        "${A:": "syntax error: missing '}'",
        "${A/x": "syntax error: missing '/' in ${}",
        "${A/x/y": "syntax error: missing '}'",
        "'abc": "unexpected end of statement while looking for matching single-quote",
        '"abc': "unexpected end of statement while looking for matching double-quote",
        "${#A}": "unsupported modifier (A) in substitution",
    }
    for word, message in cases.items():
        with pytest.raises(ExpansionError) as info:
            lex.process_word(word, {"A": "v"})
        assert info.value.message == f"failed to process {go_quote(word)}: {message}"


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("${P#*/}", "usr/local/bin/app.tar.gz"),
        ("${P##*/}", "app.tar.gz"),
        ("${P%.*}", "/usr/local/bin/app.tar"),
        ("${P%%.*}", "/usr/local/bin/app"),
        ("${P#/usr}", "/local/bin/app.tar.gz"),
        ("${P#nomatch}", "/usr/local/bin/app.tar.gz"),
        ("${P%?z}", "/usr/local/bin/app.tar."),
        ("${P#}", "/usr/local/bin/app.tar.gz"),
        ("${A/b/X}", "aXcabc"),
        ("${A//b/X}", "aXcaXc"),
        ("${A//b*c/X}", "aX"),
        ("${A/*/X}", "X"),
        ("${A//?/-}", "------"),
        ("${A//x/-}", "abcabc"),
        ("${A///-}", "-a-b-c-a-b-c-"),
        ("${A/b/[$0]}", "a[]cabc"),  # $0 is a (missing) variable before the pattern runs
        ("${A/b/\\$0}", "a\\bcabc"),  # ...but an escaped $0 is Go's whole-match reference
        ("${A//\\*/-}", "abcabc"),
        ("${S//\\*/-}", "a-b"),
        ("${ML##*}", "\ncd"),  # Go's . does not match a newline
        ("${ML%%*}", "ab\n"),
    ],
)
def test_patterns_follow_go_regexp_semantics(word: str, expected: str) -> None:
    env = {"P": "/usr/local/bin/app.tar.gz", "A": "abcabc", "ML": "ab\ncd", "S": "a*b"}
    assert ShellLex().process_word(word, env) == expected


def test_invalid_pattern_escape() -> None:
    with pytest.raises(ExpansionError, match=r"invalid pattern \(a\\b\) in substitution: invalid escape"):
        ShellLex().process_word("${A/a\\b/x}", {"A": "ab"})


def test_process_words_splits_like_buildkit() -> None:
    lex = ShellLex()
    env = {"X": "a b  c", "E": ""}
    assert lex.process_words("a $X 'b c' \"$X\" ${U:-p q}x", env) == ["a", "a", "b", "c", "b c", "a b  c", "p", "qx"]
    assert lex.process_words('"" a', env) == ["a"]  # an empty quoted word alone vanishes
    assert lex.process_words("  80/tcp   443 ", env) == ["80/tcp", "443"]
    assert lex.process_words("$E", env) == []
    assert lex.process_words("pre${U:-mid}post", env) == ["premidpost"]


def test_matches_and_unmatched_names() -> None:
    result = ShellLex().process_word_with_matches("$A ${B:-$C} ${A}", {"A": "x"})
    assert result.result == "x  x"
    assert result.matched == frozenset({"A"})
    assert result.unmatched == frozenset({"B", "C"})
    assert result.words == ("x", "x")


def test_backtick_escape_keeps_windows_paths() -> None:
    lex = ShellLex("`")
    assert lex.process_word("c:\\windows\\$A", {"A": "x"}) == "c:\\windows\\x"
    assert lex.process_word("c:\\x`$A", {"A": "x"}) == "c:\\x$A"
    assert lex.process_word('"a`"b"', {}) == 'a"b'


def test_raw_and_skip_options() -> None:
    assert ShellLex(raw_quotes=True).process_word("'a'\"b\"", {}) == "'a'\"b\""
    assert ShellLex(raw_escapes=True).process_word("a\\b", {}) == "a\\b"
    assert ShellLex(skip_unset_env=True).process_word("$X ${Y} ${Z:-d} ${W/a/b}", {}) == "$X ${Y} ${Z:-d} ${W/a/b}"
    assert ShellLex(skip_process_quotes=True).process_word("'$A' \"q\"", {"A": "v"}) == "'v' \"q\""


def test_expansion_errors_are_dockerfile_errors_and_can_be_located() -> None:
    with pytest.raises(DockerfileError) as info:
        ShellLex().process_word("${", {})
    located = info.value.at("Dockerfile", 7)  # type: ignore[attr-defined]
    assert str(located).startswith("Dockerfile:7: failed to process")


def test_exponential_expansion_is_capped() -> None:
    env = {"A": "x" * 100_000}
    start = time.monotonic()
    with pytest.raises(ExpansionError, match="exceeds"):
        ShellLex().process_word("$A" * 50, env)
    with pytest.raises(ExpansionError):
        ShellLex().process_word("${A//x/" + "$A" * 3 + "}", {"A": "x" * 2000})
    assert time.monotonic() - start < 2


def test_deep_nesting_fails_fast() -> None:
    start = time.monotonic()
    with pytest.raises(ExpansionError, match="nested"):
        ShellLex().process_word("${A:-" * 5000 + "x" + "}" * 5000, {})
    assert time.monotonic() - start < 1


def test_pathological_patterns_stay_linear() -> None:
    env = {"A": "a" * 50_000}
    start = time.monotonic()
    assert ShellLex().process_word("${A//*a*a*a*a*a*b/x}", env) == env["A"]
    assert ShellLex().process_word("${A##*a*a*a*a*a*b}", env) == env["A"]
    assert ShellLex().process_word("${A%%a*a*a*a*a*a}", env) == ""
    assert time.monotonic() - start < 3


def test_byte_order_mark_is_dropped_like_go_text_scanner() -> None:
    assert ShellLex().process_word("\ufeff$A", {"A": "v"}) == "v"
