"""The target graph: closure over references and needs, order, cycles, dependents, names."""

from __future__ import annotations

import itertools

import pytest

from engine.bake.graph import TargetGraphError, target_graph
from engine.errors import UsageError
from frontends.yaml.model import BakeFile, TargetSpec


def spec(name: str, *refs: str, needs: tuple[str, ...] = ()) -> TargetSpec:
    return TargetSpec(
        name, "/ctx", location=f"build.yaml:{len(name)}:3", contexts=tuple((f"c{i}", f"target:{r}") for i, r in enumerate(refs)), needs=needs
    )


def bakefile(*specs: TargetSpec, groups: dict[str, tuple[str, ...]] | None = None) -> BakeFile:
    return BakeFile(("build.yaml",), {s.name: s for s in specs}, groups or {}, {})


MONO = bakefile(
    spec("base"),
    spec("assets"),
    spec("api", "base"),
    spec("web", "base", "assets"),
    spec("test", "base"),
    spec("migrate", "api", needs=("test",)),
    groups={"default": ("api", "web"), "all": ("default", "migrate")},
)


def test_naming_a_target_brings_in_what_it_reads_dependencies_first() -> None:
    graph = target_graph(MONO, ["web"])
    assert graph.requested == ("web",)
    assert set(graph.order) == {"web", "base", "assets"}
    assert graph.order.index("web") > max(graph.order.index("base"), graph.order.index("assets"))


def test_default_group_nested_groups_and_needs() -> None:
    assert set(target_graph(MONO, []).order) == {"api", "web", "base", "assets"}
    graph = target_graph(MONO, ["all"])
    assert graph.requested == ("api", "web", "migrate")
    assert graph.order.index("test") < graph.order.index("migrate")
    assert graph.references["migrate"] == ("api",) and graph.needs["migrate"] == ("test",)
    assert graph.upstream("migrate") == ("api", "test")


def test_dependents_follow_data_edges_only() -> None:
    graph = target_graph(MONO, ["all"])
    assert graph.dependents({"base"}) == {"api", "web", "test", "migrate"}
    assert graph.dependents({"test"}) == set()  # `needs` orders, it carries no data
    assert graph.references_closure("migrate") == ["base", "api"]


def test_unknown_and_abstract_names_are_usage_errors_with_a_suggestion() -> None:
    with pytest.raises(UsageError, match=r"no target or group named 'wbe' \(did you mean 'web'\?\)"):
        target_graph(MONO, ["wbe"])
    with pytest.raises(UsageError, match="abstract"):
        target_graph(MONO, ["_service"])
    with pytest.raises(UsageError, match="no `default` group"):
        target_graph(bakefile(spec("a")), [])


def test_missing_reference_and_cycles_name_the_location_and_the_full_cycle() -> None:
    with pytest.raises(TargetGraphError, match=r"^build.yaml:3:3: target web: contexts.c0: no target named 'bse' \(did you mean 'base'\?\)"):
        target_graph(bakefile(spec("base"), spec("web", "bse")), ["web"])
    cyclic = bakefile(spec("a", "b"), spec("b", "c"), spec("c", needs=("a",)))
    with pytest.raises(TargetGraphError) as info:
        target_graph(cyclic, ["a"])
    message = str(info.value)
    assert message.startswith("cycle between targets: ")
    path = message.split(": ", 1)[1].split(" -> ")
    assert path[0] == path[-1] and set(path) == {"a", "b", "c"}
    for src, dst in itertools.pairwise(path):  # each arrow is "depends on"
        assert dst in cyclic.targets[src].references() + cyclic.targets[src].needs
