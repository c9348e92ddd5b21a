"""The part of Go's text/template that `docker … --format` users actually type.

`{{.Field}}`, `{{.Config.Cmd}}`, `{{json .}}`, `{{json .RootFS.Layers}}`, literal text,
`\\t`/`\\n` escapes and the `table` prefix (a header row and tab-aligned columns).
Values print the way Go prints them (`[a b]` for lists, `map[k:v]` for maps,
`<no value>` for a missing key), so a script written against docker reads the same
output here. Anything else is a clear error, not a silent mismatch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import UsageError

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)
_PATH = re.compile(r"^\.(?:[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)?$")


@dataclass(frozen=True)
class _Action:
    json: bool
    path: tuple[str, ...]
    text: str  # the action as written (for table headers)


@dataclass(frozen=True)
class Template:
    parts: tuple[str | _Action, ...]
    is_table: bool

    def render(self, value: Mapping[str, Any]) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            found, item = _lookup(value, part.path)
            if part.json:
                out.append(json.dumps(item if found else None, ensure_ascii=False, separators=(",", ":")))
            else:
                out.append(go_format(item) if found else "<no value>")
        return "".join(out)

    def header(self, names: Mapping[str, str]) -> str:
        """The `table` header: each field's column title (docker's upper-cased names)."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                key = part.path[-1] if part.path else ""
                out.append(names.get(key, key.upper()))
        return "".join(out)


def parse(text: str) -> Template:
    is_table = text.startswith("table")
    if is_table:
        text = text[len("table") :].lstrip(" ")
    text = text.replace("\\t", "\t").replace("\\n", "\n")
    parts: list[str | _Action] = []
    pos = 0
    for match in _ACTION.finditer(text):
        if match.start() > pos:
            parts.append(text[pos : match.start()])
        parts.append(_action(match.group(1), match.group(0)))
        pos = match.end()
    if "{{" in text[pos:]:
        raise UsageError(f"template: unclosed action in {text!r}")
    if pos < len(text):
        parts.append(text[pos:])
    return Template(tuple(parts), is_table)


def _action(body: str, whole: str) -> _Action:
    words = body.split()
    as_json = False
    if words and words[0] == "json":
        as_json = True
        words = words[1:]
    if len(words) != 1 or not _PATH.match(words[0]):
        raise UsageError(f"template: unsupported action {whole!r} (use {{{{.Field}}}} or {{{{json .Field}}}})")
    path = tuple(p for p in words[0].split(".") if p)
    return _Action(as_json, path, whole)


def _lookup(value: Any, path: Sequence[str]) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return False, None
        value = value[key]
    return True, value


def go_format(value: Any) -> str:
    """How Go's fmt prints a decoded JSON value with %v."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{go_format(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_format(v) for v in value) + "]"
    return str(value)
