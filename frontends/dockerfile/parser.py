"""Dockerfile text to typed stages, following BuildKit's `frontend/dockerfile/parser`.

Reading happens in BuildKit's two passes. The first turns lines into `Node`s: parser
directives at the top (`# syntax=`, `# escape=`, `# check=`), comments, line
continuations (comment and blank lines inside a continuation are dropped), heredoc
bodies, and per-instruction argument rules (JSON array or shell form, ENV/LABEL pairs,
whitespace-split words). The second (`instructions.parse_node`) checks each node and
types it, then groups commands into stages after the global ARGs. As in BuildKit, a
syntax problem anywhere in the file (say an unterminated heredoc) is reported before a
problem of a single instruction (say an unknown flag) earlier in the file.

Every error is a `DockerfileError(message, filename, line)` with BuildKit's wording.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from engine.errors import DockerfileError
from frontends.dockerfile.flags import InstructionSyntaxError
from frontends.dockerfile.instructions import (
    ArgCommand,
    Command,
    Heredoc,
    Node,
    Stage,
    go_lower,
    parse_heredoc,
    parse_node,
)
from frontends.dockerfile.limits import MAX_INSTRUCTIONS, check_counts, check_size
from frontends.dockerfile.shell_lexer import (
    GO_SPACE_CHARS,
    ExpansionError,
    ShellLex,
    go_quote,
    go_trim_space,
    is_go_space,
)

__all__ = [
    "Directives",
    "Dockerfile",
    "parse_dockerfile",
    "parse_instruction",
    "parse_nodes",
]

MAX_LINE_BYTES = 65535
"""BuildKit's scanner refuses longer physical lines (bufio.MaxScanTokenSize - 1)."""

_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*")
_KNOWN_DIRECTIVES = ("syntax", "escape", "check")
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_HEREDOC_INSTRUCTIONS = ("add", "copy", "run")
_NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only"
_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Directives:
    """The parser directives at the top of the file ("" when absent)."""

    syntax: str = ""
    escape: str = "\\"
    check: str = ""


@dataclass(frozen=True, slots=True)
class Dockerfile:
    """A parsed Dockerfile: its directives, global ARGs and stages, in source order.

    `warnings` holds BuildKit's parse warnings (empty continuation lines), for lint
    output; they never stop a build.
    """

    directives: Directives
    meta_args: tuple[ArgCommand, ...]
    stages: tuple[Stage, ...]
    filename: str = "Dockerfile"
    warnings: tuple[str, ...] = ()

    @property
    def escape(self) -> str:
        return self.directives.escape

    def stage_by_name(self, name: str) -> Stage | None:
        """The first stage called `name` (stage names are case-insensitive)."""
        wanted = go_lower(name)
        for stage in self.stages:
            if stage.name and stage.name == wanted:
                return stage
        return None


class _DirectiveParser:
    """Recognizes directives until the first line that is not one."""

    __slots__ = ("done", "escape", "filename", "values")

    def __init__(self, filename: str) -> None:
        self.done = False
        self.escape = "\\"
        self.values: dict[str, str] = {}
        self.filename = filename

    def feed(self, line: str, lineno: int) -> None:
        if self.done:
            return
        if not line.startswith("#"):
            self.done = True
            return
        m = _DIRECTIVE.fullmatch(line[1:].lstrip(GO_SPACE_CHARS))
        if m is None:
            self.done = True
            return
        key = m.group(1).lower()
        if key not in _KNOWN_DIRECTIVES:
            self.done = True
            return
        if key in self.values:
            raise DockerfileError(f"only one {key} parser directive can be used", self.filename, lineno)
        value = m.group(2)
        if key == "escape":
            if value not in ("`", "\\"):
                raise DockerfileError(f"invalid escape token '{value}' does not match ` or \\", self.filename, lineno)
            self.escape = value
        self.values[key] = value


def _is_comment(line: str) -> bool:
    stripped = line.lstrip(GO_SPACE_CHARS)
    return stripped.startswith("#")


def _trim_continuation(line: str, escape: str) -> tuple[str, bool]:
    """Remove a trailing escape character; True when the instruction ends here.

    BuildKit's rule: the escape must be the last character but spaces/tabs, and must not
    itself be escaped (`foo \\\\` does not continue), unless it is alone on the line.
    """
    stripped = line.rstrip(" \t")
    if not stripped.endswith(escape):
        return line, True
    if len(stripped) == 1:
        return "", False
    if stripped[-2] == escape:
        return line, True
    return stripped[:-1], False


