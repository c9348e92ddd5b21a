"""`matrix:` — one declared target forked into the cartesian product of its axes (bake's rule).

An axis is a list of values (scalars, or mappings read as `${axis.field}`) or a list
variable written as the whole value (`py: ${PY_VERSIONS}`). `name` is required and is
interpolated per expansion (matrix values and variables only: `${target.*}` is what is
being defined). The size of the product is checked before anything is built.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from frontends.yaml.interpolate import Scope, interpolate
from frontends.yaml.yamlsafe import YMap, fail, scalar_text

__all__ = ["MAX_EXPANSIONS", "NAME_RE", "Expansion", "expand_matrix"]

MAX_EXPANSIONS = 1000
"""Expansions of one matrix target."""
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class Expansion:
    __slots__ = ("name", "values")

    def __init__(self, name: str, values: dict[str, Any]) -> None:
        self.name = name
        self.values = values


def _axis_values(matrix: YMap, axis: str, scope: Scope, path: tuple[Any, ...]) -> list[Any]:
    raw = matrix[axis]
    loc = matrix.value_loc(axis)
    if isinstance(raw, str):
        value = interpolate(raw, scope, loc, path + (axis,), allow_list=True)
        if not isinstance(value, list):
            fail(
                f"matrix axis {axis!r} must be a list or a list variable, got {value!r}",
                loc,
                path + (axis,),
            )
        if not value:
            fail(f"matrix axis {axis!r} is empty", loc, path + (axis,))
        return list(value)
    out: list[Any] = []
    for index, item in enumerate(raw):
        if isinstance(item, YMap):
            out.append({key: scalar_text(item, key) for key in item})
        else:
            out.append(scalar_text(raw, index))
    if not out:
        fail(f"matrix axis {axis!r} is empty", loc, path + (axis,))
    return out


def expand_matrix(name: str, body: YMap, scope: Scope, path: tuple[Any, ...] | None = None) -> list[Expansion]:
    """The concrete names (and matrix values) a declared target stands for."""
    path = ("targets", name) if path is None else path
    if "matrix" not in body:
        if "name" in body:
            fail(
                "`name` is only used with `matrix`",
                body.key_loc("name"),
                path + ("name",),
            )
        return [Expansion(name, {})]
    matrix = body["matrix"]
    if "name" not in body:
        fail(
            f'a matrix target needs a `name` template to make its names unique, e.g. name: "{name}-${{{next(iter(matrix), "x")}}}"',
            body.key_loc("matrix"),
            path + ("matrix",),
        )
    axes = {axis: _axis_values(matrix, axis, scope, path + ("matrix",)) for axis in matrix}
    total = 1
    for values in axes.values():
        total *= len(values)
        if total > MAX_EXPANSIONS:
            fail(
                f"matrix expands to more than {MAX_EXPANSIONS} targets",
                body.key_loc("matrix"),
                path + ("matrix",),
            )
    template = body["name"]
    tloc = body.value_loc("name")
    out: list[Expansion] = []
    seen: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo))
        concrete = interpolate(template, scope.with_target(values, "", ""), tloc, path + ("name",))
        if not NAME_RE.fullmatch(concrete):
            fail(
                f"matrix name {concrete!r} is not a valid target name (letters, digits, '_', '.', '-')",
                tloc,
                path + ("name",),
            )
        if concrete in seen:
            fail(
                f"matrix names collide: {concrete!r} for {seen[concrete]} and {values}; use every axis in `name`",
                tloc,
                path + ("name",),
            )
        seen[concrete] = values
        out.append(Expansion(concrete, values))
    return out
