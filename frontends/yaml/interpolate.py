"""`${VAR}` interpolation in build files: one pass, no recursion, bounded output.

Syntax (compose's, with bake's matrix scope):
- `${NAME}`: a matrix key of the current expansion, else a declared variable;
- `${NAME:-default}` (unset *or empty*) and `${NAME-default}` (unset): the default is
  literal text up to the first `}` — defaults do not nest;
- `${key.field}` for a matrix value that is a mapping, `${target.name}` and
  `${target.short}` (the name as declared, before matrix expansion);
- `$$` is a literal `$` (so `run: echo $${HOME}` reaches the shell as `${HOME}`); a `$`
  followed by anything else stays as it is (`$HOME` needs no escaping).

A substituted value is never scanned again, so a variable holding `${OTHER}` yields
that text, and there is no way to build exponential expansions out of references to
references. Each result is capped at `MAX_VALUE_BYTES` and the whole load at
`MAX_TOTAL_BYTES`, checked *before* concatenating (the shape of the ARG-chain and
brace-expansion bombs in reliability.md).
"""

from __future__ import annotations

import re
from typing import Any

from frontends.yaml.yamlsafe import Loc, YList, YMap, fail

__all__ = [
    "MAX_TOTAL_BYTES",
    "MAX_VALUE_BYTES",
    "Scope",
    "interpolate",
    "interpolate_tree",
]

MAX_VALUE_BYTES = 1 << 20
MAX_TOTAL_BYTES = 64 << 20

_REF = re.compile(r"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)(?:(:?-)(.*))?", re.DOTALL)


class Scope:
    """What `${…}` can name: variables, the matrix values, the target's names; plus a byte budget."""

    __slots__ = ("budget", "matrix", "target_name", "target_short", "variables")

    def __init__(
        self,
        variables: dict[str, Any],
        matrix: dict[str, Any] | None = None,
        target_name: str = "",
        target_short: str = "",
        budget: list[int] | None = None,
    ) -> None:
        self.variables = variables
        self.matrix = matrix or {}
        self.target_name = target_name
        self.target_short = target_short
        self.budget = budget if budget is not None else [MAX_TOTAL_BYTES]

    def with_target(self, matrix: dict[str, Any], name: str, short: str) -> Scope:
        return Scope(self.variables, matrix, name, short, self.budget)

    def names(self) -> list[str]:
        out = list(self.matrix) + list(self.variables)
        if self.target_name:
            out += ["target.name", "target.short"]
        return out

    def lookup(self, name: str) -> tuple[bool, Any]:
        head, dot, field = name.partition(".")
        if dot:
            if head == "target" and self.target_name:
                if field == "name":
                    return True, self.target_name
                if field == "short":
                    return True, self.target_short
                return False, None
            value = self.matrix.get(head)
            if isinstance(value, dict) and field in value:
                return True, value[field]
            return False, None
        if name in self.matrix:
            return True, self.matrix[name]
        if name in self.variables:
            return True, self.variables[name]
        return False, None


def interpolate(text: str, scope: Scope, loc: Loc, path: tuple[Any, ...], allow_list: bool = False) -> Any:
    """`text` with every `${…}` replaced; a whole-string `${LIST}` gives the list when `allow_list`."""
    if "$" not in text:
        return text
    out: list[str] = []
    size = 0
    i = 0
    n = len(text)
    while i < n:
        j = text.find("$", i)
        if j < 0:
            piece = text[i:]
            i = n
        elif j + 1 < n and text[j + 1] == "$":
            piece = text[i:j] + "$"
            i = j + 2
        elif j + 1 < n and text[j + 1] == "{":
            end = text.find("}", j + 2)
            if end < 0:
                fail(f"unterminated ${{ in {_short(text)!r}", loc, path)
            inner = text[j + 2 : end]
            m = _REF.fullmatch(inner)
            if m is None:
                fail(
                    f"invalid reference ${{{_short(inner)}}}: want ${{NAME}}, ${{NAME:-default}} or $${{…}} for a literal",
                    loc,
                    path,
                )
            name, op, default = m.group(1), m.group(2), m.group(3)
            found, value = scope.lookup(name)
            if isinstance(value, list):
                if allow_list and j == 0 and end == n - 1:
                    return value
                fail(
                    f"list variable {name} can only be used as a whole matrix axis (`axis: ${{{name}}}`)",
                    loc,
                    path,
                )
            if isinstance(value, dict):
                fail(
                    f"matrix value {name} is a mapping: name one of its fields, e.g. ${{{name}.{next(iter(value), 'key')}}}",
                    loc,
                    path,
                )
            if not found or (op == ":-" and value == ""):
                if op is None:
                    from frontends.yaml.schema import did_you_mean

                    hint = did_you_mean(name, scope.names())
                    fail(
                        f"unknown variable {name!r} in ${{{name}}}{hint} (write $${{{name}}} for a literal)",
                        loc,
                        path,
                    )
                value = default
            piece = text[i:j] + str(value)
            i = end + 1
        else:
            piece = text[i : j + 1]
            i = j + 1
        size += len(piece)
        if size > MAX_VALUE_BYTES:
            fail(f"interpolated value exceeds {MAX_VALUE_BYTES} bytes", loc, path)
        out.append(piece)
    scope.budget[0] -= size
    if scope.budget[0] < 0:
        fail(
            f"interpolation produces more than {MAX_TOTAL_BYTES} bytes in all",
            loc,
            path,
        )
    return "".join(out)


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def interpolate_tree(value: Any, scope: Scope, loc: Loc, path: tuple[Any, ...]) -> Any:
    """Interpolate every string value (not keys) of a YAML value; containers are copied, locations kept."""
    if isinstance(value, str):
        return interpolate(value, scope, loc, path)
    if isinstance(value, YMap):
        out = YMap(value.loc)
        for key, item in value.items():
            vloc = value.value_loc(key)
            out.put(
                key,
                interpolate_tree(item, scope, vloc, path + (key,)),
                value.key_loc(key),
                vloc,
                value.raw.get(key),
            )
        return out
    if isinstance(value, YList):
        lst = YList(value.loc)
        for index, item in enumerate(value):
            iloc = value.item_loc(index)
            lst.add(
                interpolate_tree(item, scope, iloc, path + (index,)),
                iloc,
                value.raw.get(index),
            )
        return lst
    return value