def _split_command(line: str) -> tuple[str, list[str], str]:
    parts = _WHITESPACE.split(go_trim_space(line), maxsplit=1)
    keyword = parts[0]
    flags: list[str] = []
    rest = ""
    if len(parts) == 2:
        rest, flags = _extract_flags(parts[1])
    return keyword, flags, go_trim_space(rest)


def _extract_flags(line: str) -> tuple[str, list[str]]:
    """Split leading `--flag[=value]` words off (quotes and `\\` allowed inside them)."""
    words: list[str] = []
    n = len(line)
    pos = 0
    while True:
        while pos < n and is_go_space(line[pos]):
            pos += 1
        if pos >= n:
            return "", words
        if not line.startswith("--", pos):
            return line[pos:], words
        word: list[str] = []
        blank_ok = False
        quote = ""
        while pos < n:
            ch = line[pos]
            if quote:
                if ch == quote:
                    quote = ""
                    pos += 1
                    continue
                if ch == "\\":
                    if pos + 1 == n:
                        quote = ""
                        pos += 1
                        continue
                    pos += 1
                    ch = line[pos]
                word.append(ch)
                pos += 1
                continue
            if is_go_space(ch):
                break
            if ch == "'" or ch == '"':
                quote = ch
                blank_ok = True
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word.append(ch)
            pos += 1
        text = "".join(word)
        if pos >= n:
            if text != "--" and (blank_ok or text):
                words.append(text)
            return "", words
        if text == "--":
            return line[pos:], words
        if blank_ok or text:
            words.append(text)


class _NotStringArray(Exception):
    pass


