"""Typed Dockerfile instructions, built from parsed lines the way BuildKit's
`frontend/dockerfile/instructions/parse.go` builds its commands.

The parser (`parser.py`) turns text into `Node`s: an instruction keyword, its `--flags`,
its argument words and any heredoc bodies. `parse_node` checks a node like BuildKit does
(argument counts, flags, JSON form) and returns one frozen value per instruction, so the
lowering can `match` on types and never re-parses strings.

Field values are as written: quotes and `$VAR`s are still in them, because which fields
are expanded, and with which variables, is decided at dispatch time. Each command's
`expand_with(expander)` / `expand(lex, env)` performs exactly BuildKit's `Expand` for that
command (RUN/CMD/ENTRYPOINT commands are never expanded by the frontend; the shell does).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Self, TypedDict

from engine.errors import DockerfileError
from frontends.dockerfile.flags import (
    BFlags,
    InstructionSyntaxError,
    format_duration,
    parse_duration,
    parse_int,
    suggest,
)
from frontends.dockerfile.mounts import RunMount, parse_mount
from frontends.dockerfile.shell_lexer import ExpansionError, ShellLex, go_quote, go_trim_space

__all__ = [
    "INSTRUCTIONS",
    "AddCommand",
    "ArgCommand",
    "ArgPair",
    "CmdCommand",
    "Command",
    "CopyCommand",
    "EntrypointCommand",
    "EnvCommand",
    "Expander",
    "ExposeCommand",
    "HealthCheckCommand",
    "HealthConfig",
    "Heredoc",
    "KeyValuePair",
    "LabelCommand",
    "MaintainerCommand",
    "Node",
    "OnbuildCommand",
    "RunCommand",
    "ShellCommand",
    "SourceContent",
    "Stage",
    "StopSignalCommand",
    "UserCommand",
    "VolumeCommand",
    "WorkdirCommand",
    "chomp_heredoc",
    "go_lower",
    "go_upper",
    "heredoc_or_none",
    "parse_heredoc",
    "parse_node",
]

Expander = Callable[[str], str]

INSTRUCTIONS = (
    "add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck",
    "label", "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir",
)  # fmt: skip


def go_lower(s: str) -> str:
    """Go's `strings.ToLower`: per-character simple mapping (so `İ` becomes `i`)."""
    if s.isascii():
        return s.lower()
    out = []
    for ch in s:
        low = ch.lower()
        out.append(low if len(low) == 1 else ("i" if ch == "\u0130" else ch))
    return "".join(out)


def go_upper(s: str) -> str:
    """Go's `strings.ToUpper`: per-character simple mapping (`ß` stays `ß`)."""
    if s.isascii():
        return s.upper()
    out = []
    for ch in s:
        up = ch.upper()
        out.append(up if len(up) == 1 else ch)
    return "".join(out)


# -- heredocs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heredoc:
    """A `<<EOF` body attached to RUN, COPY or ADD.

    `content` is the body exactly as written (each line with its newline); `data` is
    what the instruction uses (`<<-` strips leading tabs). `expand` is False when the
    delimiter was quoted (`<<'EOF'`, `<<"EOF"`): the body is then taken literally.
    """

    name: str
    content: str = ""
    expand: bool = True
    chomp: bool = False
    fd: int = 0

    @property
    def data(self) -> str:
        return chomp_heredoc(self.content) if self.chomp else self.content


_HEREDOC_WORD = re.compile(r"([0-9]*)<<(-?)([^<]*)", re.DOTALL)
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)


def chomp_heredoc(content: str) -> str:
    """Strip leading tabs from every line (`<<-EOF`)."""
    return _LEADING_TABS.sub("", content)


_HEREDOC_LEX = ShellLex("\\", skip_unset_env=True)
_HEREDOC_RAW_LEX = ShellLex("\\", skip_unset_env=True, raw_quotes=True)


