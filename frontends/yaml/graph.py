"""Target and group references: every name resolved, every cycle reported with its full path.

Two kinds of edge join targets: `contexts: {x: "target:NAME"}` (the result of NAME is
read, so NAME must be one concrete target) and `needs: [NAME]` (ordering only, so NAME
may also be a group or a matrix, meaning all of its targets). Both are checked for
cycles together, since either kind of edge orders the build. Walks are iterative.
"""

from __future__ import annotations

from typing import Any

from frontends.yaml.normalize import Edge
from frontends.yaml.schema import did_you_mean
from frontends.yaml.yamlsafe import Loc, fail

__all__ = ["check_group_cycles", "expand_members", "find_cycle", "resolve_edges"]


def expand_members(name: str, targets: Any, groups: dict[str, tuple[str, ...]]) -> list[str]:
    """Concrete targets a name stands for, through nested groups (groups are checked acyclic first)."""
    out: list[str] = []
    stack = [name]
    seen: set[str] = set()
    while stack:
        item = stack.pop()
        if item in targets:
            if item not in out:
                out.append(item)
            continue
        if item in seen:
            continue
        seen.add(item)
        stack.extend(reversed(groups.get(item, ())))
    return out


def _describe_unknown(dep: str, targets: Any, groups: dict[str, tuple[str, ...]], abstract: set[str]) -> str:
    if dep in abstract:
        return f"{dep!r} is an abstract target (its name starts with '_'): it is only for inherits"
    return f"unknown target {dep!r}{did_you_mean(dep, [*targets, *groups])}"


def resolve_edges(
    edges: list[Edge],
    targets: Any,
    groups: dict[str, tuple[str, ...]],
    matrix_groups: dict[str, tuple[str, ...]],
    abstract: set[str],
) -> dict[str, list[tuple[str, Edge]]]:
    """source → [(concrete dependency, the edge that declared it)], names checked."""
    out: dict[str, list[tuple[str, Edge]]] = {name: [] for name in targets}
    for edge in edges:
        dep = edge.dep
        if dep in targets:
            out[edge.source].append((dep, edge))
            continue
        if edge.kind == "context":
            if dep in matrix_groups:
                names = ", ".join(matrix_groups[dep][:4]) + (", …" if len(matrix_groups[dep]) > 4 else "")
                fail(
                    f"target:{dep} is a matrix ({names}): name one of its targets",
                    edge.loc,
                    edge.path,
                )
            if dep in groups:
                fail(
                    f"target:{dep} is a group: a context reads one target",
                    edge.loc,
                    edge.path,
                )
            fail(_describe_unknown(dep, targets, groups, abstract), edge.loc, edge.path)
        if dep in groups:
            for member in expand_members(dep, targets, groups):
                out[edge.source].append((member, edge))
            continue
        fail(_describe_unknown(dep, targets, groups, abstract), edge.loc, edge.path)
    return out


def find_cycle(graph: dict[str, list[tuple[str, Any]]]) -> tuple[list[str], Any] | None:
    """The first cycle met (as a closed path `[a, b, a]`) and the payload of its closing edge."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in graph:
        if state.get(start):
            continue
        path = [start]
        state[start] = 1
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, index = stack[-1]
            edges = graph.get(node, [])
            if index >= len(edges):
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            stack[-1] = (node, index + 1)
            dep, payload = edges[index]
            mark = state.get(dep, 0)
            if mark == 1:
                return path[path.index(dep) :] + [dep], payload
            if mark == 0:
                state[dep] = 1
                path.append(dep)
                stack.append((dep, 0))
    return None


def check_group_cycles(groups: dict[str, tuple[str, ...]], locs: dict[str, tuple[Loc, tuple[Any, ...]]]) -> None:
    graph = {name: [(m, name) for m in members if m in groups] for name, members in groups.items()}
    found = find_cycle(graph)
    if found:
        cycle, owner = found
        loc, path = locs.get(owner, (None, ("groups", owner)))
        fail(f"group cycle: {' -> '.join(cycle)}", loc, path)
