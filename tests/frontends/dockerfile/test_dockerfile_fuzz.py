"""Hostile input: random and mutated Dockerfiles and words may only parse or raise
DockerfileError — never another exception, never a hang."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import DockerfileError
from frontends.dockerfile.instructions import AddCommand, CopyCommand, OnbuildCommand, heredoc_or_none
from frontends.dockerfile.parser import parse_dockerfile, parse_instruction
from frontends.dockerfile.shell_lexer import ShellLex

CORPUS = [
    "FROM alpine\nRUN echo hi\n",
    "# syntax=docker/dockerfile:1\n# escape=`\nFROM mcr.microsoft.com/windows\nCOPY a c:\\\nRUN dir `\n  c:\\\n",
    "ARG BASE=alpine\nARG V\nFROM --platform=$BUILDPLATFORM ${BASE}:${V:-3} AS build\n"
    "RUN --mount=type=cache,target=/root/.cache,id=${ID} --network=none \\\n    # comment\n\n    make all\n"
    'FROM scratch\nCOPY --from=build --chown=1:1 --chmod=0755 --link /out /\nENTRYPOINT ["/app"]\n',
    "FROM a\nCOPY <<EOF <<-'RAW' /dst/\nhello $NAME\nEOF\n\tliteral $X\n\tRAW\n"
    "RUN <<EOF\n#!/bin/sh\necho ${A##*/}\nEOF\n",
    'FROM a\nENV A=1 B="x y" C=${A:+set} D=\'q\'\nENV LEGACY value with spaces\nLABEL "k k"="v" x=${Y/a/b}\n',
    "FROM a\nHEALTHCHECK --interval=30s --timeout=5s --start-period=1s --start-interval=1s --retries=3 CMD curl -f x\n"
    'HEALTHCHECK NONE\nEXPOSE 80/tcp $P\nVOLUME ["/data", "$V"]\nUSER ${U:-app}\nWORKDIR /w/$D\nSTOPSIGNAL SIGTERM\n',
    'FROM a\nSHELL ["/bin/bash", "-o", "pipefail", "-c"]\nCMD ["a", \'b\']\nMAINTAINER me\n'
    "ONBUILD RUN <<EOF\necho x\nEOF\n",
    "FROM a\nONBUILD COPY . /app\nRUN --mount=type=secret,id=t,env=TOKEN,required --mount=type=ssh "
    "--mount=type=tmpfs,target=/t,size=1g --security=insecure x\n",
    "FROM a\nADD --checksum=sha256:00 --keep-git-dir --unpack=false --exclude=*.md https://x/y.tgz /\n"
    'COPY --parents --exclude=a ./x/./y /z/\nARG A=1 B C="${A}"\n',
]

TOKENS = [
    "\\", "`", "<<", "<<-", "<<EOF", "EOF\n", "${", "}", "$", "'", '"', "[", "]", "\n", "\r", "\t", " ", "#",
    "--", "=", ",", "\ufeff", "# escape=`\n", ":", ":-", "/", "//", "*", "?", "%", "##", "ONBUILD ", "RUN ",
    "COPY ", "FROM x\n", "\\\n", "[\"a\"]", "\x00", "\u00a0", "\u2028", "İ",
]  # fmt: skip

ENV = {"A": "value", "EMPTY": "", "HOME": "/root", "NAME": "n", "P": "8080 9090", "ID": "x"}

FUZZ = settings(
    max_examples=300,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def mutated(draw: st.DrawFn, corpus: list[str]) -> str:
    text = draw(st.sampled_from(corpus))
    for _ in range(draw(st.integers(1, 10))):
        if not text:
            text = "x"
        i = draw(st.integers(0, len(text) - 1))
        op = draw(st.sampled_from(("drop", "duplicate", "swap", "insert", "insert")))
        if op == "drop":
            text = text[:i] + text[i + 1 :]
        elif op == "duplicate":
            text = text[:i] + text[i] + text[i:]
        elif op == "swap" and i + 1 < len(text):
            text = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
        else:
            token = draw(st.sampled_from(TOKENS) | st.text(max_size=3))
            text = text[:i] + token + text[i:]
    return text


def exercise(text: str) -> None:
    """Everything a build would do with parsed text; only DockerfileError may escape."""
    for line in text.split("\n")[:5]:
        with contextlib.suppress(DockerfileError):
            parse_instruction(line, "change", 1)
    try:
        df = parse_dockerfile(text)
    except DockerfileError:
        return
    lex = ShellLex(df.escape)
    raw_lex = ShellLex(skip_process_quotes=True)
    for arg in df.meta_args:
        with contextlib.suppress(DockerfileError):
            arg.expand(lex, ENV)
    for stage in df.stages:
        with contextlib.suppress(DockerfileError):
            stage.expand(lex, ENV)
        for command in stage.commands:
            with contextlib.suppress(DockerfileError):
                command.expand(lex, ENV)
            if isinstance(command, (CopyCommand, AddCommand)):
                with contextlib.suppress(DockerfileError):
                    command.expand_heredocs(lambda w: raw_lex.process_word(w, ENV))
            if isinstance(command, OnbuildCommand):
                with contextlib.suppress(DockerfileError):
                    command.trigger_command()


@pytest.mark.timeout(300)
@FUZZ
@given(mutated(CORPUS))
def test_mutated_dockerfiles(text: str) -> None:
    exercise(text)


@pytest.mark.timeout(300)
@FUZZ
@given(st.text(max_size=400))
def test_random_text(text: str) -> None:
    exercise(text)


@pytest.mark.timeout(300)
@FUZZ
@given(st.lists(st.sampled_from(TOKENS) | st.text(max_size=4), max_size=40).map("".join))
def test_token_soup(text: str) -> None:
    exercise("FROM a\n" + text)


WORDS = [
    "${A:-${B:+x}}", "${A#*/}", "${A%%.*}", "${A//a/b}", "'q'\"$A\"", "a\\ b", "$A$EMPTY${HOME}",
    "${A?msg}", "\"${P}\"", "${A/\\}/x}", "x${A:-'y z'}",
]  # fmt: skip


@pytest.mark.timeout(300)
@FUZZ
@given(
    mutated(WORDS) | st.text(max_size=60),
    st.sampled_from(["\\", "`"]),
    st.booleans(),
    st.booleans(),
    st.dictionaries(st.sampled_from(["A", "B", "HOME", "P", "EMPTY"]), st.text(max_size=20), max_size=4),
)
def test_word_expansion(word: str, escape: str, raw: bool, skip_unset: bool, env: dict[str, str]) -> None:
    for lex in (
        ShellLex(escape),
        ShellLex(escape, raw_quotes=raw, raw_escapes=raw, skip_unset_env=skip_unset),
        ShellLex(escape, skip_process_quotes=True),
    ):
        for call in (lex.process_word, lex.process_words, lex.process_word_with_matches):
            with contextlib.suppress(DockerfileError):
                call(word, env)
    heredoc_or_none("<<" + word)  # never raises: a bad delimiter is simply no heredoc
