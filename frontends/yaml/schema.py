"""Checks a build file against the published JSON Schema, with located, readable errors.

`build.schema.json` (draft 2020-12) is the source of truth for the file's shape: editors
read it through yaml-language-server, and this module reads the same file. The
validator here implements exactly the keywords that schema uses (a test walks the schema
and fails on any other, and a differential test compares verdicts with the `jsonschema`
package) instead of importing `jsonschema` at run time: that package costs ~100 ms to
import, and every `bake` would pay it. Owning the validator also lets each error say
where it is (`file:line:col`, key path), suggest the key the user probably meant, and
pick the one relevant branch of a `oneOf` (a step with an unknown action reads
"expected one of the keys from, run, copy…", not a list of thirteen failures).
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

from frontends.yaml.yamlsafe import Loc, YList, YMap, fail

__all__ = [
    "SCHEMA_PATH",
    "SUPPORTED_KEYWORDS",
    "TARGET_ALIASES",
    "canonicalize_keys",
    "did_you_mean",
    "load_schema",
    "validate",
]

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "build.schema.json")

TARGET_ALIASES = {
    "cache-from": "cache_from",
    "cache-to": "cache_to",
    "dockerfile-inline": "dockerfile_inline",
    "no-cache": "no_cache",
    "no-cache-filter": "no_cache_filter",
    "additional_contexts": "contexts",
    "output": "outputs",
    "secret": "secrets",
}
"""bake's hyphenated (and singular) attribute names and compose's `additional_contexts`."""

SUPPORTED_KEYWORDS = frozenset(
    {
        "$schema", "$id", "$ref", "$defs", "title", "description", "default", "examples",
        "type", "enum", "const", "pattern", "minLength", "minimum", "minItems", "items",
        "minProperties", "properties", "patternProperties", "additionalProperties",
        "propertyNames", "required", "oneOf", "anyOf",
    }
)  # fmt: skip

_schema: dict[str, Any] | None = None
_patterns: dict[str, re.Pattern[str]] = {}


def load_schema() -> dict[str, Any]:
    global _schema
    if _schema is None:
        with open(SCHEMA_PATH, encoding="utf-8") as f:
            _schema = json.load(f)
    return _schema


def did_you_mean(word: str, options: Any) -> str:
    """` (did you mean x?)` when one option is close to `word`, else ""."""
    if not isinstance(word, str) or len(word) > 80:
        return ""
    import difflib

    names = [o for o in options if isinstance(o, str)]
    match = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    if not match:
        lowered = {n.lower().replace("-", "_"): n for n in names}
        hit = lowered.get(word.lower().replace("-", "_"))
        return f" (did you mean {hit}?)" if hit else ""
    return f" (did you mean {match[0]}?)"


_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _is_type(value: Any, name: str) -> bool:
    actual = _type_of(value)
    if name == "number":
        return actual in ("integer", "number")
    if name == "integer" and actual == "number":
        return math.isfinite(value) and float(value).is_integer()
    return actual == name


def _words(types: list[str]) -> str:
    words = [_TYPE_WORDS.get(t, t) for t in types]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


class _Error:
    __slots__ = ("loc", "path", "reason")

    def __init__(self, reason: str, loc: Loc, path: tuple[Any, ...]) -> None:
        self.reason = reason
        self.loc = loc
        self.path = path


def _child_loc(container: Any, key: Any, default: Loc) -> Loc:
    if isinstance(container, YMap):
        return container.value_loc(key)
    if isinstance(container, YList):
        return container.item_loc(key)
    return default


class _Validator:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def resolve(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"unsupported $ref {ref}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node  # type: ignore[no-any-return]

    def deref(self, schema: Any) -> Any:
        for _ in range(32):
            if not (isinstance(schema, dict) and "$ref" in schema and set(schema) <= {"$ref", "description", "title"}):
                break
            schema = self.resolve(schema["$ref"])
        return schema

    def types_of(self, schema: Any) -> list[str] | None:
        """The JSON types a schema can accept (None: any)."""
        schema = self.deref(schema)
        if not isinstance(schema, dict):
            return None
        if "type" in schema:
            t = schema["type"]
            return [t] if isinstance(t, str) else list(t)
        if "const" in schema:
            return [_type_of(schema["const"])]
        if "enum" in schema:
            return sorted({_type_of(v) for v in schema["enum"]})
        for key in ("oneOf", "anyOf"):
            if key in schema:
                out: list[str] = []
                for branch in schema[key]:
                    bt = self.types_of(branch)
                    if bt is None:
                        return None
                    out.extend(t for t in bt if t not in out)
                return out
        return None

    def check(self, value: Any, schema: Any, path: tuple[Any, ...], loc: Loc) -> _Error | None:
        if schema is True or schema == {}:
            return None
        if schema is False:
            return _Error("not allowed here", loc, path)
        if "$ref" in schema:
            err = self.check(value, self.resolve(schema["$ref"]), path, loc)
            if err:
                return err
        if "type" in schema:
            types = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
            if not any(_is_type(value, t) for t in types):
                return _Error(
                    f"expected {_words(types)}, got {_TYPE_WORDS.get(_type_of(value), _type_of(value))}",
                    loc,
                    path,
                )
        if "const" in schema and not _json_equal(value, schema["const"]):
            return _Error(f"expected {json.dumps(schema['const'])}, got {_show(value)}", loc, path)
        if "enum" in schema and not any(_json_equal(value, v) for v in schema["enum"]):
            options = ", ".join(str(v) for v in schema["enum"])
            return _Error(
                f"{_show(value)} is not one of {options}{did_you_mean(value, schema['enum'])}",
                loc,
                path,
            )
        if isinstance(value, str):
            if "minLength" in schema and len(value) < schema["minLength"]:
                return _Error(
                    "must not be empty" if schema["minLength"] == 1 else f"shorter than {schema['minLength']}",
                    loc,
                    path,
                )
            if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
                return _Error(f"{_show(value)} does not match {schema['pattern']}", loc, path)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if numeric and "minimum" in schema and value < schema["minimum"]:
            return _Error(f"must be at least {schema['minimum']}", loc, path)
        if isinstance(value, list):
            if "minItems" in schema and len(value) < schema["minItems"]:
                return _Error(
                    "must not be empty" if schema["minItems"] == 1 else f"needs at least {schema['minItems']} items",
                    loc,
                    path,
                )
            if "items" in schema:
                for index, item in enumerate(value):
                    err = self.check(
                        item,
                        schema["items"],
                        path + (index,),
                        _child_loc(value, index, loc),
                    )
                    if err:
                        return err
        if isinstance(value, dict):
            err = self.check_object(value, schema, path, loc)
            if err:
                return err
        if "oneOf" in schema:
            err = self.check_alternatives(value, schema["oneOf"], path, loc, exactly_one=True)
            if err:
                return err
        if "anyOf" in schema:
            err = self.check_alternatives(value, schema["anyOf"], path, loc, exactly_one=False)
            if err:
                return err
        return None

    def check_object(
        self,
        value: dict[str, Any],
        schema: dict[str, Any],
        path: tuple[Any, ...],
        loc: Loc,
    ) -> _Error | None:
        for key in schema.get("required", ()):
            if key not in value:
                return _Error(f"missing required key {key!r}", loc, path)
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            return _Error("must not be empty", loc, path)
        props = schema.get("properties", {})
        patterns = schema.get("patternProperties", {})
        additional = schema.get("additionalProperties", True)
        names = schema.get("propertyNames")
        for key, item in value.items():
            kloc = value.key_loc(key) if isinstance(value, YMap) else loc
            if names is not None:
                err = self.check(key, names, path + (key,), kloc)
                if err:
                    if "pattern" in self.deref(names):
                        err.reason = f"invalid name {key!r}: must match {self.deref(names)['pattern']}"
                    return err
            iloc = _child_loc(value, key, loc)
            matched = False
            if key in props:
                matched = True
                err = self.check(item, props[key], path + (key,), iloc)
                if err:
                    return err
            for pattern, sub in patterns.items():
                if _pattern(pattern).search(key):
                    matched = True
                    err = self.check(item, sub, path + (key,), iloc)
                    if err:
                        return err
            if not matched:
                if additional is False:
                    return _Error(
                        f"unknown key {key!r}{did_you_mean(key, props)}",
                        kloc,
                        path + (key,),
                    )
                err = self.check(item, additional, path + (key,), iloc)
                if err:
                    return err
        return None

    def check_alternatives(
        self,
        value: Any,
        branches: list[Any],
        path: tuple[Any, ...],
        loc: Loc,
        exactly_one: bool,
    ) -> _Error | None:
        errors: list[tuple[Any, _Error]] = []
        valid = 0
        for branch in branches:
            err = self.check(value, branch, path, loc)
            if err is None:
                valid += 1
                if not exactly_one:
                    return None
            else:
                errors.append((branch, err))
        if valid == 1 or (valid and not exactly_one):
            return None
        if valid > 1:
            return _Error("ambiguous: matches more than one alternative", loc, path)
        # No branch fits: report the one the user evidently meant.
        kind = _type_of(value)
        typed = [
            (b, e)
            for b, e in errors
            if (
                self.types_of(b) is None
                or kind in self.types_of(b)
                or (kind == "integer" and "number" in (self.types_of(b) or ()))
            )
        ]
        if not typed:
            wanted: list[str] = []
            for branch, _ in errors:
                for t in self.types_of(branch) or ():
                    if t not in wanted:
                        wanted.append(t)
            return _Error(
                f"expected {_words(wanted)}, got {_TYPE_WORDS.get(kind, kind)}",
                loc,
                path,
            )
        if len(typed) == 1 or not isinstance(value, dict):
            return typed[0][1]
        required = [(b, e, self.deref(b).get("required", [])) for b, e in typed]
        meant = [(b, e) for b, e, req in required if req and all(k in value for k in req)]
        if meant:
            return meant[0][1]
        keys = [req[0] for _, _, req in required if req]
        if keys and len(keys) == len(required):
            unknown = [k for k in value if k not in keys]
            hint = did_you_mean(unknown[0], keys) if unknown else ""
            return _Error(f"expected one of the keys {', '.join(keys)}{hint}", loc, path)
        return typed[0][1]


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return json.dumps(value)


def _pattern(text: str) -> re.Pattern[str]:
    compiled = _patterns.get(text)
    if compiled is None:
        compiled = _patterns[text] = re.compile(text)
    return compiled


def validate(value: Any, loc: Loc, pointer: str = "", path: tuple[Any, ...] = ()) -> None:
    """Raise BuildFileError for the first place `value` breaks the schema (or the sub-schema at `pointer`)."""
    root = load_schema()
    validator = _Validator(root)
    schema = validator.resolve(pointer) if pointer else root
    err = validator.check(value, schema, path, loc)
    if err is not None:
        fail(err.reason, err.loc, err.path)


def canonicalize_keys(target: YMap, path: tuple[Any, ...]) -> YMap:
    """bake/compose spellings (`cache-from`, `additional_contexts`) renamed to the canonical key."""
    if not any(key in TARGET_ALIASES for key in target):
        return target
    out = YMap(target.loc)
    for key in target:
        canonical = TARGET_ALIASES.get(key, key)
        if canonical in out:
            first = next(k for k in target if TARGET_ALIASES.get(k, k) == canonical)
            fail(
                f"{key!r} and {first!r} are the same key; give one",
                target.key_loc(key),
                path + (key,),
            )
        out.copy_entry(target, key, canonical)
    return out
