"""`--set TARGET.KEY=VALUE`: bake's command-line overrides of resolved targets.

`TARGET` is a target name or a glob over the concrete names (`*`, `test-*`); `KEY` is a
target key (bake's spellings too, and `platform` for `platforms`), with a sub-key for
mappings (`*.args.PY=3.12`, `api.labels.org.example.x=1`). For list keys `=` replaces
the list and `+=` appends (comma-separated for platforms, tags, needs, entitlements).
Values are literal (no interpolation) and relative paths in them are relative to the
working directory, as on any command line. Overrides apply after inherits, matrix and
interpolation and before normalization, so they are checked like everything else.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from frontends.yaml.inherits import MAP_KEYS, RECIPE_KEYS
from frontends.yaml.schema import TARGET_ALIASES, did_you_mean
from frontends.yaml.yamlsafe import Loc, Source, YList, YMap, fail

__all__ = ["Override", "apply_overrides", "parse_overrides"]

_LIST_KEYS = (
    "tags",
    "platforms",
    "needs",
    "outputs",
    "cache_from",
    "cache_to",
    "secrets",
    "ssh",
    "entitlements",
    "no_cache_filter",
)
_SPLIT_KEYS = ("platforms", "tags", "needs", "entitlements", "no_cache_filter", "ssh")
_STRING_KEYS = (
    "description",
    "context",
    "dockerfile",
    "dockerfile_inline",
    "target",
    "result",
    "network",
)
_BOOL_KEYS = ("no_cache",)
_SET_ALIASES = {**TARGET_ALIASES, "platform": "platforms", "tag": "tags"}
KEYS = (*_LIST_KEYS, *_STRING_KEYS, *_BOOL_KEYS, *MAP_KEYS)


class Override:
    __slots__ = ("append", "key", "pattern", "sub", "text", "value")

    def __init__(self, text: str, pattern: str, key: str, sub: str, value: str, append: bool) -> None:
        self.text = text
        self.pattern = pattern
        self.key = key
        self.sub = sub
        self.value = value
        self.append = append


def parse_overrides(sets: list[str], source: Source) -> list[Override]:
    out = []
    for text in sets:
        loc = Loc(source)
        left, sep, value = text.partition("=")
        if not sep:
            fail(f"--set {text!r}: want TARGET.KEY=VALUE", loc)
        append = left.endswith("+")
        if append:
            left = left[:-1]
        parts = left.split(".")
        for i in range(1, len(parts)):
            key = _SET_ALIASES.get(parts[i], parts[i])
            if key in KEYS:
                pattern = ".".join(parts[:i])
                sub = ".".join(parts[i + 1 :])
                break
        else:
            last = parts[-1] if len(parts) > 1 else left
            fail(
                f"--set {text!r}: want TARGET.KEY=VALUE with KEY one of {', '.join(sorted(KEYS))}{did_you_mean(last, KEYS)}",
                loc,
            )
        if key in MAP_KEYS and not sub:
            fail(
                f"--set {text!r}: name the {key} entry ({pattern}.{key}.NAME=VALUE)",
                loc,
            )
        if key not in MAP_KEYS and sub:
            fail(f"--set {text!r}: {key} has no sub-keys", loc)
        if append and key not in _LIST_KEYS:
            fail(f"--set {text!r}: += only appends to list keys", loc)
        if not pattern:
            fail(f"--set {text!r}: name a target (or a glob such as *)", loc)
        out.append(Override(text, pattern, key, sub, value, append))
    return out


def _value(o: Override, loc: Loc) -> Any:
    if o.key in _BOOL_KEYS:
        lowered = o.value.lower()
        if lowered in ("1", "true", "yes"):
            return True
        if lowered in ("0", "false", "no"):
            return False
        fail(f"--set {o.text!r}: {o.key} takes true or false", loc)
    if o.key in _LIST_KEYS:
        items = [v.strip() for v in o.value.split(",")] if o.key in _SPLIT_KEYS else [o.value]
        lst = YList(loc)
        for item in items:
            if item:
                lst.add(item, loc)
        return lst
    return o.value


def apply_overrides(bodies: dict[str, YMap], overrides: list[Override], source: Source) -> dict[str, YMap]:
    """The bodies with every override applied (in order); bodies named by no override are unchanged."""
    out = dict(bodies)
    loc = Loc(source)
    for o in overrides:
        names = [name for name in out if fnmatch.fnmatchcase(name, o.pattern)]
        if not names:
            fail(
                f"--set {o.text!r}: no target matches {o.pattern!r}{did_you_mean(o.pattern, out)}",
                loc,
            )
        for name in names:
            body = out[name]
            new = YMap(body.loc)
            for key in body:
                if o.key in RECIPE_KEYS and key in RECIPE_KEYS and key != o.key:
                    continue
                new.copy_entry(body, key)
            value = _value(o, loc)
            if o.key in MAP_KEYS:
                old = new.get(o.key)
                merged = YMap(loc)
                if isinstance(old, YMap):
                    for sub in old:
                        merged.copy_entry(old, sub)
                merged.pop(o.sub, None)
                merged.put(o.sub, value, loc, loc)
                value = merged
            elif o.append and isinstance(new.get(o.key), YList):
                old = new[o.key]
                merged_list = YList(old.loc)
                for index, item in enumerate(old):
                    merged_list.add(item, old.item_loc(index), old.raw.get(index))
                for item in value:
                    merged_list.add(item, loc)
                value = merged_list
            new.pop(o.key, None)
            new.put(o.key, value, loc, loc)
            out[name] = new
    return out
