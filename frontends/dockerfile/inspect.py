"""`shipyard build --call=outline|targets|check` and `shipyard dockerfile parse`.

The `--call` functions are buildx's (`docker buildx build --call`), answered by the
frontend alone: nothing is built and no base image has to exist (one that is in the
local store lends its ENV and SHELL to the checks). The text output follows buildx's
printers (tab-aligned tables, `Check complete, …`, BuildKit's source excerpts); a
`,format=json` suffix prints the JSON document BuildKit's subrequest returns instead.
Exit codes are buildx's: `check` exits 1 when any warning is found (BuildKit's
`result.statuscode`), unless `,ignorestatus=true`; `error=true` in the check options
makes it fail with the `lint violation found for rules: …` error.

`dockerfile parse` prints the parsed instructions (keyword as written, flags,
arguments, heredocs, lines) for editors, linters and scripts.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from engine.errors import UsageError
from frontends.dockerfile.checks import (
    Analysis,
    ArgInfo,
    CheckError,
    CheckWarning,
    MountNeed,
    analyze,
    check_config,
    definition_comments,
    failure_message,
    run_checks,
    stage_description,
)
from frontends.dockerfile.instructions import ArgCommand, Heredoc, Node, go_lower
from frontends.dockerfile.parser import Dockerfile, parse_dockerfile, parse_nodes

if TYPE_CHECKING:
    from frontends.base import ImageResolver

__all__ = ["CallSpec", "parse_call", "print_parsed", "run_call"]

CALL_NAMES = ("outline", "targets", "check")
_RULE = "--------------------"


@dataclass(frozen=True)
class CallSpec:
    """A parsed `--call` value: `NAME[,format=text|json][,ignorestatus=BOOL]`."""

    name: str
    format: str = "text"
    ignore_status: bool = False


def parse_call(value: str) -> CallSpec:
    """buildx's reading of `--call`: a function name and `key=value` options, comma-separated."""
    name = ""
    fmt = "text"
    ignore = False
    for field in value.split(","):
        field = field.strip()
        key, has_value, option = field.partition("=")
        if not has_value:
            name = field
        elif key == "format":
            if option not in ("text", "json"):
                raise UsageError(f"--call {value!r}: format must be text or json")
            fmt = option
        elif key == "ignorestatus":
            ignore = option.lower() in ("1", "t", "true")
        else:
            raise UsageError(f"invalid call function option {field}")
    if name == "lint":
        name = "check"
    if name not in CALL_NAMES:
        raise UsageError(f"--call {value!r}: want one of {', '.join(CALL_NAMES)} (with ,format=json)")
    return CallSpec(name, fmt, ignore)


def run_call(
    kind: str,
    dockerfile: Dockerfile,
    build_args: Mapping[str, str],
    target: str,
    *,
    source: str | None = None,
    resolver: ImageResolver | None = None,
    exclude_patterns: Sequence[str] | None = None,
    out: TextIO | None = None,
) -> int:
    """Print what `--call=KIND` asks for; returns the exit code.

    `check` returns 1 when a warning was found (0 with `ignorestatus=true`) and raises
    CheckError when the check options say `error=true` and a rule fired.
    """
    spec = parse_call(kind)
    out = out if out is not None else sys.stdout
    if spec.name == "targets":
        _print_targets(dockerfile, source, spec.format, out)
        return 0
    if spec.name == "outline":
        analysis = analyze(dockerfile, build_args, target, source=source, resolver=resolver)
        _print_outline(dockerfile, analysis, source, spec.format, out)
        return 0
    config = check_config(dockerfile, build_args)
    warnings = run_checks(
        dockerfile,
        build_args,
        target,
        source=source,
        resolver=resolver,
        exclude_patterns=exclude_patterns,
        all_stages=not target,
        config=config,
    )
    failure = failure_message(warnings, config)
    _print_check(dockerfile, warnings, failure, source, spec.format, out)
    if failure:
        raise CheckError(failure)
    return 1 if warnings and not spec.ignore_status else 0


# -- text helpers -----------------------------------------------------------------------------


