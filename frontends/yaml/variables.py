"""`variables:` — bake's variable blocks: a default, overridden by the environment, then `--var`.

Precedence, lowest first: `default`; the environment variable named by `env:` (or, when
`env:` is absent, the one with the variable's own name, as bake does); `--var NAME=V`.
A `type: list` variable (a list default) takes `a,b,c` or a JSON array from the
environment or `--var`, and is what a matrix axis can name (`py: ${PY_VERSIONS}`).
`pattern` (a regular expression, searched like JSON Schema's `pattern`) is checked
against every value, whatever its origin, before anything else uses it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from frontends.yaml.model import VariableSpec
from frontends.yaml.schema import did_you_mean
from frontends.yaml.yamlsafe import Loc, Source, YList, YMap, fail, scalar_text

__all__ = ["resolve_variables"]


def _list_from_text(text: str, loc: Loc, path: tuple[Any, ...]) -> list[str]:
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except ValueError:
            fail(f"list value {stripped[:40]!r} is not a JSON array", loc, path)
        if not isinstance(items, list) or not all(
            isinstance(i, (str, int, float)) and not isinstance(i, bool) for i in items
        ):
            fail("list value must be a JSON array of strings or numbers", loc, path)
        return [str(i) for i in items]
    return [part.strip() for part in stripped.split(",") if part.strip()]


def _scalar_or_list(container: YMap, key: str) -> Any:
    value = container[key]
    if isinstance(value, YList):
        return [scalar_text(value, i) for i in range(len(value))]
    return scalar_text(container, key)


def resolve_variables(
    decls: YMap, overrides: Mapping[str, str], environ: Mapping[str, str], cli: Source
) -> dict[str, VariableSpec]:
    """Each declared variable with its final value; unknown `--var` names are an error."""
    for name in overrides:
        if name not in decls:
            fail(
                f"unknown variable {name!r}{did_you_mean(name, decls)}",
                Loc(cli),
                ("--var", name),
            )
    out: dict[str, VariableSpec] = {}
    for name, decl in decls.items():
        path = ("variables", name)
        loc = decls.value_loc(name)
        default: Any = None
        description = env = pattern = kind = ""
        default_loc = loc
        if isinstance(decl, YMap):
            if "default" in decl:
                default = _scalar_or_list(decl, "default")
                default_loc = decl.value_loc("default")
            description = decl.get("description", "") or ""
            env = decl.get("env", "") or ""
            pattern = decl.get("pattern", "") or ""
            kind = decl.get("type", "") or ""
        elif decl is not None:
            default = _scalar_or_list(decls, name)
        if not kind:
            kind = "list" if isinstance(default, list) else "string"
        if kind == "list" and default is not None and not isinstance(default, list):
            fail(
                "default of a list variable must be a list",
                default_loc,
                path + ("default",),
            )
        if kind == "string" and isinstance(default, list):
            fail("a list default needs `type: list`", default_loc, path + ("default",))

        origin = "default"
        value: Any = default if default is not None else ([] if kind == "list" else "")
        env_name = env or name
        if env_name in environ:
            value, origin = environ[env_name], f"environment variable {env_name}"
        if name in overrides:
            value, origin = overrides[name], "--var"
        if kind == "list" and isinstance(value, str):
            value = _list_from_text(value, loc, path)

        if pattern:
            ploc = decl.value_loc("pattern") if isinstance(decl, YMap) else loc
            try:
                compiled = re.compile(pattern)
            except (re.error, RecursionError, OverflowError) as exc:
                fail(f"invalid pattern {pattern!r}: {exc}", ploc, path + ("pattern",))
            for item in value if isinstance(value, list) else [value]:
                if not compiled.search(item):
                    where = default_loc if origin == "default" else loc
                    fail(
                        f"value {item!r} (from {origin}) does not match pattern {pattern!r}",
                        where,
                        path,
                    )
        out[name] = VariableSpec(
            name=name,
            value=tuple(value) if isinstance(value, list) else value,
            default=tuple(default) if isinstance(default, list) else default,
            description=description,
            env=env,
            pattern=pattern,
            type=kind,
        )
    return out
