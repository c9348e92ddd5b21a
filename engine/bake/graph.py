"""The target dependency graph: which targets a bake builds, and in what order.

Two kinds of edge: a `target:NAME` context is a data edge (the target reads the other's
result, and its key depends on the other's key); `needs` is an ordering edge only.
Naming a target always brings in its transitive dependencies, so `bake web` builds
what `web` reads first — never a stale copy of it. Stdlib `graphlib` only: networkx
costs a quarter of a no-op bake's budget to import (`shipyard graph` uses it).
"""

from __future__ import annotations

import difflib
import graphlib
from dataclasses import dataclass

from engine.errors import ShipyardError, UsageError
from frontends.yaml.model import BakeFile


class TargetGraphError(ShipyardError):
    """A reference to a missing target, or a cycle between targets."""


@dataclass(frozen=True)
class TargetGraph:
    order: tuple[str, ...]
    """Every target to build, dependencies before the targets that use them."""
    requested: tuple[str, ...]
    """The targets named (directly or through groups), in order."""
    references: dict[str, tuple[str, ...]]
    """Data edges: target → the targets its `target:` contexts read."""
    needs: dict[str, tuple[str, ...]]
    """Ordering edges: target → the targets it runs after."""

    def upstream(self, name: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.references.get(name, ()) + self.needs.get(name, ())))

    def references_closure(self, name: str) -> list[str]:
        """Every target `name` reads from, transitively (data edges), dependencies first."""
        seen: set[str] = set()
        out: list[str] = []

        def visit(n: str) -> None:
            for ref in self.references.get(n, ()):
                if ref not in seen:
                    seen.add(ref)
                    visit(ref)
                    out.append(ref)

        visit(name)
        return out

    def dependents(self, names: set[str]) -> set[str]:
        """Targets that read, transitively, from any of `names` (data edges)."""
        found: set[str] = set()
        for name in self.order:
            if any(ref in names or ref in found for ref in self.references.get(name, ())):
                found.add(name)
        return found


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve_names(bake: BakeFile, names: list[str]) -> list[str]:
    """Targets named directly or through groups; `default` when none is named."""
    names = names or ["default"]
    known = sorted(set(bake.targets) | set(bake.groups))
    for name in names:
        if name not in bake.targets and name not in bake.groups:
            if name == "default":
                raise UsageError("no target named and the build file has no `default` group")
            if name.startswith("_"):
                raise UsageError(f"target {name!r} is abstract (its name starts with _): it is only for inherits")
            raise UsageError(f"no target or group named {name!r}{_suggest(name, known)}")
    return bake.expand(names)


def target_graph(bake: BakeFile, names: list[str]) -> TargetGraph:
    requested = resolve_names(bake, names)
    references: dict[str, tuple[str, ...]] = {}
    needs: dict[str, tuple[str, ...]] = {}
    deps: dict[str, set[str]] = {}
    pending = list(requested)
    while pending:
        name = pending.pop()
        if name in deps:
            continue
        spec = bake.targets[name]
        refs = spec.references()
        for key, value in spec.contexts:
            ref = value[len("target:") :] if value.startswith("target:") else None
            if ref is not None and ref not in bake.targets:
                where = f"{spec.location}: " if spec.location else ""
                raise TargetGraphError(
                    f"{where}target {name}: contexts.{key}: no target named {ref!r}{_suggest(ref, sorted(bake.targets))}"
                )
        for ref in spec.needs:
            if ref not in bake.targets:
                where = f"{spec.location}: " if spec.location else ""
                raise TargetGraphError(f"{where}target {name}: needs: no target named {ref!r}{_suggest(ref, sorted(bake.targets))}")
        references[name] = tuple(dict.fromkeys(refs))
        needs[name] = tuple(dict.fromkeys(spec.needs))
        deps[name] = set(references[name]) | set(needs[name])
        pending.extend(deps[name])
    sorter = graphlib.TopologicalSorter({n: sorted(d) for n, d in sorted(deps.items())})
    try:
        order = tuple(sorter.static_order())
    except graphlib.CycleError as exc:
        cycle = list(exc.args[1])
        cycle.reverse()  # graphlib lists a cycle against the edges' direction
        raise TargetGraphError(f"cycle between targets: {' -> '.join(cycle)}") from None
    return TargetGraph(order, tuple(requested), references, needs)