def parse_heredoc(word: str) -> Heredoc | None:
    """The heredoc a word like `<<EOF`, `<<-"EOF"` or `3<<EOF` opens, or None.

    Raises InstructionSyntaxError for a malformed delimiter (`<<'EOF`), like BuildKit's
    ParseHeredoc.
    """
    m = _HEREDOC_WORD.fullmatch(word)
    if m is None:
        return None
    rest = m.group(3)
    if not rest:
        return None
    try:
        words = _HEREDOC_LEX.process_words(rest, {})
    except ExpansionError as err:
        raise InstructionSyntaxError(err.message) from None
    if len(words) != 1:
        return None
    try:
        raw_words = _HEREDOC_RAW_LEX.process_words(rest, {})
    except ExpansionError as err:
        raise InstructionSyntaxError(err.message) from None
    if len(raw_words) != len(words):
        raise InstructionSyntaxError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    name = words[0]
    raw = raw_words[0]
    quotes = name.count("'") + name.count('"')
    raw_quotes = raw.count("'") + raw.count('"')
    fd = min(int(m.group(1)), (1 << 64) - 1) if m.group(1) else 0
    return Heredoc(name=name, expand=quotes == raw_quotes, chomp=m.group(2) == "-", fd=fd)


def heredoc_or_none(word: str) -> Heredoc | None:
    """`parse_heredoc` that treats a malformed delimiter as no heredoc (MustParseHeredoc)."""
    try:
        return parse_heredoc(word)
    except InstructionSyntaxError:
        return None


# -- the parser's output --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    """One instruction as the line parser saw it (BuildKit's `parser.Node`).

    `args` are the argument words (for ENV/LABEL: key, value, separator triples, the
    separator being "" for the legacy `ENV k v` form); `json` says the arguments came
    from a JSON array; `child` is the trigger of an ONBUILD.
    """

    keyword: str
    flags: tuple[str, ...]
    args: tuple[str, ...]
    json: bool
    original: str
    line: int
    end_line: int
    heredocs: tuple[Heredoc, ...] = ()
    child: Node | None = None


# -- typed commands -------------------------------------------------------------------


def _guard(expander: Expander, filename: str, line: int) -> Expander:
    """Give expansion errors the command's location."""

    def run(word: str) -> str:
        try:
            return expander(word)
        except ExpansionError as err:
            if err.line:
                raise
            raise err.at(filename, line) from None

    return run


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """Fields every instruction has: where it is and how it was written.

    `original` is the instruction text with continuations joined (BuildKit's
    `String()`), e.g. `RUN echo hi`, for step names and error messages.
    """

    NAME: ClassVar[str] = ""
    EXPANDS: ClassVar[bool] = False

    line: int
    end_line: int
    original: str

    @property
    def name(self) -> str:
        """The lowercase instruction keyword (`run`, `copy`, …)."""
        return self.NAME

    def expand_with(self, expander: Expander, filename: str = "Dockerfile") -> Self:
        """This command with BuildKit's expansion applied (a no-op unless EXPANDS)."""
        return self

    def expand(self, lex: ShellLex, env: Mapping[str, str], filename: str = "Dockerfile") -> Self:
        """`expand_with` using `lex.process_word` against `env`."""
        return self.expand_with(lambda word: lex.process_word(word, env), filename)


@dataclass(frozen=True, slots=True)
class KeyValuePair:
    """One `key=value` of ENV or LABEL, raw; `no_delim` marks the legacy `ENV k v` form."""

    key: str
    value: str
    no_delim: bool = False


@dataclass(frozen=True, slots=True)
class ArgPair:
    """One name of an ARG, with its default if it has one (`ARG a` has None)."""

    key: str
    value: str | None = None


