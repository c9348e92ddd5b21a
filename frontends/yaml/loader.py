"""Build files (`build.yaml`, compose files, bake JSON) to one resolved `BakeFile`.

The pipeline, each stage in its own module, every problem a located `BuildFileError`
raised before anything is built:

1. read each file (size cap) and parse it (`yamlsafe`: duplicate keys, alias bombs);
   a compose file or bake JSON is first translated into the build-file shape
   (`compose`, `bakejson`);
2. check it against `build.schema.json` (`schema`), then follow its `include` globs
   (fragments resolve paths from their own directory; a target defined twice is an
   error naming both places; an include cycle is an error);
3. resolve `variables` (default < environment < `--var`, `pattern` checked);
4. apply `defaults` and `inherits` (`inherits`), expand `matrix` (`matrix`),
   interpolate each concrete target (`interpolate`), apply `--set` (`overrides`);
5. check each target again against the schema, normalize it (`normalize`, `steps`),
   and check every `target:`/`needs` reference and group member, and cycles (`graph`).

Several `-f` files merge like bake's: a later file's target, variable or `defaults`
entry overrides an earlier one key by key (mappings merge), and group members add up.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from frontends.yaml.errors import BuildFileError
from frontends.yaml.graph import check_group_cycles, find_cycle, resolve_edges
from frontends.yaml.inherits import RECIPE_KEYS, merge_target, resolve_inherits
from frontends.yaml.interpolate import Scope, interpolate, interpolate_tree
from frontends.yaml.matrix import expand_matrix
from frontends.yaml.model import BakeFile, TargetSpec
from frontends.yaml.normalize import Edge, normalize_target
from frontends.yaml.overrides import apply_overrides, parse_overrides
from frontends.yaml.present import list_entries, print_resolved
from frontends.yaml.schema import canonicalize_keys, validate
from frontends.yaml.variables import resolve_variables
from frontends.yaml.yamlsafe import (
    Loc,
    Source,
    YList,
    YMap,
    fail,
    parse_yaml,
    read_text,
)

__all__ = [
    "DEFAULT_FILES",
    "BuildFileError",
    "find_build_files",
    "list_entries",
    "load_bake",
    "print_resolved",
]

DEFAULT_FILES = ("build.yaml", "build.yml", "shipyard.yaml", "shipyard.yml")
MAX_FILES = 256
MAX_TARGETS = 10_000


def _display(path: str, cwd: str) -> str:
    rel = os.path.relpath(path, cwd)
    return path if rel.startswith("..") else rel


def find_build_files(paths: list[str] | None, cwd: str) -> list[str]:
    """The files to load, absolute: those named, else the first default name found in `cwd`."""
    if paths:
        return [os.path.normpath(os.path.join(cwd, p)) for p in paths]
    for name in DEFAULT_FILES:
        candidate = os.path.join(cwd, name)
        if os.path.isfile(candidate):
            return [candidate]
    raise BuildFileError(
        f"no build file: looked for {', '.join(DEFAULT_FILES)} (or name one with -f)",
        file=cwd,
    )


class _Loader:
    def __init__(self, cwd: str, environ: Mapping[str, str], variables: Mapping[str, str]) -> None:
        self.cwd = cwd
        self.environ = environ
        self.cli_variables = variables
        self.files: list[str] = []
        self.loaded: set[str] = set()
        self.variables = YMap(Loc(Source("", "", cwd)))
        self.var_owner: dict[str, int] = {}
        self.targets = YMap(Loc(Source("", "", cwd)))
        self.target_owner: dict[str, int] = {}
        self.defaults: YMap | None = None
        self.groups: dict[str, list[tuple[str, Loc, tuple[Any, ...]]]] = {}
        self.group_locs: dict[str, tuple[Loc, tuple[Any, ...]]] = {}
        self.group_descriptions: dict[str, str] = {}
        self.main_index = 0
        self.roots: dict[str, tuple[Any, ...]] = {}
        """Target → the key path errors name it by (`services.app.build` for compose)."""
        self.vars_to_environment = False
        """A compose file reads `--var` as environment: unknown names are then not errors."""

    def source(self, path: str) -> Source:
        return Source(path, _display(path, self.cwd), os.path.dirname(path))

    # -- reading ---------------------------------------------------------------

    def load_main(self, path: str, index: int) -> None:
        self.main_index = index
        source = self.source(path)
        lowered = path.lower()
        if lowered.endswith(".hcl"):
            fail(
                "HCL bake files are not supported: convert with `docker buildx bake --print > docker-bake.json`",
                Loc(source),
            )
        doc = parse_yaml(read_text(source), source)
        if lowered.endswith(".json"):
            from frontends.yaml.bakejson import convert_bake_json

            doc = convert_bake_json(doc, source)
            for name in doc.get("targets", ()):
                self.roots.setdefault(name, ("target", name))
        elif isinstance(doc, YMap) and "services" in doc and "targets" not in doc:
            from frontends.yaml.compose import convert_compose

            doc = convert_compose(doc, source, self.environ, self.cli_variables)
            self.vars_to_environment = True
            for name in doc["targets"]:
                self.roots.setdefault(name, ("services", name, "build"))
        else:
            self.check_document(doc, source, main=True)
        self.walk(doc, source)

    def check_document(self, doc: Any, source: Source, main: bool) -> None:
        if doc is None:
            fail("empty build file", Loc(source, 1, 1))
        if not isinstance(doc, YMap):
            fail(
                "a build file is a mapping (version, targets, groups, …)",
                Loc(source, 1, 1),
            )
        if main and "version" not in doc:
            fail(
                "missing `version: 1` (the build file schema version)",
                doc.loc,
                ("version",),
            )
        if "version" in doc and doc["version"] != 1:
            fail(
                f"unsupported version {doc['version']!r}: this shipyard reads version 1",
                doc.value_loc("version"),
                ("version",),
            )
        if not main and "defaults" in doc:
            fail(
                "`defaults` belongs in the main build file, not in an included fragment",
                doc.key_loc("defaults"),
                ("defaults",),
            )
        validate(doc, doc.loc)

    def walk(self, doc: YMap, source: Source) -> None:
        """Merge `doc`, then its includes depth first (each fragment before the next)."""
        stack: list[tuple[YMap, Source, tuple[str, ...], bool]] = [(doc, source, (source.path,), True)]
        while stack:
            current, src, chain, main = stack.pop()
            if len(self.files) >= MAX_FILES:
                fail(f"more than {MAX_FILES} build files", Loc(src))
            self.files.append(src.path)
            self.loaded.add(os.path.realpath(src.path))  # `loaded`: merged or scheduled to be
            self.merge(current, src, main)
            children: list[tuple[YMap, Source, tuple[str, ...], bool]] = []
            for pattern, loc, path in self.includes(current):
                for fragment in self.expand_include(pattern, src, loc, path):
                    real = os.path.realpath(fragment)
                    if real in (os.path.realpath(p) for p in chain):
                        names = [_display(p, self.cwd) for p in chain] + [_display(fragment, self.cwd)]
                        fail(f"include cycle: {' -> '.join(names)}", loc, path)
                    if real in self.loaded:
                        continue
                    self.loaded.add(real)
                    fsrc = self.source(fragment)
                    fdoc = parse_yaml(read_text(fsrc), fsrc)
                    self.check_document(fdoc, fsrc, main=False)
                    children.append((fdoc, fsrc, chain + (fragment,), False))
            stack.extend(reversed(children))

    def includes(self, doc: YMap) -> list[tuple[str, Loc, tuple[Any, ...]]]:
        raw = doc.get("include")
        if raw is None:
            return []
        if isinstance(raw, YList):
            return [(item, raw.item_loc(i), ("include", i)) for i, item in enumerate(raw)]
        return [(raw, doc.value_loc("include"), ("include",))]

    def expand_include(self, pattern: str, src: Source, loc: Loc, path: tuple[Any, ...]) -> list[str]:
        if "${" in pattern:
            fail("include paths cannot use variables: they are read before variables are resolved", loc, path)
        full = os.path.join(src.base, pattern)
        if glob.has_magic(pattern):
            return sorted(p for p in glob.glob(full, recursive=True) if os.path.isfile(p))
        if not os.path.isfile(full):
            fail(f"included file {pattern!r} not found", loc, path)
        return [os.path.normpath(full)]

    # -- merging ---------------------------------------------------------------

    def merge(self, doc: YMap, src: Source, main: bool) -> None:
        later_main = main and self.main_index > 0
        variables = doc.get("variables")
        if isinstance(variables, YMap):
            for name in variables:
                if name in self.variables and not (later_main and self.var_owner[name] < self.main_index):
                    first = self.variables.key_loc(name)
                    fail(
                        f"variable {name!r} is defined twice: first at {first}",
                        variables.key_loc(name),
                        ("variables", name),
                    )
                self.variables.pop(name, None)
                self.variables.copy_entry(variables, name)
                self.var_owner[name] = self.main_index
        defaults = doc.get("defaults")
        if isinstance(defaults, YMap):
            body = canonicalize_keys(defaults, ("defaults",))
            self.defaults = body if self.defaults is None else merge_target(self.defaults, body)
        groups = doc.get("groups")
        if isinstance(groups, YMap):
            for name in groups:
                raw = groups[name]
                gpath: tuple[Any, ...] = ("groups", name)
                if isinstance(raw, YMap):
                    if raw.get("description"):
                        self.group_descriptions[name] = raw["description"]
                    raw = raw["targets"]
                    gpath = gpath + ("targets",)
                members = self.groups.setdefault(name, [])
                self.group_locs.setdefault(name, (groups.key_loc(name), ("groups", name)))
                for index, member in enumerate(raw):
                    members.append((member, raw.item_loc(index), gpath + (index,)))
        targets = doc.get("targets")
        if isinstance(targets, YMap):
            for name in targets:
                path = self.roots.setdefault(name, ("targets", name))
                body = canonicalize_keys(targets[name], path)
                recipe = [key for key in RECIPE_KEYS if key in body]
                if len(recipe) > 1:
                    fail(
                        f"give one of dockerfile, dockerfile_inline or steps, not {' and '.join(recipe)}",
                        body.key_loc(recipe[1]),
                        path + (recipe[1],),
                    )
                if name in self.targets:
                    if later_main and self.target_owner[name] < self.main_index:
                        body = merge_target(self.targets[name], body)
                    else:
                        first = self.targets.key_loc(name)
                        fail(
                            f"target {name!r} is defined twice: here and at {first}",
                            targets.key_loc(name),
                            path,
                        )
                self.targets.pop(name, None)
                self.targets.put(name, body, targets.key_loc(name), targets.value_loc(name))
                self.target_owner[name] = self.main_index

    # -- resolving -------------------------------------------------------------

    def resolve(self, sets: list[str]) -> BakeFile:
        cli = Source("", "--var", self.cwd)
        overrides = self.cli_variables
        if self.vars_to_environment:
            overrides = {k: v for k, v in overrides.items() if k in self.variables}
        variables = resolve_variables(self.variables, overrides, self.environ, cli)
        scope = Scope({name: list(v.value) if isinstance(v.value, tuple) else v.value for name, v in variables.items()})
        bodies = resolve_inherits(dict(self.targets), self.defaults, scope, self.roots)

        concrete: dict[str, YMap] = {}
        origin: dict[str, tuple[str, dict[str, Any], Loc]] = {}
        matrix_groups: dict[str, tuple[str, ...]] = {}
        abstract = {name for name in self.targets if name.startswith("_")}
        for declared in self.targets:
            if declared in abstract:
                continue
            body = bodies[declared]
            loc = self.targets.key_loc(declared)
            root = self.roots.get(declared, ("targets", declared))
            expansions = expand_matrix(declared, body, scope, root)
            plain = body.without("matrix", "name", *(key for key in body if key.startswith("x-")))
            if "matrix" in body:
                matrix_groups[declared] = tuple(e.name for e in expansions)
            for expansion in expansions:
                if expansion.name in concrete:
                    first = origin[expansion.name][2]
                    fail(
                        f"target {expansion.name!r} is defined twice: here and at {first}",
                        loc,
                        root,
                    )
                if len(concrete) >= MAX_TARGETS:
                    fail(f"more than {MAX_TARGETS} targets", loc, root)
                tscope = scope.with_target(expansion.values, expansion.name, declared)
                concrete[expansion.name] = interpolate_tree(plain, tscope, plain.loc, root)
                origin[expansion.name] = (declared, expansion.values, loc)
        for name in matrix_groups:
            if name in concrete:
                fail(
                    f"{name!r} is both a target and the name of a matrix",
                    origin[name][2],
                    ("targets", name),
                )

        if sets:
            set_source = Source("", "--set", self.cwd)
            concrete = apply_overrides(concrete, parse_overrides(sets, set_source), set_source)

        specs: dict[str, TargetSpec] = {}
        edges: list[Edge] = []
        for name, body in concrete.items():
            declared, values, loc = origin[name]
            path = self.roots.get(declared, ("targets", declared))
            validate(body, body.loc, "#/$defs/defaults", path)
            spec, target_edges = normalize_target(name, body, loc, values, path)
            specs[name] = spec
            edges.extend(target_edges)

        groups = self.resolve_groups(scope, specs, matrix_groups, abstract)
        all_groups = {**matrix_groups, **groups}
        graph = resolve_edges(edges, specs, all_groups, matrix_groups, abstract)
        for name, deps in graph.items():
            needs = []
            for dep, edge in deps:
                if edge.kind == "needs" and dep not in needs:
                    needs.append(dep)
            if tuple(needs) != specs[name].needs:
                specs[name] = replace(specs[name], needs=tuple(needs))
        found = find_cycle(graph)
        if found:
            cycle, edge = found
            fail(f"target cycle: {' -> '.join(cycle)}", edge.loc, edge.path)
        return BakeFile(
            files=tuple(self.files),
            targets=specs,
            groups=all_groups,
            variables=variables,
            group_descriptions=dict(self.group_descriptions),
        )

    def resolve_groups(
        self,
        scope: Scope,
        specs: dict[str, TargetSpec],
        matrix_groups: dict[str, tuple[str, ...]],
        abstract: set[str],
    ) -> dict[str, tuple[str, ...]]:
        from frontends.yaml.schema import did_you_mean

        out: dict[str, tuple[str, ...]] = {}
        for name, members in self.groups.items():
            loc, path = self.group_locs[name]
            if name in specs or name in matrix_groups:
                fail(f"{name!r} is both a group and a target", loc, path)
            resolved: list[str] = []
            for member, mloc, mpath in members:
                member = interpolate(member, scope, mloc, mpath)
                if member not in specs and member not in matrix_groups and member not in self.groups:
                    if member in abstract:
                        fail(
                            f"{member!r} is an abstract target (its name starts with '_'): it cannot be built",
                            mloc,
                            mpath,
                        )
                    fail(
                        f"unknown target or group {member!r}{did_you_mean(member, [*specs, *matrix_groups, *self.groups])}",
                        mloc,
                        mpath,
                    )
                if member not in resolved:
                    resolved.append(member)
            out[name] = tuple(resolved)
        check_group_cycles(out, self.group_locs)
        return out


def load_bake(
    paths: list[str] | None,
    *,
    cwd: str,
    variables: Mapping[str, str] | None = None,
    sets: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> BakeFile:
    """Load, check and resolve build files; raises `BuildFileError` for any problem in them.

    `paths`: the `-f` files (None or empty: `build.yaml`/`shipyard.yaml` in `cwd`);
    `variables`: `--var NAME=VALUE`; `sets`: `--set TARGET.KEY=VALUE`; `environ`: where
    variables' environment overrides come from (default `os.environ`).
    """
    cwd = os.path.abspath(cwd)
    loader = _Loader(cwd, os.environ if environ is None else environ, variables or {})
    for index, path in enumerate(find_build_files(paths, cwd)):
        loader.load_main(path, index)
    return loader.resolve(list(sets or ()))