def _table(rows: Sequence[Sequence[str]], padding: int) -> list[str]:
    """Go's tabwriter for rows of cells: every cell but the last padded to its column."""
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell))
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i] + padding) for i, cell in enumerate(row[:-1])]
        lines.append("".join(cells) + (row[-1] if row else ""))
    return lines


def _snippet(source: str, filename: str, start: int, end: int) -> list[str]:
    """BuildKit's source excerpt: the range marked `>>>`, with a few lines of context."""
    lines = source.split("\n")
    if start < 1 or start > len(lines):
        return []
    end = min(max(end, start), len(lines))
    first, last = start, end
    pad = 4 if start == end else 2
    budget = 0
    while budget < pad:
        if first > 1:
            first -= 1
            budget += 1
        if last != len(lines):
            last += 1
            budget += 1
        budget += 1
    out = [f"{filename}:{start}", _RULE]
    for number in range(first, last + 1):
        marker = ">>>" if start <= number <= end else "   "
        out.append(f" {number:3d} | {marker} {lines[number - 1]}")
    out.append(_RULE)
    return out


def _location(start: int, end: int) -> dict[str, Any]:
    return {"ranges": [{"start": {"line": start}, "end": {"line": max(end, start)}}]}


def _source_b64(source: str | None) -> list[str]:
    return [base64.b64encode(source.encode()).decode()] if source is not None else []


def _dump(data: Any, out: TextIO) -> None:
    out.write(json.dumps(data, indent=2) + "\n")


# -- targets ----------------------------------------------------------------------------------


def _print_targets(dockerfile: Dockerfile, source: str | None, fmt: str, out: TextIO) -> None:
    comments = definition_comments(source) if source is not None else {}
    last = len(dockerfile.stages) - 1
    targets = []
    for stage in dockerfile.stages:
        item: dict[str, Any] = {}
        if stage.name:
            item["name"] = stage.name
        if stage.index == last:
            item["default"] = True
        description = stage_description(comments, stage)
        if description:
            item["description"] = description
        item["base"] = stage.base
        if stage.platform:
            item["platform"] = stage.platform
        item["location"] = _location(stage.line, stage.line)
        targets.append(item)
    if fmt == "json":
        _dump({"targets": targets, "sources": _source_b64(source)}, out)
        return
    rows = [("TARGET", "DESCRIPTION")]
    for item in targets:
        name = item.get("name", "")
        if item.get("default"):
            name = f"{name} (default)" if name else "(default)"
        rows.append((name, item.get("description", "")))
    out.write("\n".join(_table(rows, 3)) + "\n")


# -- outline ----------------------------------------------------------------------------------


def _walk(analysis: Analysis, start: int) -> list[int]:
    """The target, then (depth first) its base stage and the stages it reads, once each."""
    order: list[int] = []

    def visit(index: int) -> None:
        if index in order or analysis.stages[index] is None:
            return
        order.append(index)
        base = analysis.base[index]
        if base is not None:
            visit(base)
        for dep in analysis.deps[index]:
            visit(dep)

    visit(start)
    return order


def _outline_args(analysis: Analysis) -> list[ArgInfo]:
    """BuildKit's outline args: the ARGs each reachable stage uses, globals it names in FROM
    (and the globals their defaults refer to), first definition wins."""
    globals_by_name = {a.name: a for a in analysis.global_args}
    seen: set[str] = set()
    found: list[ArgInfo] = []
    for index in _walk(analysis, analysis.target):
        facts = analysis.stages[index]
        assert facts is not None
        defined = dict(globals_by_name)
        defined.update({a.name: a for a in facts.args})
        used = set(facts.used_args)
        pending = list(used)
        while pending:
            info = defined.get(pending.pop())
            if info is None:
                continue
            for dep in info.deps:
                if dep not in used:
                    used.add(dep)
                    pending.append(dep)
        for name in sorted(used):
            info = defined.get(name)
            if info is not None and name not in seen:
                seen.add(name)
                found.append(info)
    return sorted(found, key=lambda a: a.line)


