"""`defaults:` and `inherits:` — each target's definition merged from its parents.

bake's rules: parents apply in the order listed and the last one wins; the target's own
keys win over all of them. `defaults` sits under everything, like a `_common` target
every target inherits first. Mappings (`args`, `labels`, `contexts`) merge key by key
(`null` in a child drops an inherited arg or label); every other key is replaced whole.
The recipe keys `dockerfile`, `dockerfile_inline` and `steps` replace each other: a
child that gives `steps` does not keep a parent's `dockerfile`.

Resolution walks an explicit stack (never Python recursion, whatever the chain length)
and reports a cycle with its full path: `inherits cycle: a -> b -> a`.
"""

from __future__ import annotations

from typing import Any

from frontends.yaml.interpolate import Scope, interpolate
from frontends.yaml.schema import did_you_mean
from frontends.yaml.yamlsafe import Loc, YList, YMap, fail

__all__ = ["MAP_KEYS", "RECIPE_KEYS", "merge_target", "parents_of", "resolve_inherits"]

MAP_KEYS = ("args", "labels", "contexts")
RECIPE_KEYS = ("dockerfile", "dockerfile_inline", "steps")


def merge_target(base: YMap, over: YMap) -> YMap:
    """`over` applied on top of `base` (neither is changed)."""
    out = YMap(over.loc)
    drop_recipe = any(key in over for key in RECIPE_KEYS)
    for key in base:
        if drop_recipe and key in RECIPE_KEYS:
            continue
        out.copy_entry(base, key)
    for key, value in over.items():
        old = out.get(key)
        if key in MAP_KEYS and isinstance(old, YMap) and isinstance(value, YMap):
            merged = YMap(value.loc)
            for sub in old:
                merged.copy_entry(old, sub)
            for sub in value:
                merged.pop(sub, None)
                merged.copy_entry(value, sub)
            out.put(key, merged, over.key_loc(key), over.value_loc(key))
        else:
            out.copy_entry(over, key)
    return out


def parents_of(
    body: YMap, name: str, scope: Scope, root: tuple[Any, ...] | None = None
) -> list[tuple[str, Loc, tuple[Any, ...]]]:
    """The `inherits` entries of one definition, interpolated: (parent, location, key path)."""
    if "inherits" not in body:
        return []
    raw = body["inherits"]
    root = ("targets", name) if root is None else root
    out = []
    if isinstance(raw, YList):
        for index, item in enumerate(raw):
            loc = raw.item_loc(index)
            path = (*root, "inherits", index)
            out.append((interpolate(item, scope, loc, path), loc, path))
    else:
        loc = body.value_loc("inherits")
        path = (*root, "inherits")
        out.append((interpolate(raw, scope, loc, path), loc, path))
    return out


def resolve_inherits(
    targets: dict[str, YMap], defaults: YMap | None, scope: Scope, roots: dict[str, tuple[Any, ...]] | None = None
) -> dict[str, YMap]:
    """Every declared target (abstract ones too) with defaults and parents merged in; `inherits` removed."""
    resolved: dict[str, YMap] = {}
    for start, body in targets.items():
        if start in resolved:
            continue
        # Depth-first over parents with an explicit stack; `trail` is the current chain.
        trail: list[str] = [start]
        stack: list[tuple[str, list[tuple[str, Loc, tuple[Any, ...]]], int]] = [
            (start, parents_of(body, start, scope, (roots or {}).get(start)), 0)
        ]
        while stack:
            name, parents, index = stack[-1]
            if index < len(parents):
                stack[-1] = (name, parents, index + 1)
                parent, loc, path = parents[index]
                if parent not in targets:
                    fail(
                        f"unknown target {parent!r} in inherits{did_you_mean(parent, targets)}",
                        loc,
                        path,
                    )
                if parent in trail:
                    cycle = trail[trail.index(parent) :] + [parent]
                    fail(f"inherits cycle: {' -> '.join(cycle)}", loc, path)
                if parent not in resolved:
                    trail.append(parent)
                    stack.append((parent, parents_of(targets[parent], parent, scope, (roots or {}).get(parent)), 0))
                continue
            stack.pop()
            trail.pop()
            merged = defaults if defaults is not None else YMap(targets[name].loc)
            for parent, _, _ in parents:
                merged = merge_target(merged, resolved[parent])
            merged = merge_target(merged, targets[name].without("inherits"))
            merged.loc = targets[name].loc
            resolved[name] = merged
    return resolved
