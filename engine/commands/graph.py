"""`shipyard graph`: the dependency graph between a build file's targets, as text, DOT or JSON.

An edge `web -> base` says web depends on base: `context` edges carry data (web
reads base's result through a `target:` context), `needs` edges only order the
build. Targets at the same level have no path between them and build in parallel.
networkx is imported here only: this command is not on any build's path.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import networkx as nx

    from frontends.yaml.model import BakeFile


def dependency_graph(bake: BakeFile, names: list[str]) -> nx.DiGraph:
    """Targets (all of them, or `names` and their dependencies) and their edges."""
    import networkx as nx

    from engine.bake.graph import target_graph

    graph = target_graph(bake, names) if names else None
    wanted = list(graph.order) if graph is not None else sorted(bake.targets)
    g = nx.DiGraph()
    for name in wanted:
        spec = bake.targets[name]
        kind = "result" if spec.result else "image"
        g.add_node(name, kind=kind, context=spec.context, tags=list(spec.tags), description=spec.description)
    for name in wanted:
        spec = bake.targets[name]
        for context, value in spec.contexts:
            if value.startswith("target:") and value[len("target:") :] in g:
                g.add_edge(name, value[len("target:") :], kind="context", context=context)
        for need in spec.needs:
            if need in g and not g.has_edge(name, need):
                g.add_edge(name, need, kind="needs")
    return g


def _levels(g: nx.DiGraph) -> dict[str, int]:
    import networkx as nx

    levels: dict[str, int] = {}
    for level, names in enumerate(nx.topological_generations(g.reverse(copy=False))):
        for name in names:
            levels[name] = level
    return levels


def render_text(g: nx.DiGraph) -> str:
    import networkx as nx

    levels = _levels(g)
    lines = []
    for name in nx.lexicographical_topological_sort(g.reverse(copy=False)):
        data = g.nodes[name]
        lines.append(f"{name} ({data['kind']}, level {levels[name]})")
        for _, dep, edge in sorted(g.out_edges(name, data=True), key=lambda e: e[1]):
            if edge["kind"] == "context":
                lines.append(f"  reads {dep} (context {edge['context']})")
            else:
                lines.append(f"  after {dep} (needs)")
    return "\n".join(lines) + "\n"


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(g: nx.DiGraph) -> str:
    lines = ["digraph targets {", "  rankdir=BT;"]
    for name in sorted(g.nodes):
        shape = "folder" if g.nodes[name]["kind"] == "result" else "box"
        lines.append(f"  {_dot_id(name)} [shape={shape}];")
    for src, dst, edge in sorted(g.edges(data=True)):
        if edge["kind"] == "context":
            lines.append(f"  {_dot_id(src)} -> {_dot_id(dst)} [label={_dot_id(edge['context'])}];")
        else:
            lines.append(f"  {_dot_id(src)} -> {_dot_id(dst)} [style=dashed, label=\"needs\"];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_json(g: nx.DiGraph) -> str:
    levels = _levels(g)
    data: dict[str, Any] = {
        "targets": [{"name": n, **g.nodes[n], "level": levels[n]} for n in sorted(g.nodes)],
        "edges": [
            {"from": s, "to": d, "kind": e["kind"], **({"context": e["context"]} if e["kind"] == "context" else {})}
            for s, d, e in sorted(g.edges(data=True))
        ],
    }
    return json.dumps(data, indent=2) + "\n"


def run_graph(args: argparse.Namespace) -> int:
    from engine.commands.bake import load_file

    bake = load_file(args)
    g = dependency_graph(bake, list(args.targets))
    render = {"text": render_text, "dot": render_dot, "json": render_json}[args.format]
    sys.stdout.write(render(g))
    return 0