def _outline_needs(analysis: Analysis, kind: str) -> list[MountNeed]:
    seen: set[str] = set()
    found: list[MountNeed] = []
    for index in _walk(analysis, analysis.target):
        facts = analysis.stages[index]
        assert facts is not None
        for need in facts.secrets if kind == "secret" else facts.ssh:
            if need.id not in seen:
                seen.add(need.id)
                found.append(need)
    return sorted(found, key=lambda n: n.line)


def _print_outline(dockerfile: Dockerfile, analysis: Analysis, source: str | None, fmt: str, out: TextIO) -> None:
    comments = definition_comments(source) if source is not None else {}
    stage = dockerfile.stages[analysis.target]
    description = stage_description(comments, stage)
    args = _outline_args(analysis)
    secrets = _outline_needs(analysis, "secret")
    ssh = _outline_needs(analysis, "ssh")
    if fmt == "json":
        data: dict[str, Any] = {}
        if stage.name:
            data["name"] = stage.name
        if description:
            data["description"] = description
        if args:
            data["args"] = [_arg_json(a) for a in args]
        if secrets:
            data["secrets"] = [_need_json(n) for n in secrets]
        if ssh:
            data["ssh"] = [_need_json(n) for n in ssh]
        if source is not None:
            data["sources"] = _source_b64(source)
        _dump(data, out)
        return
    blocks: list[list[str]] = []
    if stage.name or description:
        rows = [("TARGET:", stage.name or "(default)")]
        if description:
            rows.append(("DESCRIPTION:", description))
        blocks.append(_table(rows, 1))
    if args:
        rows = [("BUILD ARG", "VALUE", "DESCRIPTION")]
        rows += [(a.name, a.value or "", a.description) for a in args]
        blocks.append(_table(rows, 3))
    for title, needs in (("SECRET", secrets), ("SSH", ssh)):
        if needs:
            rows = [(title, "REQUIRED")] + [(n.id, "true" if n.required else "") for n in needs]
            blocks.append(_table(rows, 3))
    out.write("".join("\n".join(block) + "\n\n" for block in blocks))


def _arg_json(arg: ArgInfo) -> dict[str, Any]:
    item: dict[str, Any] = {"name": arg.name}
    if arg.description:
        item["description"] = arg.description
    if arg.value:
        item["value"] = arg.value
    item["location"] = _location(arg.line, arg.end_line)
    return item


def _need_json(need: MountNeed) -> dict[str, Any]:
    item: dict[str, Any] = {"name": need.id}
    if need.required:
        item["required"] = True
    item["location"] = _location(need.line, need.end_line)
    return item


# -- check ------------------------------------------------------------------------------------


def _print_check(
    dockerfile: Dockerfile,
    warnings: Sequence[CheckWarning],
    failure: str,
    source: str | None,
    fmt: str,
    out: TextIO,
) -> None:
    if fmt == "json":
        data: dict[str, Any] = {
            "warnings": [
                {
                    "ruleName": w.rule,
                    "description": w.description,
                    "url": w.url,
                    "detail": w.message,
                    "location": _location(w.start_line, w.end_line),
                }
                for w in warnings
            ],
            "sources": [
                {
                    "filename": dockerfile.filename,
                    "language": "Dockerfile",
                    **({"data": _source_b64(source)[0]} if source is not None else {}),
                }
            ],
        }
        if failure:
            data["buildError"] = {"message": failure}
        _dump(data, out)
        return
    lines: list[str] = []
    if warnings:
        count = "1 warning has been found!" if len(warnings) == 1 else f"{len(warnings)} warnings have been found!"
        lines.append(f"Check complete, {count}")
    for w in warnings:
        lines.append("")
        lines.append(f"WARNING: {w.rule}" + (f" - {w.url}" if w.url else ""))
        lines.append(w.message)
        if source is not None:
            lines.extend(_snippet(source, dockerfile.filename, w.start_line, w.end_line))
        else:
            lines.append(w.location)
    if failure and warnings:
        lines.append("")
    if not warnings and not failure:
        lines.append("Check complete, no warnings found.")
    out.write("\n".join(lines) + "\n")


# -- dockerfile parse -------------------------------------------------------------------------


def _read(path: str) -> tuple[str, str]:
    """(text, name to show)."""
    if path == "-":
        return sys.stdin.read(), "Dockerfile"
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except FileNotFoundError:
        raise UsageError(f"Dockerfile not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a Dockerfile") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: the Dockerfile is not UTF-8 text") from None