def _expand_pairs(pairs: tuple[KeyValuePair, ...], run: Expander) -> tuple[KeyValuePair, ...]:
    return tuple(KeyValuePair(run(p.key), run(p.value), p.no_delim) for p in pairs)


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvCommand(Command):
    NAME: ClassVar[str] = "env"
    EXPANDS: ClassVar[bool] = True
    env: tuple[KeyValuePair, ...]

    def expand_with(self, expander: Expander, filename: str = "Dockerfile") -> Self:
        return dataclasses.replace(self, env=_expand_pairs(self.env, _guard(expander, filename, self.line)))


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelCommand(Command):
    NAME: ClassVar[str] = "label"
    EXPANDS: ClassVar[bool] = True
    labels: tuple[KeyValuePair, ...]

    def expand_with(self, expander: Expander, filename: str = "Dockerfile") -> Self:
        return dataclasses.replace(self, labels=_expand_pairs(self.labels, _guard(expander, filename, self.line)))


@dataclass(frozen=True, slots=True, kw_only=True)
class MaintainerCommand(Command):
    NAME: ClassVar[str] = "maintainer"
    maintainer: str


@dataclass(frozen=True, slots=True)
class SourceContent:
    """A file that COPY/ADD takes from a heredoc: its name, body (tabs already stripped
    for `<<-`), and whether `$VAR`s in the body are expanded."""

    path: str
    data: str
    expand: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class _CopyLike(Command):
    EXPANDS: ClassVar[bool] = True
    sources: tuple[str, ...]
    dest: str
    source_contents: tuple[SourceContent, ...] = ()
    heredocs: tuple[Heredoc, ...] = ()
    chown: str = ""
    chmod: str = ""
    link: bool = False
    exclude: tuple[str, ...] = ()
    json: bool = False

    def expand_heredocs(self, expander: Expander, filename: str = "Dockerfile") -> Self:
        """Expand the bodies of unquoted heredocs (BuildKit's `ExpandRaw`; use a lexer
        with `skip_process_quotes=True` so quotes in file bodies survive)."""
        run = _guard(expander, filename, self.line)
        contents = tuple(SourceContent(c.path, run(c.data), c.expand) if c.expand else c for c in self.source_contents)
        return dataclasses.replace(self, source_contents=contents)