def _reject_number(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


def _reject_constant(text: str) -> float:
    raise ValueError(f"invalid literal {text}")


def _parse_json(rest: str) -> tuple[str, ...] | None:
    """The strings of a JSON array, None when `rest` is not one (Go's json rules)."""
    rest = rest.lstrip(GO_SPACE_CHARS)
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest, parse_int=_reject_number, parse_float=_reject_number, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    out = []
    for item in value:
        if not isinstance(item, str):
            raise _NotStringArray
        out.append(_SURROGATES.sub("\ufffd", item))
    return tuple(out)


def _maybe_json(rest: str) -> tuple[tuple[str, ...], bool]:
    if not rest:
        return (), False
    words = _parse_json(rest)
    if words is None:
        return (rest,), False
    return words, True


def _maybe_json_list(rest: str) -> tuple[tuple[str, ...], bool]:
    words = _parse_json(rest)
    if words is None:
        return _whitespace_words(rest), False
    return words, True


def _whitespace_words(rest: str) -> tuple[str, ...]:
    if not rest:
        return ()
    return tuple(_WHITESPACE.split(rest))


_SPACES, _WORD, _QUOTE = 0, 1, 2


def _parse_words(rest: str, escape: str) -> list[str]:
    """Words split on unquoted whitespace, quotes and escapes kept (BuildKit's parseWords)."""
    words: list[str] = []
    buf: list[str] = []
    phase = _SPACES
    quote = ""
    blank_ok = False
    n = len(rest)
    pos = 0
    while pos < n:
        ch = rest[pos]
        if phase == _SPACES:
            if is_go_space(ch):
                pos += 1
                continue
            phase = _WORD
        if phase == _WORD:
            if is_go_space(ch):
                phase = _SPACES
                if blank_ok or buf:
                    words.append("".join(buf))
                buf = []
                blank_ok = False
                pos += 1
                continue
            if ch == "'" or ch == '"':
                quote = ch
                blank_ok = True
                phase = _QUOTE
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue  # an escape at the very end is dropped
                buf.append(ch)
                pos += 1
                ch = rest[pos]
            buf.append(ch)
            pos += 1
            continue
        # inside quotes
        if ch == quote:
            phase = _WORD
        if ch == escape and quote != "'":
            if pos + 1 == n:
                phase = _WORD
                pos += 1
                continue
            buf.append(ch)
            pos += 1
            ch = rest[pos]
        buf.append(ch)
        pos += 1
    if phase != _SPACES and (blank_ok or buf):
        words.append("".join(buf))
    return words


def _name_val(rest: str, key: str, escape: str) -> tuple[str, ...]:
    words = _parse_words(rest, escape)
    if not words:
        return ()
    if "=" not in words[0]:
        parts = _WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise InstructionSyntaxError(f"{key} must have two arguments")
        return (parts[0], parts[1], "")
    out: list[str] = []
    for word in words:
        name, has_value, value = word.partition("=")
        if not has_value:
            raise InstructionSyntaxError(
                f"Syntax error - can't find = in {go_quote(word)}. Must be of the form: name=value"
            )
        out += (name, value, "=")
    return tuple(out)


def _health_args(rest: str) -> tuple[tuple[str, ...], bool]:
    sep = 0
    n = len(rest)
    while sep < n and not is_go_space(rest[sep]):
        sep += 1
    if sep == 0:
        return (), False
    nxt = sep
    while nxt < n and is_go_space(rest[nxt]):
        nxt += 1
    args, is_json = _maybe_json(rest[nxt:])
    return (rest[:sep], *args), is_json


def _leaf_args(kind: str, rest: str, escape: str) -> tuple[tuple[str, ...], bool]:
    """An instruction's argument words, per BuildKit's per-instruction line parsers."""
    try:
        if kind in ("run", "cmd", "entrypoint", "shell"):
            return _maybe_json(rest)
        if kind in ("add", "copy", "volume"):
            return _maybe_json_list(rest)
        if kind in ("env", "label"):
            return _name_val(rest, kind.upper(), escape), False
        if kind == "arg":
            return tuple(_parse_words(rest, escape)), False
        if kind in ("expose", "from"):
            return _whitespace_words(rest), False
        if kind in ("maintainer", "stopsignal", "user", "workdir"):
            return ((rest,) if rest else ()), False
        if kind == "healthcheck":
            return _health_args(rest)
        return (), False  # ONBUILD without a trigger, or an unknown instruction
    except _NotStringArray:
        raise InstructionSyntaxError(_NOT_STRING_ARRAY) from None


def _node_from_line(line: str, escape: str, start: int) -> Node:
    """One logical line to a node; an ONBUILD's trigger becomes its child node.

    Nested ONBUILDs are walked iteratively (BuildKit recurses): they are always an
    error, but a parse error inside the innermost trigger is reported first, as there.
    """
    levels: list[tuple[str, tuple[str, ...], str]] = []
    current = line
    while True:
        keyword, flags, rest = _split_command(current)
        kind = go_lower(keyword)
        if kind == "onbuild" and rest:
            if len(levels) < 2:
                levels.append((keyword, tuple(flags), current))
            current = rest
            continue
        args, is_json = _leaf_args(kind, rest, escape)
        node = Node(keyword, tuple(flags), args, is_json, current, start, start)
        break
    for depth, (outer_keyword, outer_flags, original) in enumerate(reversed(levels)):
        # A nested ONBUILD only needs its trigger keyword: it is rejected anyway.
        trigger = (node.keyword, *node.args) if depth == 0 else (node.keyword,)
        node = Node(outer_keyword, outer_flags, trigger, False, original, start, start, (), node)
    return node


def _can_contain_heredoc(node: Node) -> bool:
    target = node.child if go_lower(node.keyword) == "onbuild" and node.child is not None else node
    return go_lower(target.keyword) in _HEREDOC_INSTRUCTIONS and not target.json


_HEREDOC_FINDER = ShellLex("\\", raw_quotes=True, raw_escapes=True, skip_unset_env=True)


def _heredocs_in(line: str) -> list[Heredoc]:
    try:
        words = _HEREDOC_FINDER.process_words(line, {})
    except ExpansionError:
        return []  # BuildKit ignores lexing errors here: the line just has no heredoc
    found = []
    for word in words:
        if "<<" in word:
            heredoc = parse_heredoc(word)
            if heredoc is not None:
                found.append(heredoc)
    return found


@dataclass(frozen=True, slots=True)
class _Parsed:
    directives: Directives
    nodes: tuple[Node, ...]
    warnings: tuple[str, ...]


def _check_length(raw: str, filename: str, lineno: int) -> None:
    if len(raw) > MAX_LINE_BYTES // 4 and len(raw.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
        raise DockerfileError(f"dockerfile line greater than max allowed size of {MAX_LINE_BYTES}", filename, lineno)


def parse_nodes(text: str, filename: str = "Dockerfile", first_line: int = 1, escape: str = "\\") -> _Parsed:
    """First pass: lines to nodes, with directives and heredoc bodies."""
    lines = text.split("\n")
    has_newline = [True] * len(lines)
    if lines and lines[-1] == "":
        lines.pop()
        has_newline.pop()
    elif lines:
        has_newline[-1] = False
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    directives = _DirectiveParser(filename)
    directives.escape = escape
    nodes: list[Node] = []
    warnings: list[str] = []
    total = len(lines)
    idx = 0
    offset = first_line
    while idx < total:
        raw = lines[idx]
        lineno = idx + offset
        _check_length(raw, filename, lineno)
        line = raw.rstrip("\r").lstrip(GO_SPACE_CHARS)
        directives.feed(line, lineno)
        esc = directives.escape
        if _is_comment(line):
            line = ""
        idx += 1
        start = lineno
        line, end = _trim_continuation(line, esc)
        if end and not line:
            continue
        parts = [line]
        empty_continuation = False
        while not end and idx < total:
            raw = lines[idx]
            _check_length(raw, filename, idx + offset)
            idx += 1
            if _is_comment(raw):
                continue
            cont = raw.rstrip("\r")
            if not cont.lstrip(GO_SPACE_CHARS):
                empty_continuation = True
                continue
            cont, end = _trim_continuation(cont, esc)
            parts.append(cont)
        full = "".join(parts)
        if empty_continuation:
            warnings.append(f"Empty continuation line found in: {full}")
        try:
            node = _node_from_line(full, esc, start)
            heredocs: list[Heredoc] = []
            if "<<" in full and _can_contain_heredoc(node):
                for heredoc in _heredocs_in(full):
                    body: list[str] = []
                    terminated = False
                    while idx < total:
                        raw = lines[idx]
                        _check_length(raw, filename, idx + offset)
                        newline = "\n" if has_newline[idx] else ""
                        idx += 1
                        candidate = raw.rstrip("\r")
                        if heredoc.chomp:
                            candidate = candidate.lstrip("\t")
                        if candidate == heredoc.name:
                            terminated = True
                            break
                        body.append(raw + newline)
                    if not terminated:
                        raise InstructionSyntaxError("unterminated heredoc")
                    heredocs.append(Heredoc(heredoc.name, "".join(body), heredoc.expand, heredoc.chomp, heredoc.fd))
        except InstructionSyntaxError as err:
            raise DockerfileError(err.message, filename, start) from None
        end_line = idx - 1 + offset
        nodes.append(
            Node(node.keyword, node.flags, node.args, node.json, full, start, end_line, tuple(heredocs), node.child)
        )
        if len(nodes) > MAX_INSTRUCTIONS:  # stop before the node list itself gets large
            check_counts(len(nodes), 0, filename, start)
    if not nodes:
        raise DockerfileError("file with no instructions", filename, max(first_line, total + offset - 1))
    found = Directives(
        syntax=directives.values.get("syntax", ""),
        escape=directives.escape,
        check=directives.values.get("check", ""),
    )
    return _Parsed(found, tuple(nodes), tuple(warnings))


def parse_dockerfile(text: str, filename: str = "Dockerfile") -> Dockerfile:
    """Parse a whole Dockerfile into its global ARGs and stages (within `frontends.dockerfile.limits`)."""
    check_size(text, filename)
    parsed = parse_nodes(text, filename)
    meta_args: list[ArgCommand] = []
    stages: list[Stage] = []
    commands: list[Command] = []
    for node in parsed.nodes:
        item = parse_node(node, filename)
        if isinstance(item, Stage):
            check_counts(0, len(stages) + 1, filename, node.line)
            if stages:
                stages[-1] = _with_commands(stages[-1], commands)
            commands = []
            stages.append(
                Stage(item.name, item.base, item.platform, (), item.line, len(stages), item.original, item.end_line)
            )
        elif not stages:
            if not isinstance(item, ArgCommand):
                raise DockerfileError("no build stage in current context", filename, node.line)
            meta_args.append(item)
        else:
            commands.append(item)
    if not stages:
        raise DockerfileError("dockerfile contains no stages to build", filename, parsed.nodes[-1].line)
    stages[-1] = _with_commands(stages[-1], commands)
    return Dockerfile(parsed.directives, tuple(meta_args), tuple(stages), filename, parsed.warnings)


def _with_commands(stage: Stage, commands: list[Command]) -> Stage:
    end = commands[-1].end_line if commands else stage.end_line
    return Stage(stage.name, stage.base, stage.platform, tuple(commands), stage.line, stage.index, stage.original, end)


def parse_instruction(text: str, filename: str = "Dockerfile", line: int = 1, escape: str = "\\") -> Command:
    """One instruction from text: an ONBUILD trigger or a `--change` string.

    The text goes through the same line rules as a Dockerfile (continuations and
    heredocs included) and must hold exactly one instruction; FROM is refused.
    """
    parsed = parse_nodes(text, filename, line, escape)
    if len(parsed.nodes) != 1:
        raise DockerfileError("instruction text should be a single expression", filename, line)
    item = parse_node(parsed.nodes[0], filename)
    if isinstance(item, Stage):
        raise DockerfileError("FROM cannot be used here: it starts a new stage", filename, line)
    return item