def _heredoc_json(heredoc: Heredoc) -> dict[str, Any]:
    return {
        "name": heredoc.name,
        "content": heredoc.content,
        "expand": heredoc.expand,
        "chomp": heredoc.chomp,
        "fd": heredoc.fd,
    }


def _node_json(node: Node) -> dict[str, Any]:
    kind = go_lower(node.keyword)
    item: dict[str, Any] = {
        "keyword": node.keyword,
        "name": kind,
        "flags": list(node.flags),
        "arguments": list(node.args),
        "json": node.json,
        "heredocs": [_heredoc_json(h) for h in node.heredocs],
        "original": node.original.strip(),
        "start_line": node.line,
        "end_line": node.end_line,
    }
    if kind in ("env", "label"):
        args = node.args
        item["pairs"] = [
            {"key": args[i], "value": args[i + 1], "legacy": args[i + 2] == ""} for i in range(0, len(args) - 2, 3)
        ]
    if node.child is not None:
        item["trigger"] = _node_json(node.child)
    return item


def print_parsed(path: str, *, as_json: bool, out: TextIO | None = None) -> int:
    """Print FILE's instructions (FILE `-` is stdin); a Dockerfile error is raised, located."""
    out = out if out is not None else sys.stdout
    text, filename = _read(path)
    dockerfile = parse_dockerfile(text, filename)  # the full check: bad flags, unknown instructions
    nodes = parse_nodes(text, filename).nodes
    comments = definition_comments(text)
    stage_of: list[int | None] = []
    current: int | None = None
    for node in nodes:
        if go_lower(node.keyword) == "from":
            current = 0 if current is None else current + 1
        stage_of.append(current)
    stages = [
        {
            "index": s.index,
            "name": s.name,
            "base": s.base,
            "platform": s.platform,
            "description": stage_description(comments, s),
            "start_line": s.line,
            "end_line": s.end_line,
        }
        for s in dockerfile.stages
    ]
    global_args = [
        {"name": p.key, "default": p.value, "line": cmd.line}
        for cmd in dockerfile.meta_args
        if isinstance(cmd, ArgCommand)
        for p in cmd.args
    ]
    if as_json:
        instructions = []
        for node, stage in zip(nodes, stage_of):
            item = _node_json(node)
            item["stage"] = stage
            instructions.append(item)
        directives = dockerfile.directives
        _dump(
            {
                "filename": filename,
                "directives": {"syntax": directives.syntax, "escape": directives.escape, "check": directives.check},
                "warnings": list(dockerfile.warnings),
                "args": global_args,
                "stages": stages,
                "instructions": instructions,
            },
            out,
        )
        return 0
    lines = [f"{filename}: {len(stages)} stage{'s' if len(stages) != 1 else ''}, {len(nodes)} instructions"]
    directives = dockerfile.directives
    for key, value in (("syntax", directives.syntax), ("escape", directives.escape), ("check", directives.check)):
        if value and not (key == "escape" and value == "\\"):
            lines.append(f"directive {key}={value}")
    lines.extend(f"warning: {w}" for w in dockerfile.warnings)
    previous: int | None = -1
    for node, stage in zip(nodes, stage_of):
        if stage != previous:
            if stage is None:
                lines.append("global:")
            else:
                info = stages[stage]
                name = f" {info['name']}" if info["name"] else ""
                lines.append(f"stage {stage}{name} (FROM {info['base']}, lines {info['start_line']}-{info['end_line']}):")
            previous = stage
        span = f"{node.line}" if node.line == node.end_line else f"{node.line}-{node.end_line}"
        lines.append(f"  {span:<8} {node.original.strip()}")
        for heredoc in node.heredocs:
            count = heredoc.content.count("\n")
            mode = "expanded" if heredoc.expand else "literal"
            tabs = ", leading tabs stripped" if heredoc.chomp else ""
            lines.append(f"  {'':<8}   <<{heredoc.name}: {count} line{'s' if count != 1 else ''}, {mode}{tabs}")
    out.write("\n".join(lines) + "\n")
    return 0