@dataclass(frozen=True, slots=True, kw_only=True)
class AddCommand(_CopyLike):
    NAME: ClassVar[str] = "add"
    keep_git_dir: bool = False
    checksum: str = ""
    unpack: bool | None = None

    def expand_with(self, expander: Expander, filename: str = "Dockerfile") -> Self:
        run = _guard(expander, filename, self.line)
        return dataclasses.replace(
            self,
            chown=run(self.chown),
            chmod=run(self.chmod),
            checksum=run(self.checksum),
            sources=tuple(run(s) for s in self.sources),
            dest=run(self.dest),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyCommand(_CopyLike):
    """COPY; `from_` (`--from`) is left as written: BuildKit resolves it against stage
    names before any variable is known."""

    NAME: ClassVar[str] = "copy"
    from_: str = ""
    parents: bool = False

    def expand_with(self, expander: Expander, filename: str = "Dockerfile") -> Self:
        run = _guard(expander, filename, self.line)
        return dataclasses.replace(
            self,
            chown=run(self.chown),
            chmod=run(self.chmod),
            sources=tuple(run(s) for s in self.sources),
            dest=run(self.dest),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkdirCommand(Command):
    NAME: ClassVar[str] = "workdir"
    EXPANDS: ClassVar[bool] = True
    path: str

    def expand_with(self, expander: Expander, filename: str = "Dockerfile") -> Self:
        return dataclasses.replace(self, path=_guard(expander, filename, self.line)(self.path))


@dataclass(frozen=True, slots=True, kw_only=True)
class _ShellDependent(Command):
    """A command line: `cmd` is the JSON array, or one string for the shell form."""

    cmd: tuple[str, ...]
    prepend_shell: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RunCommand(_ShellDependent):
    """RUN. `mounts` come from `--mount`; after `expand` they hold BuildKit's
    dispatch-time reading (values expanded, every rule checked)."""

    NAME: ClassVar[str] = "run"
    EXPANDS: ClassVar[bool] = True
    heredocs: tuple[Heredoc, ...] = ()
    mounts: tuple[RunMount, ...] = ()
    network: str = "default"
    security: str = "sandbox"
    flags_used: tuple[str, ...] = ()

    def expand_with(self, expander: Expander, filename: str = "Dockerfile") -> Self:
        if not self.mounts:
            return self
        run = _guard(expander, filename, self.line)
        try:
            mounts = tuple(parse_mount(m.spec, run) for m in self.mounts)
        except InstructionSyntaxError as err:
            raise DockerfileError(err.message, filename, self.line) from None
        return dataclasses.replace(self, mounts=mounts)


@dataclass(frozen=True, slots=True, kw_only=True)
class CmdCommand(_ShellDependent):
    NAME: ClassVar[str] = "cmd"


@dataclass(frozen=True, slots=True, kw_only=True)
class EntrypointCommand(Command):
    """ENTRYPOINT; `cmd` is None for `ENTRYPOINT []` (which clears it)."""

    NAME: ClassVar[str] = "entrypoint"
    cmd: tuple[str, ...] | None
    prepend_shell: bool


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """A container health check; durations in nanoseconds, 0 meaning "inherit"."""

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheckCommand(Command):
    NAME: ClassVar[str] = "healthcheck"
    health: HealthConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class ExposeCommand(Command):
    """EXPOSE; `expand` splits each port word into fields as BuildKit's dispatch does."""

    NAME: ClassVar[str] = "expose"
    EXPANDS: ClassVar[bool] = True
    ports: tuple[str, ...]

    def expand_with(self, expander: Expander, filename: str = "Dockerfile") -> Self:
        run = _guard(expander, filename, self.line)
        return dataclasses.replace(self, ports=tuple(run(p) for p in self.ports))

    def expand(self, lex: ShellLex, env: Mapping[str, str], filename: str = "Dockerfile") -> Self:
        ports: list[str] = []
        for port in self.ports:
            try:
                ports.extend(lex.process_words(port, env))
            except ExpansionError as err:
                raise (err if err.line else err.at(filename, self.line)) from None
        return dataclasses.replace(self, ports=tuple(ports))


@dataclass(frozen=True, slots=True, kw_only=True)
class UserCommand(Command):
    NAME: ClassVar[str] = "user"
    EXPANDS: ClassVar[bool] = True
    user: str

    def expand_with(self, expander: Expander, filename: str = "Dockerfile") -> Self:
        return dataclasses.replace(self, user=_guard(expander, filename, self.line)(self.user))


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeCommand(Command):
    NAME: ClassVar[str] = "volume"
    EXPANDS: ClassVar[bool] = True
    volumes: tuple[str, ...]

    def expand_with(self, expander: Expander, filename: str = "Dockerfile") -> Self:
        run = _guard(expander, filename, self.line)
        return dataclasses.replace(self, volumes=tuple(run(v) for v in self.volumes))


@dataclass(frozen=True, slots=True, kw_only=True)
class StopSignalCommand(Command):
    NAME: ClassVar[str] = "stopsignal"
    EXPANDS: ClassVar[bool] = True
    signal: str

    def expand_with(self, expander: Expander, filename: str = "Dockerfile") -> Self:
        return dataclasses.replace(self, signal=_guard(expander, filename, self.line)(self.signal))


@dataclass(frozen=True, slots=True, kw_only=True)
class ArgCommand(Command):
    """ARG with one or more names. BuildKit expands every key and default at once;
    the lowering usually expands pair by pair so `ARG a=1 b=$a` sees `a`."""

    NAME: ClassVar[str] = "arg"
    EXPANDS: ClassVar[bool] = True
    args: tuple[ArgPair, ...]

    def expand_with(self, expander: Expander, filename: str = "Dockerfile") -> Self:
        run = _guard(expander, filename, self.line)
        pairs = tuple(ArgPair(run(a.key), None if a.value is None else run(a.value)) for a in self.args)
        return dataclasses.replace(self, args=pairs)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShellCommand(Command):
    NAME: ClassVar[str] = "shell"
    shell: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class OnbuildCommand(Command):
    """ONBUILD. `expression` is the trigger text stored in the image config (heredoc
    bodies included); `trigger` is its keyword, upper-cased."""

    NAME: ClassVar[str] = "onbuild"
    expression: str
    trigger: str

    def trigger_command(self, filename: str = "Dockerfile") -> Command:
        """The trigger as a typed command (checked only now, as BuildKit does)."""
        from frontends.dockerfile.parser import parse_instruction

        return parse_instruction(self.expression, filename, self.line)


@dataclass(frozen=True, slots=True)
class Stage:
    """A FROM and the commands after it.

    `name` is lowercased ("" when unnamed); `base` and `platform` are as written (they
    are expanded with the global ARGs only, see `expand`).
    """

    name: str
    base: str
    platform: str
    commands: tuple[Command, ...]
    line: int
    index: int
    original: str
    end_line: int = 0

    def expand(self, lex: ShellLex, env: Mapping[str, str], filename: str = "Dockerfile") -> Stage:
        """This stage with `base` and `platform` expanded against `env` (global ARGs)."""
        run = _guard(lambda word: lex.process_word(word, env), filename, self.line)
        return dataclasses.replace(self, base=run(self.base), platform=run(self.platform))


# -- building commands from nodes -------------------------------------------------------


def _json_args(node: Node) -> tuple[str, ...]:
    return _join_args(node.args, node.json)


def _join_args(args: tuple[str, ...], is_json: bool) -> tuple[str, ...]:
    """BuildKit's handleJSONArgs: the array, or all words joined into one string."""
    if not args:
        return ()
    if is_json:
        return args
    return (" ".join(args),)


def _exactly_one(node: Node, name: str) -> str:
    if len(node.args) != 1:
        raise InstructionSyntaxError(f"{name} requires exactly one argument")
    return node.args[0]


def _at_least_one(node: Node, name: str) -> None:
    if not node.args:
        raise InstructionSyntaxError(f"{name} requires at least one argument")


def _no_flags(node: Node) -> None:
    BFlags(node.flags).parse()


class _Location(TypedDict):
    line: int
    end_line: int
    original: str


def _base(node: Node) -> _Location:
    return {"line": node.line, "end_line": node.end_line, "original": go_trim_space(node.original)}


def _kvps(node: Node, name: str) -> tuple[KeyValuePair, ...]:
    args = node.args
    if not args:
        raise InstructionSyntaxError(f"{name} requires at least one argument")
    if len(args) % 3:
        raise InstructionSyntaxError(f"Bad input to {name}, too many arguments")
    pairs = []
    for j in range(0, len(args), 3):
        if not args[j]:
            raise InstructionSyntaxError(f"{name} names can not be blank")
        pairs.append(KeyValuePair(args[j], args[j + 1], args[j + 2] == ""))
    return tuple(pairs)


def _parse_env(node: Node) -> EnvCommand:
    _no_flags(node)
    return EnvCommand(env=_kvps(node, "ENV"), **_base(node))


def _parse_label(node: Node) -> LabelCommand:
    _no_flags(node)
    return LabelCommand(labels=_kvps(node, "LABEL"), **_base(node))


def _parse_maintainer(node: Node) -> MaintainerCommand:
    value = _exactly_one(node, "MAINTAINER")
    _no_flags(node)
    return MaintainerCommand(maintainer=value, **_base(node))


def _sources_and_dest(node: Node, name: str) -> tuple[tuple[str, ...], str, tuple[SourceContent, ...]]:
    srcs = node.args[:-1]
    dest = node.args[-1]
    if heredoc_or_none(dest) is not None:
        raise InstructionSyntaxError(f"{name} cannot accept a heredoc as a destination")
    bodies = {h.name: h for h in node.heredocs}
    paths: list[str] = []
    contents: list[SourceContent] = []
    for src in srcs:
        heredoc = heredoc_or_none(src)
        if heredoc is None:
            paths.append(src)
            continue
        body = bodies.get(heredoc.name)
        data = body.content if body is not None else ""
        if heredoc.chomp:
            data = chomp_heredoc(data)
        contents.append(SourceContent(heredoc.name, data, heredoc.expand))
    return tuple(paths), dest, tuple(contents)


def _no_destination(name: str) -> InstructionSyntaxError:
    return InstructionSyntaxError(
        f"{name} requires at least two arguments, but only one was provided. Destination could not be determined"
    )


def _parse_add(node: Node) -> AddCommand:
    if len(node.args) < 2:
        raise _no_destination("ADD")
    flags = BFlags(node.flags)
    fl_exclude = flags.add_strings("exclude")
    fl_chown = flags.add_string("chown")
    fl_chmod = flags.add_string("chmod")
    fl_link = flags.add_bool("link")
    fl_keep_git_dir = flags.add_bool("keep-git-dir")
    fl_checksum = flags.add_string("checksum")
    fl_unpack = flags.add_bool("unpack")
    flags.parse()
    sources, dest, contents = _sources_and_dest(node, "ADD")
    return AddCommand(
        sources=sources,
        dest=dest,
        source_contents=contents,
        heredocs=node.heredocs,
        chown=fl_chown.value,
        chmod=fl_chmod.value,
        link=fl_link.is_true,
        exclude=tuple(fl_exclude.values),
        json=node.json,
        keep_git_dir=fl_keep_git_dir.is_true,
        checksum=fl_checksum.value,
        unpack=fl_unpack.is_true if fl_unpack.used else None,
        **_base(node),
    )


def _parse_copy(node: Node) -> CopyCommand:
    if len(node.args) < 2:
        raise _no_destination("COPY")
    flags = BFlags(node.flags)
    fl_exclude = flags.add_strings("exclude")
    fl_parents = flags.add_bool("parents")
    fl_chown = flags.add_string("chown")
    fl_from = flags.add_string("from")
    fl_chmod = flags.add_string("chmod")
    fl_link = flags.add_bool("link")
    flags.parse()
    sources, dest, contents = _sources_and_dest(node, "COPY")
    return CopyCommand(
        sources=sources,
        dest=dest,
        source_contents=contents,
        heredocs=node.heredocs,
        chown=fl_chown.value,
        chmod=fl_chmod.value,
        link=fl_link.is_true,
        exclude=tuple(fl_exclude.values),
        json=node.json,
        from_=fl_from.value,
        parents=fl_parents.is_true,
        **_base(node),
    )


_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*")


def _casefold_equal(a: str, b: str) -> bool:
    return a.casefold() == b.casefold()


def _parse_from(node: Node) -> Stage:
    args = node.args
    name = ""
    if len(args) == 3 and _casefold_equal(args[1], "as"):
        name = go_lower(args[2])
        if not _STAGE_NAME.fullmatch(name):
            raise InstructionSyntaxError(
                f"invalid name for build stage: {go_quote(args[2])}, name can't start with a number or contain symbols"
            )
    elif len(args) != 1:
        raise InstructionSyntaxError("FROM requires either one or three arguments")
    flags = BFlags(node.flags)
    fl_platform = flags.add_string("platform")
    flags.parse()
    return Stage(
        name=name,
        base=args[0],
        platform=fl_platform.value,
        commands=(),
        line=node.line,
        index=0,
        original=go_trim_space(node.original),
        end_line=node.end_line,
    )


_ONBUILD_PREFIX = re.compile(r"^[\t\n\f\r ]*ONBUILD[\t\n\f\r ]*", re.IGNORECASE | re.ASCII)


def _parse_onbuild(node: Node) -> OnbuildCommand:
    if not node.args:
        raise InstructionSyntaxError("ONBUILD requires at least one argument")
    _no_flags(node)
    trigger = go_upper(go_trim_space(node.args[0]))
    if trigger == "ONBUILD":
        raise InstructionSyntaxError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("MAINTAINER", "FROM"):
        raise InstructionSyntaxError(f"{trigger} isn't allowed as an ONBUILD trigger")
    expression = _ONBUILD_PREFIX.sub("", node.original, count=1)
    for heredoc in node.heredocs:
        expression += "\n" + heredoc.content + heredoc.name
    return OnbuildCommand(expression=expression, trigger=trigger, **_base(node))


def _parse_workdir(node: Node) -> WorkdirCommand:
    path = _exactly_one(node, "WORKDIR")
    _no_flags(node)
    return WorkdirCommand(path=path, **_base(node))


_NETWORK_MODES = ("default", "none", "host")
_SECURITY_MODES = ("sandbox", "insecure")


def _parse_run(node: Node) -> RunCommand:
    flags = BFlags(node.flags)
    fl_mount = flags.add_strings("mount")
    fl_network = flags.add_string("network", "default")
    fl_security = flags.add_string("security", "sandbox")
    flags.parse()
    mounts = tuple(parse_mount(spec, None) for spec in fl_mount.values)
    if fl_network.value not in _NETWORK_MODES:
        raise InstructionSyntaxError(f"unsupported network mode {go_quote(fl_network.value)}")
    if fl_security.value not in _SECURITY_MODES:
        raise InstructionSyntaxError(f"unsupported security mode {go_quote(fl_security.value)}")
    return RunCommand(
        cmd=_json_args(node),
        prepend_shell=not node.json,
        heredocs=node.heredocs,
        mounts=mounts,
        network=fl_network.value,
        security=fl_security.value,
        flags_used=tuple(sorted(flags.used)),
        **_base(node),
    )


def _parse_cmd(node: Node) -> CmdCommand:
    _no_flags(node)
    return CmdCommand(cmd=_json_args(node), prepend_shell=not node.json, **_base(node))


def _parse_entrypoint(node: Node) -> EntrypointCommand:
    _no_flags(node)
    cmd = _json_args(node) or None
    return EntrypointCommand(cmd=cmd, prepend_shell=not node.json, **_base(node))


_MIN_INTERVAL = 1_000_000  # 1ms, BuildKit's minimum for a non-zero health check duration


def _interval(flag_name: str, value: str) -> int:
    if not value:
        return 0
    try:
        duration = parse_duration(value)
    except ValueError as err:
        raise InstructionSyntaxError(str(err)) from None
    if duration == 0:
        return 0
    if duration < _MIN_INTERVAL:
        raise InstructionSyntaxError(
            f"Interval {go_quote(flag_name)} cannot be less than {format_duration(_MIN_INTERVAL)}"
        )
    return duration


def _parse_healthcheck(node: Node) -> HealthCheckCommand:
    if not node.args:
        raise InstructionSyntaxError("HEALTHCHECK requires at least one argument")
    typ = go_upper(node.args[0])
    args = node.args[1:]
    flags = BFlags(node.flags)
    fl_interval = flags.add_string("interval")
    fl_timeout = flags.add_string("timeout")
    fl_start_period = flags.add_string("start-period")
    fl_start_interval = flags.add_string("start-interval")
    fl_retries = flags.add_string("retries")
    if typ == "NONE":
        if args:
            raise InstructionSyntaxError("HEALTHCHECK NONE takes no arguments")
        flags.parse()
        return HealthCheckCommand(health=HealthConfig(test=("NONE",)), **_base(node))
    flags.parse()
    if typ != "CMD":
        raise InstructionSyntaxError(f"Unknown type {go_quote(typ)} in HEALTHCHECK (try CMD)")
    cmd = _join_args(args, node.json)
    if not cmd:
        raise InstructionSyntaxError("Missing command after HEALTHCHECK CMD")
    test = ("CMD" if node.json else "CMD-SHELL", *cmd)
    retries = 0
    if fl_retries.value:
        try:
            retries = parse_int(fl_retries.value, 10, 32)
        except ValueError as err:
            raise InstructionSyntaxError(str(err)) from None
        if retries < 0:
            raise InstructionSyntaxError(f"--retries cannot be negative ({retries})")
    health = HealthConfig(
        test=test,
        interval=_interval("interval", fl_interval.value),
        timeout=_interval("timeout", fl_timeout.value),
        start_period=_interval("start-period", fl_start_period.value),
        start_interval=_interval("start-interval", fl_start_interval.value),
        retries=retries,
    )
    return HealthCheckCommand(health=health, **_base(node))


def _parse_expose(node: Node) -> ExposeCommand:
    _at_least_one(node, "EXPOSE")
    _no_flags(node)
    return ExposeCommand(ports=tuple(sorted(node.args)), **_base(node))


def _parse_user(node: Node) -> UserCommand:
    user = _exactly_one(node, "USER")
    _no_flags(node)
    return UserCommand(user=user, **_base(node))


def _parse_volume(node: Node) -> VolumeCommand:
    _at_least_one(node, "VOLUME")
    _no_flags(node)
    volumes = []
    for v in node.args:
        v = go_trim_space(v)
        if not v:
            raise InstructionSyntaxError("VOLUME specified can not be an empty string")
        volumes.append(v)
    return VolumeCommand(volumes=tuple(volumes), **_base(node))


def _parse_stopsignal(node: Node) -> StopSignalCommand:
    signal = _exactly_one(node, "STOPSIGNAL")
    _no_flags(node)  # BuildKit ignores flags here; an unknown flag is surely a mistake
    return StopSignalCommand(signal=signal, **_base(node))


def _parse_arg(node: Node) -> ArgCommand:
    _at_least_one(node, "ARG")
    _no_flags(node)  # as for STOPSIGNAL
    pairs = []
    for arg in node.args:
        key, has_value, value = arg.partition("=")
        if has_value and not key:
            raise InstructionSyntaxError("ARG names can not be blank")
        pairs.append(ArgPair(key, value if has_value else None))
    return ArgCommand(args=tuple(pairs), **_base(node))


_WINDOWS_PATH_HINT = re.compile(r'"[a-z]:\\.*')


def _not_json(name: str, original: str) -> InstructionSyntaxError:
    extra = ""
    text = go_lower(go_lower(original).replace(go_lower(name) + " ", ""))
    if _WINDOWS_PATH_HINT.search(text) and "\\\\" not in text and "[" in text and "]" in text:
        extra = (
            f". It looks like '{text}' includes a file path without an escaped back-slash. JSON requires "
            'back-slashes to be escaped such as ["c:\\\\path\\\\to\\\\file.exe", "/parameter"]'
        )
    return InstructionSyntaxError(f"{name} requires the arguments to be in JSON form{extra}")


def _parse_shell(node: Node) -> ShellCommand:
    _no_flags(node)
    shell = _json_args(node)
    if not shell:
        raise InstructionSyntaxError("SHELL requires at least one argument")
    if not node.json:
        raise _not_json("SHELL", node.original)
    return ShellCommand(shell=shell, **_base(node))


_PARSERS: dict[str, Callable[[Node], Command | Stage]] = {
    "add": _parse_add,
    "arg": _parse_arg,
    "cmd": _parse_cmd,
    "copy": _parse_copy,
    "entrypoint": _parse_entrypoint,
    "env": _parse_env,
    "expose": _parse_expose,
    "from": _parse_from,
    "healthcheck": _parse_healthcheck,
    "label": _parse_label,
    "maintainer": _parse_maintainer,
    "onbuild": _parse_onbuild,
    "run": _parse_run,
    "shell": _parse_shell,
    "stopsignal": _parse_stopsignal,
    "user": _parse_user,
    "volume": _parse_volume,
    "workdir": _parse_workdir,
}


def parse_node(node: Node, filename: str = "Dockerfile") -> Command | Stage:
    """The typed instruction for a node; a FROM gives a Stage without commands."""
    parse = _PARSERS.get(go_lower(node.keyword))
    if parse is None:
        message = suggest(f"unknown instruction: {node.keyword}", node.keyword, INSTRUCTIONS, False)
        raise DockerfileError(message, filename, node.line)
    try:
        return parse(node)
    except InstructionSyntaxError as err:
        raise DockerfileError(err.message, filename, node.line) from None
