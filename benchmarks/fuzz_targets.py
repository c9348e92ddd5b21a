"""Fuzz targets shared by the bounded property tests and `python -m benchmarks.fuzz`.

Three inputs Shipyard reads from strangers: Dockerfiles (and the words in them), YAML
build files, and layer tars. For each there is a hypothesis strategy of hostile inputs
and a `check_*` function stating the property every input must satisfy — the input is
accepted, or refused with the target's `ShipyardError`; nothing else escapes, nothing
hangs, and an archive never touches anything outside its extraction root.

Both the CI tests (a few hundred examples) and the long benchmark run (minutes, fresh
seeds) import them from here, so the long run fuzzes exactly what CI checks.

Unlike the rest of `benchmarks/` (which drives builders through their command lines),
this module imports hypothesis and Shipyard's parsers in process: fuzzing needs
millions of cheap calls, not subprocesses.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import signal
import stat
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

HANG_SECONDS = 10.0
"""One input taking longer than this is reported as a hang."""


class Hang(Exception):
    """An input that took longer than HANG_SECONDS: a hang, whatever the code was doing."""


@contextlib.contextmanager
def time_limit(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Raise Hang in the main thread after `seconds` (a SIGALRM interrupts blocking calls too).

    An outer ITIMER_REAL (pytest-timeout's) is restored afterwards with what was left of it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"no result after {seconds:g} s")

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay:
            left = max(old_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, old_interval)


# =========================================================================== Dockerfiles

DOCKERFILE_CORPUS = [
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

DOCKERFILE_TOKENS = [
    "\\", "`", "<<", "<<-", "<<EOF", "EOF\n", "${", "}", "$", "'", '"', "[", "]", "\n", "\r", "\t", " ", "#",
    "--", "=", ",", "\ufeff", "# escape=`\n", ":", ":-", "/", "//", "*", "?", "%", "##", "ONBUILD ", "RUN ",
    "COPY ", "FROM x\n", "\\\n", "[\"a\"]", "\x00", "\u00a0", "\u2028", "İ",
]  # fmt: skip

DOCKERFILE_ENV = {"A": "value", "EMPTY": "", "HOME": "/root", "NAME": "n", "P": "8080 9090", "ID": "x"}

SHELL_WORDS = [
    "${A:-${B:+x}}", "${A#*/}", "${A%%.*}", "${A//a/b}", "'q'\"$A\"", "a\\ b", "$A$EMPTY${HOME}",
    "${A?msg}", "\"${P}\"", "${A/\\}/x}", "x${A:-'y z'}",
]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, corpus: list[str]) -> str:
    """A corpus entry with 1–10 character edits (drops, duplicates, swaps, inserted tokens)."""
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
            token = draw(st.sampled_from(DOCKERFILE_TOKENS) | st.text(max_size=3))
            text = text[:i] + token + text[i:]
    return text


def token_soup() -> st.SearchStrategy[str]:
    """Dockerfile syntax fragments glued at random after a valid FROM."""
    return st.lists(st.sampled_from(DOCKERFILE_TOKENS) | st.text(max_size=4), max_size=40).map(
        lambda parts: "FROM a\n" + "".join(parts)
    )


def word_cases() -> st.SearchStrategy[tuple[str, str, bool, bool, dict[str, str]]]:
    """(word, escape, raw, skip_unset, env) for the shell-word lexer."""
    return st.tuples(
        mutated(SHELL_WORDS) | st.text(max_size=60),
        st.sampled_from(["\\", "`"]),
        st.booleans(),
        st.booleans(),
        st.dictionaries(st.sampled_from(["A", "B", "HOME", "P", "EMPTY"]), st.text(max_size=20), max_size=4),
    )


def check_dockerfile(text: str) -> None:
    """Everything a build does with parsed text; only DockerfileError may escape."""
    from engine.errors import DockerfileError
    from frontends.dockerfile.instructions import AddCommand, CopyCommand, OnbuildCommand
    from frontends.dockerfile.parser import parse_dockerfile, parse_instruction
    from frontends.dockerfile.shell_lexer import ShellLex

    with time_limit():
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
                arg.expand(lex, DOCKERFILE_ENV)
        for stage in df.stages:
            with contextlib.suppress(DockerfileError):
                stage.expand(lex, DOCKERFILE_ENV)
            for command in stage.commands:
                with contextlib.suppress(DockerfileError):
                    command.expand(lex, DOCKERFILE_ENV)
                if isinstance(command, (CopyCommand, AddCommand)):
                    with contextlib.suppress(DockerfileError):
                        command.expand_heredocs(lambda w: raw_lex.process_word(w, DOCKERFILE_ENV))
                if isinstance(command, OnbuildCommand):
                    with contextlib.suppress(DockerfileError):
                        command.trigger_command()


def check_word(word: str, escape: str, raw: bool, skip_unset: bool, env: dict[str, str]) -> None:
    """Every way the lexer expands a word; only DockerfileError may escape."""
    from engine.errors import DockerfileError
    from frontends.dockerfile.instructions import heredoc_or_none
    from frontends.dockerfile.shell_lexer import ShellLex

    with time_limit():
        for lex in (
            ShellLex(escape),
            ShellLex(escape, raw_quotes=raw, raw_escapes=raw, skip_unset_env=skip_unset),
            ShellLex(escape, skip_process_quotes=True),
        ):
            for call in (lex.process_word, lex.process_words, lex.process_word_with_matches):
                with contextlib.suppress(DockerfileError):
                    call(word, env)
        heredoc_or_none("<<" + word)  # never raises: a bad delimiter is simply no heredoc


def dockerfile_cases() -> st.SearchStrategy[tuple[str, Any]]:
    """Every Dockerfile-side input, tagged: ("text", dockerfile) or ("word", word_case)."""
    texts = mutated(DOCKERFILE_CORPUS) | st.text(max_size=400) | token_soup()
    return st.tuples(st.just("text"), texts) | st.tuples(st.just("word"), word_cases())


def check_dockerfile_case(case: tuple[str, Any]) -> None:
    kind, value = case
    if kind == "text":
        check_dockerfile(value)
    else:
        check_word(*value)


# =========================================================================== YAML build files

_YAMLISH = st.sampled_from(list(":-{}[],&*!|>'\"#%@`?$ \n\t") + ["${", "<<", "---", "~", "null", "1.5", "x", "  "])

YamlEdit = tuple[str, float, float, list[str]]


def yaml_edits() -> st.SearchStrategy[list[YamlEdit]]:
    """Edits of a valid build file: deleted spans, inserted YAML punctuation, duplicated or swapped lines."""
    return st.lists(
        st.tuples(
            st.sampled_from(["delete", "insert", "dup_line", "swap"]),
            st.floats(0, 1),
            st.floats(0, 1),
            st.lists(_YAMLISH, max_size=4),
        ),
        min_size=1,
        max_size=4,
    )


def apply_edits(text: str, edits: list[YamlEdit]) -> str:
    for kind, a, b, chars in edits:
        i = int(a * len(text))
        if kind == "delete":
            text = text[:i] + text[i + int(b * 20) :]
        elif kind == "insert":
            text = text[:i] + "".join(chars) + text[i:]
        else:
            lines = text.splitlines(keepends=True)
            x, y = int(a * (len(lines) - 1)), int(b * (len(lines) - 1))
            if kind == "dup_line":
                lines.insert(y, lines[x])
            else:
                lines[x], lines[y] = lines[y], lines[x]
            text = "".join(lines)
    return text


_KEYS = st.sampled_from(
    [
        "version", "include", "variables", "defaults", "groups", "targets", "x-a", "api", "_base", "t",
        "inherits", "matrix", "name", "context", "dockerfile", "dockerfile_inline", "steps", "args", "labels",
        "tags", "contexts", "result", "needs", "outputs", "cache_from", "cache-to", "secrets", "entitlements",
        "platforms", "no_cache", "network", "from", "run", "copy", "add", "env", "arg", "mounts", "src", "dest",
        "type", "id", "default", "pattern", "healthcheck", "expose", "test", "py",
    ]
)  # fmt: skip
_WORDS = [
    "", "x", "api", "_base", "t-${py}", "${py}", "${V}", "target:api", "target:t-1", "type=local,dest=o",
    "/abs", ".", "3.12", "network.host", "cache", "[a", "^(a", "$$", "docker-image://x", "oci-layout://l",
]  # fmt: skip
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from(_WORDS), st.text(max_size=6))
_VALUES = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4), max_leaves=12
)


def yaml_documents() -> st.SearchStrategy[dict[str, Any]]:
    """Documents of build-file keys with values of any shape (dumped with yaml.safe_dump)."""
    return st.dictionaries(_KEYS, _VALUES, max_size=6)


def yaml_overrides() -> st.SearchStrategy[tuple[list[str], dict[str, str]]]:
    """(--set values, --var values) as a command line would give them."""
    return st.tuples(
        st.lists(st.text(alphabet="*.=+api-tagsrg,platformx/_", max_size=25), max_size=3),
        st.dictionaries(
            st.sampled_from(["PY_DEFAULT", "PY_VERSIONS", "TAG", "NOPE"]), st.text(max_size=12), max_size=3
        ),
    )


def check_yaml(workdir: Path, text: str | bytes, **kwargs: Any) -> None:
    """Load `text` as workdir/build.yaml: a BakeFile or a one-line BuildFileError, nothing else."""
    from frontends.yaml.errors import BuildFileError
    from frontends.yaml.loader import load_bake
    from frontends.yaml.model import BakeFile

    path = workdir / "build.yaml"
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    path.write_bytes(text)
    with time_limit():
        try:
            result = load_bake(None, cwd=str(workdir), environ={}, **kwargs)
        except BuildFileError as exc:
            message = str(exc)
            assert message and "\n" not in message.split(": ", 1)[0]
            return
    assert isinstance(result, BakeFile)


def yaml_cases() -> st.SearchStrategy[tuple[str, Any]]:
    """Every YAML-side input, tagged; "edits" and "overrides" apply to a seed build file."""
    return st.one_of(
        st.tuples(st.just("edits"), yaml_edits()),
        st.tuples(st.just("document"), yaml_documents(), st.booleans()),
        st.tuples(st.just("raw"), st.binary(max_size=200) | st.text(max_size=200)),
        st.tuples(st.just("overrides"), yaml_overrides()),
    )


def check_yaml_case(workdir: Path, seed_text: str, case: tuple[Any, ...]) -> None:
    import yaml

    kind = case[0]
    if kind == "edits":
        check_yaml(workdir, apply_edits(seed_text, case[1]))
    elif kind == "document":
        doc = dict(case[1])
        if case[2]:
            doc["version"] = 1
        check_yaml(workdir, yaml.safe_dump(doc, allow_unicode=True))
    elif kind == "raw":
        check_yaml(workdir, case[1])
    else:
        sets, variables = case[1]
        check_yaml(workdir, seed_text, sets=sets, variables=variables)


# =========================================================================== layer archives
#
# Names are built from a small pool so that members collide (a symlink, then a file
# written through it; a directory, then a file of the same name). Two placeholders
# stand for the host tree outside the root, known only when the archive is built:
# `@OUT` is the outside directory's path without its leading slash (so `/@OUT/x` is
# its absolute path), `@UP` is enough `../` to climb from anywhere to `/`.

MODES = ("overlay", "oci", "apply")
OUT, UP = "@OUT", "@UP"
PLAIN_PARTS = ["a", "b", "d", "etc", "tmp", "x", ".", "", OUT, "secret.txt", "victim", ".wh.a", ".wh..wh..opq"]
HOSTILE_PARTS = ["..", ".wh..wh.plnk", ".wh.", ".wh..", "L" * 200, "é", "\udcff"]
"""Parts that get a member refused (`..` above the root, bad whiteouts) or are odd: kept rarer,
since one refused member ends its layer and hides what the rest would have done."""
NAME_PREFIXES = ["", "", "", "/", "./"]
HOSTILE_PREFIXES = ["../", UP, "//", "/../"]
FILE_MODES = [0o644, 0o755, 0o000, 0o777, 0o4755, 0o2755, 0o1777, 0o400]
PAX_EXTRAS = [
    ("SCHILY.xattr.user.fuzz", "v"),
    ("SCHILY.xattr.security.capability", "junk"),
    ("SCHILY.xattr.trusted.overlay.opaque", "y"),
    ("SCHILY.xattr.user.overlay.opaque", "y"),
    ("SCHILY.xattr.system.posix_acl_access", "x"),
    ("uid", "4294967296"),
    ("gid", "4294967295"),
    ("mtime", "-1.5"),
    ("mtime", "99999999999999999999"),
    ("path", f"{UP}{OUT}/pax"),
    ("path", f"/{OUT}/victim/pax"),
    ("linkpath", f"/{OUT}"),
    ("linkpath", f"{UP}{OUT}/secret.txt"),
    ("GNU.sparse.major", "1"),
    ("size", "0"),
]
KINDS = ("file", "file", "file", "dir", "dir", "symlink", "symlink", "hardlink", "fifo", "char", "block")


@dataclass(frozen=True)
class Member:
    """One archive member as written (placeholders not yet expanded)."""

    kind: str
    name: str
    data: bytes = b""
    link: str = ""
    mode: int = 0o644
    devmajor: int = 0
    devminor: int = 0
    pax: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Mutation:
    """A byte-level edit of a built tar.

    kind: "byte" sets the byte at `where` to `value` (and, if `fix` and it lands in a
    header block, recomputes that block's checksum); "field" writes `raw` into field
    `field` of header block number `where` (modulo the blocks found) and, if `fix`,
    recomputes that block's checksum so the reader gets past it; "truncate" cuts at
    `where`; "insert" puts `raw` at `where`; "delete" removes `value` bytes at `where`.
    """

    kind: str
    where: int
    value: int = 0
    field: str = ""
    raw: bytes = b""
    fix: bool = True


@dataclass(frozen=True)
class Layer:
    members: tuple[Member, ...]
    format: str = "pax"  # pax | gnu | ustar (tarfile) or shipyard (engine.fs.tarformat)
    mutations: tuple[Mutation, ...] = ()


# Strategies are built once: hypothesis validates each new strategy object, and
# building them inside every draw made generation cost ten times the extraction.
_PLAIN_NAMES = st.builds(
    lambda prefix, parts, slash: prefix + "/".join(parts) + ("/" if slash else ""),
    st.sampled_from(NAME_PREFIXES),
    st.lists(st.sampled_from(PLAIN_PARTS), min_size=1, max_size=3),
    st.booleans(),
)
_HOSTILE_NAMES = st.builds(
    lambda prefix, parts, slash: prefix + "/".join(parts) + ("/" if slash else ""),
    st.sampled_from(NAME_PREFIXES + HOSTILE_PREFIXES),
    st.lists(st.sampled_from(PLAIN_PARTS + HOSTILE_PARTS), min_size=1, max_size=4),
    st.booleans(),
)
_NAMES = st.one_of(_PLAIN_NAMES, _PLAIN_NAMES, _PLAIN_NAMES, _HOSTILE_NAMES)
_LINK_TARGETS = _NAMES | st.sampled_from(["", "/", ".", "..", f"/{OUT}", f"{UP}{OUT}", f"/{OUT}/secret.txt", "a", "b"])
_KIND = st.sampled_from(KINDS)
_MODE = st.sampled_from(FILE_MODES) | st.integers(0, 0o7777)
_PAX = st.one_of(st.just(()), st.just(()), st.just(()), st.lists(st.sampled_from(PAX_EXTRAS), max_size=2).map(tuple))
_DATA = st.binary(max_size=24) | st.just(b"x" * 3000)
_DEVICE = st.sampled_from([(0, 0), (1, 3), (1, 1), (8, 0), (4095, 1048575)]) | st.tuples(
    st.integers(0, 300), st.integers(0, 300)
)


def archive_names() -> st.SearchStrategy[str]:
    """Member names from a small pool of parts (`..`, `.`, whiteouts, the outside dir, long ones)."""
    return _NAMES


@st.composite
def archive_members(draw: st.DrawFn) -> Member:
    kind = draw(_KIND)
    name = draw(_NAMES)
    mode = draw(_MODE)
    pax = draw(_PAX)
    if kind == "file":
        return Member(kind, name, data=draw(_DATA), mode=mode, pax=pax)
    if kind in ("symlink", "hardlink"):
        return Member(kind, name, link=draw(_LINK_TARGETS), mode=mode, pax=pax)
    if kind in ("char", "block"):
        major, minor = draw(_DEVICE)
        return Member(kind, name, mode=mode, devmajor=major, devminor=minor, pax=pax)
    return Member(kind, name, mode=mode, pax=pax)


_MEMBERS = archive_members()
_CHILD = st.sampled_from(["pwn", "x", "..", "../pwn", "sub/pwn", ".wh.pwn"])
_SHAPE = st.sampled_from(
    ["link-then-file", "link-then-dir-file", "hardlink-then-write", "dir-then-file", "file-then-dir",
     "dir-then-link", "whiteout", "opaque", "link-chain", "duplicate"]
)  # fmt: skip


@st.composite
def attack_shapes(draw: st.DrawFn) -> list[Member]:
    """Multi-member shapes known to break extractors: writes through links, replacements, whiteouts."""
    n = draw(_NAMES).rstrip("/") or "a"
    child = draw(_CHILD)
    target = draw(_LINK_TARGETS)
    shape = draw(_SHAPE)
    if shape == "link-then-file":
        return [Member("symlink", n, link=target), Member("file", f"{n}/{child}", data=b"pwned")]
    if shape == "link-then-dir-file":
        return [Member("symlink", n, link=target), Member("dir", f"{n}/sub"), Member("file", f"{n}/sub/pwn", data=b"p")]
    if shape == "hardlink-then-write":
        return [Member("hardlink", n, link=target), Member("file", n, data=b"overwritten", mode=0o777)]
    if shape == "dir-then-file":
        return [Member("dir", n), Member("file", f"{n}/{child}"), Member("file", n, data=b"now a file")]
    if shape == "file-then-dir":
        return [Member("file", n, data=b"f"), Member("dir", n), Member("file", f"{n}/{child}")]
    if shape == "dir-then-link":  # a directory's parent becomes a link (to itself: a loop) before the end
        return [
            Member("dir", n),
            Member("dir", f"{n}/sub", mode=0o700),
            Member("symlink", n, link=n if child == "x" else target),
        ]
    if shape == "whiteout":
        base, _, last = n.rpartition("/")
        return [Member("file", n), Member("file", f"{base}/.wh.{last}" if base else f".wh.{last}")]
    if shape == "opaque":
        return [Member("dir", n), Member("file", f"{n}/x"), Member("file", f"{n}/.wh..wh..opq")]
    if shape == "link-chain":
        return [Member("symlink", "a", link="b"), Member("symlink", "b", link=target), Member("file", f"a/{child}")]
    return [Member("file", n, data=b"1"), Member("symlink", n, link=target), Member("file", n, data=b"2")]


HEADER_FIELDS = {  # name: (offset, width)
    "name": (0, 100), "mode": (100, 8), "uid": (108, 8), "gid": (116, 8), "size": (124, 12),
    "mtime": (136, 12), "typeflag": (156, 1), "linkname": (157, 100), "magic": (257, 8),
    "devmajor": (329, 8), "devminor": (337, 8), "prefix": (345, 155),
}  # fmt: skip
_NUMERIC = ("mode", "uid", "gid", "size", "mtime", "devmajor", "devminor")


def _interesting(field_name: str, width: int) -> list[bytes]:
    if field_name in _NUMERIC:
        return [
            b"0" * (width - 1) + b"\0", b"7" * (width - 1) + b"\0", b"7" * width, b"\x80" + b"\xff" * (width - 1),
            b"\xff" * width, b"\xff" * (width - 1) + b"\xfe", b"\x80" + bytes(width - 2) + b"\x01", b"9" * width,
            b" " * width, bytes(width), b"-1\0", b"1" + b"0" * (width - 2) + b"\0",
        ]  # fmt: skip
    if field_name == "typeflag":
        return [bytes([c]) for c in b"0123456789gxLKSAVDMN\0"]
    if field_name == "magic":
        return [b"ustar\x0000", b"ustar  \0", b"xxxxxxxx", bytes(8)]
    return [b"../pwn\0", b"/abs\0", b"a/../../pwn\0", b".wh..wh..opq\0", b"\0", b"a" * width, b"..\0", b"/\0", b"./\0"]


_FIELD_VALUES = {name: st.sampled_from(_interesting(name, width)) for name, (_, width) in HEADER_FIELDS.items()}
_MUTATION_KIND = st.sampled_from(["field", "field", "field", "byte", "truncate", "insert", "delete"])
_FIELD_NAME = st.sampled_from(sorted(HEADER_FIELDS))
_WHERE = st.integers(0, 1 << 14)
_FIX = st.sampled_from([True, True, False])
_INSERTED = st.binary(min_size=1, max_size=600)
_BYTE, _SPAN = st.integers(0, 255), st.integers(0, 1024)


@st.composite
def mutations(draw: st.DrawFn) -> Mutation:
    kind = draw(_MUTATION_KIND)
    where = draw(_WHERE)
    if kind == "field":
        name = draw(_FIELD_NAME)
        return Mutation(kind, where, field=name, raw=draw(_FIELD_VALUES[name]), fix=draw(_FIX))
    if kind == "insert":
        return Mutation(kind, where, raw=draw(_INSERTED))
    if kind == "byte":
        return Mutation(kind, where, value=draw(_BYTE), fix=draw(_FIX))
    return Mutation(kind, where, value=draw(_SPAN))


_GROUPS = st.lists(st.lists(_MEMBERS, min_size=1, max_size=2) | attack_shapes(), max_size=6)
_FORMAT = st.sampled_from(["pax", "gnu", "ustar", "shipyard"])
_MUTATIONS = st.lists(mutations(), min_size=1, max_size=5).map(tuple)


@st.composite
def layers(draw: st.DrawFn, *, mutate: bool = False) -> Layer:
    members = tuple(m for group in draw(_GROUPS) for m in group)
    return Layer(members, draw(_FORMAT), draw(_MUTATIONS) if mutate else ())


def layer_stacks(*, mutate: bool = False) -> st.SearchStrategy[list[Layer]]:
    """One to three layers extracted into the same root in turn (earlier ones plant links)."""
    return st.lists(layers(mutate=mutate), min_size=1, max_size=3)


def archive_cases(*, mutate: bool | None = None) -> st.SearchStrategy[tuple[str, list[Layer]]]:
    """(mode, layers): structured hostile layers, or (mutate=True/None) byte-mutated ones too."""
    stacks = layer_stacks(mutate=False) | layer_stacks(mutate=True) if mutate is None else layer_stacks(mutate=mutate)
    return st.tuples(st.sampled_from(MODES), stacks)


# ----------------------------------------------------------------- building the bytes

_TYPES = {
    "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE,
}  # fmt: skip
_T0 = 1_650_000_000


def expand(text: str, outside: str) -> str:
    return text.replace(UP, "../" * 40).replace(OUT, outside.lstrip("/"))


def _tarfile_bytes(members: list[Member], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = _TYPES[m.kind]
            info.mtime, info.mode = _T0, m.mode
            info.linkname = m.link
            info.devmajor, info.devminor = m.devmajor, m.devminor
            info.pax_headers = dict(m.pax)
            payload = None
            if m.kind == "file":
                info.size = len(m.data)
                payload = io.BytesIO(m.data)
            tar.addfile(info, payload)
    return buf.getvalue()


def _shipyard_bytes(members: list[Member]) -> bytes:
    from engine.fs.tarformat import END_OF_ARCHIVE, encode_header, padding

    out = []
    for m in members:
        xattrs = tuple(
            (k[len("SCHILY.xattr.") :].encode(), v.encode()) for k, v in m.pax if k.startswith("SCHILY.xattr.")
        )
        out.append(
            encode_header(
                m.name.encode("utf-8", "surrogateescape"), _TYPES[m.kind], mode=m.mode, size=len(m.data), mtime=_T0,
                linkname=m.link.encode("utf-8", "surrogateescape"), devmajor=m.devmajor, devminor=m.devminor,
                xattrs=tuple(sorted(xattrs)),
            )
        )  # fmt: skip
        out.append(m.data + padding(len(m.data)))
    out.append(END_OF_ARCHIVE)
    return b"".join(out)


def _fix_checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)


def _mutate(data: bytes, muts: tuple[Mutation, ...]) -> bytes:
    buf = bytearray(data)
    for m in muts:
        if m.kind == "field":
            headers = [i for i in range(0, len(buf) - 511, 512) if buf[i + 257 : i + 262] == b"ustar"]
            if not headers:
                continue
            start = headers[m.where % len(headers)]
            offset, width = HEADER_FIELDS[m.field]
            raw = m.raw[:width].ljust(width, b"\0")
            block = buf[start : start + 512]
            block[offset : offset + width] = raw
            if m.fix:
                _fix_checksum(block)
            buf[start : start + 512] = block
        elif not buf:
            continue
        elif m.kind == "byte":
            i = m.where % len(buf)
            buf[i] = m.value
            start = i - i % 512
            if m.fix and buf[start + 257 : start + 262] == b"ustar" and len(buf) >= start + 512:
                block = buf[start : start + 512]
                _fix_checksum(block)
                buf[start : start + 512] = block
        elif m.kind == "truncate":
            del buf[m.where % len(buf) :]
        elif m.kind == "insert":
            i = m.where % len(buf)
            buf[i:i] = m.raw
        else:
            i = m.where % len(buf)
            del buf[i : i + m.value]
    return bytes(buf)


def layer_bytes(layer: Layer, outside: str) -> bytes:
    """The tar for `layer`, its placeholders pointing at `outside`, mutations applied."""
    members = [
        Member(m.kind, expand(m.name, outside), m.data, expand(m.link, outside), m.mode, m.devmajor, m.devminor,
               tuple((k, expand(v, outside)) for k, v in m.pax))
        for m in layer.members
    ]  # fmt: skip
    if layer.format == "shipyard":
        data = _shipyard_bytes(members)
    else:
        fmt = {"pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT, "ustar": tarfile.USTAR_FORMAT}[layer.format]
        try:
            data = _tarfile_bytes(members, fmt)
        except ValueError:  # a name too long for ustar, a number too big for the format
            data = _tarfile_bytes(members, tarfile.PAX_FORMAT)
    return _mutate(data, layer.mutations)


# ----------------------------------------------------------------- the property


@dataclass
class Jail:
    """base/jail/root is the destination; base/host is the host tree an escape would reach."""

    base: Path
    root: Path = field(init=False)
    host: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = self.base / "jail" / "root"
        self.host = self.base / "host"
        self.root.mkdir(parents=True)
        (self.base / "jail" / "beside-root.txt").write_text("beside")
        (self.host / "victim").mkdir(parents=True)
        (self.host / "victim" / "inner.txt").write_text("inner")
        (self.host / "secret.txt").write_text("sentinel-secret")
        (self.host / "keep.txt").write_text("keep me")


def tree_state(top: Path, skip: Path | None = None) -> dict[str, tuple[Any, ...]]:
    """Everything about a tree a write through it could change (ctime catches chmod, chown, link, xattr)."""
    out: dict[str, tuple[Any, ...]] = {}
    pending = [top]
    while pending:
        path = pending.pop()
        if path == skip:
            continue
        st_ = os.lstat(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st_.st_mode) else ""
        xattrs = tuple(sorted(os.listxattr(path, follow_symlinks=False))) if not stat.S_ISLNK(st_.st_mode) else ()
        out[str(path.relative_to(top))] = (
            st_.st_mode, st_.st_uid, st_.st_gid, st_.st_size, st_.st_mtime_ns, st_.st_ctime_ns, st_.st_nlink,
            st_.st_ino, digest, xattrs,
        )  # fmt: skip
        if stat.S_ISDIR(st_.st_mode):
            pending.extend(path / name for name in os.listdir(path))
    return out


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def force_rmtree(path: Path) -> None:
    """rmtree that also works without root through directories an archive made mode 000."""
    if os.geteuid() != 0:
        for current, dirs, _ in os.walk(path):
            for name in dirs:
                p = os.path.join(current, name)
                if not os.path.islink(p):
                    os.chmod(p, 0o700)
    shutil.rmtree(path)


def check_layers(workdir: Path, mode: str, stack: list[Layer], extract: Callable[..., object] | None = None) -> None:
    """Extract each layer into one root: accepted or a ShipyardError; nothing outside changes.

    `extract` defaults to `engine.fs.extract.extract_layer` (the tests pass a broken one
    to prove this property can fail).
    """
    from engine.errors import ShipyardError

    if extract is None:
        from engine.fs.extract import extract_layer as extract
    base = Path(tempfile.mkdtemp(dir=workdir))
    try:
        jail = Jail(base)
        root = str(jail.root)
        before = tree_state(base, skip=jail.root)
        outside_inodes = {(st_.st_dev, st_.st_ino) for st_ in map(os.lstat, [jail.host, *jail.host.rglob("*")])}
        for layer in stack:
            data = layer_bytes(layer, str(jail.host))
            fds = _open_fds()
            with time_limit():
                try:
                    extract(io.BytesIO(data), root, mode=mode)
                except ShipyardError as exc:
                    # The member name in it is the archive's, verbatim (may hold newlines).
                    assert str(exc) and "\n" not in getattr(exc, "message", "x"), repr(exc)
            assert _open_fds() == fds, "extraction leaked file descriptors"
        after = tree_state(base, skip=jail.root)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        assert not changed, f"outside the extraction root, {changed} changed"
        _assert_contained(jail.root, outside_inodes)
    finally:
        force_rmtree(base)


def _assert_contained(root: Path, outside_inodes: set[tuple[int, int]]) -> None:
    """Every entry under root (walked without following links) is physically inside it."""
    root_real = os.path.realpath(root)
    root_dev = os.lstat(root).st_dev
    for current, dirs, files in os.walk(root):  # os.walk never descends into symlinked dirs
        for name in dirs + files:
            path = os.path.join(current, name)
            st_ = os.lstat(path)
            assert st_.st_dev == root_dev, f"{path} is on another filesystem"
            assert (st_.st_dev, st_.st_ino) not in outside_inodes, f"{path} is a hard link to a file outside the root"
            if not stat.S_ISLNK(st_.st_mode):
                real = os.path.realpath(path)
                assert real.startswith(root_real + os.sep), f"{path} resolves to {real}, outside the root"
