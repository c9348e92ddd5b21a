"""Why a target (re)builds: the first ingredient of its key that differs from the last build.

Target level, in the order the key lists them: its definition (an arg, a label, a
tag, a step), its Dockerfile, its `.dockerignore`, an upstream target's key, then its
graph — where the first step whose cache key misses says what changed: a file it
reads (named: the per-file digests recorded with the last build are diffed against
the current ones), a base image digest, the instruction, or an earlier step. A target
whose key did not change but whose outputs are gone says which output.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from engine.bake.keys import Selection, selections_of
from engine.bake.records import StepRecord, instruction
from engine.errors import ShipyardError
from engine.graph.ops import SOURCE_OPS
from engine.solver.keys import KeyParts

if TYPE_CHECKING:
    from cache.checksum import ContextHashers
    from cache.index import CacheIndex
    from engine.bake.planner import Planner, TargetPlan
    from engine.graph.vertex import Vertex


# --------------------------------------------------------------------------- per-file digests


def files_map(selections: Iterable[Selection], hashers: ContextHashers, index: CacheIndex) -> dict[str, dict[str, str]]:
    """{context root: {relative path: digest}} of every file the selections read.

    Digests come from the stat cache rows the hashing just refreshed; a file the stat
    cache does not know is identified by its size and mtime.
    """
    from engine.fs.selection import select_sources

    hashers.flush()  # the rows the hashing just refreshed, on disk before they are read
    out: dict[str, dict[str, str]] = {}
    rows_by_root: dict[str, dict[str, Any]] = {}
    for sel in selections:
        root = os.path.realpath(sel.path)
        hasher = hashers.get(sel.path, sel.excludes)
        excluded = hasher.excluded
        rows = rows_by_root.get(root)
        if rows is None:
            rows = rows_by_root[root] = index.load_stat_cache(root)
        files = out.setdefault(root, {})
        for src in sel.sources:
            try:
                selected = select_sources(root, src, allow_wildcard=sel.wildcard, follow_symlinks=sel.follow)
            except (ShipyardError, OSError):
                continue  # a source that is gone now: its files count as removed
            for item in selected:
                for rel, path in _walk(root, item.host_path, item.is_dir, excluded):
                    row = rows.get(rel)
                    if row is not None:
                        files[rel] = row.digest
                    else:
                        try:
                            st = os.lstat(path)
                            files[rel] = f"stat:{st.st_size}:{st.st_mtime_ns}"
                        except OSError:
                            pass
    return out


def _walk(root: str, path: str, is_dir: bool, excluded) -> Iterable[tuple[str, str]]:  # type: ignore[no-untyped-def]
    rel = os.path.relpath(path, root)
    if not is_dir:
        yield ("" if rel == "." else rel), path
        return
    for dirpath, dirnames, filenames in os.walk(path):
        base = os.path.relpath(dirpath, root)
        base = "" if base == "." else base
        if excluded is not None:
            dirnames[:] = [d for d in dirnames if not excluded(f"{base}/{d}" if base else d, True)]
        for name in sorted(filenames) + sorted(d for d in dirnames if os.path.islink(os.path.join(dirpath, d))):
            child = f"{base}/{name}" if base else name
            if excluded is None or not excluded(child, False):
                yield child, os.path.join(dirpath, name)


def changed_files(
    before: dict[str, dict[str, str]], after: dict[str, dict[str, str]], selections: Iterable[Selection] | None = None
) -> list[str]:
    """Absolute paths whose digest differs (or that appeared or vanished), sorted."""
    prefixes: dict[str, list[str]] = {}
    if selections is not None:
        for sel in selections:
            prefixes.setdefault(os.path.realpath(sel.path), []).extend(s.strip("/") for s in sel.sources)
    out = []
    for root in sorted(set(before) | set(after)):
        old, new = before.get(root, {}), after.get(root, {})
        wanted = prefixes.get(root)
        for rel in sorted(set(old) | set(new)):
            if old.get(rel) == new.get(rel):
                continue
            if rel not in new and wanted is not None and not any(_under(rel, p) for p in wanted):
                continue  # a file this selection never read
            out.append(os.path.join(root, rel))
    return out


def _under(rel: str, prefix: str) -> bool:
    return prefix in ("", ".") or rel == prefix or rel.startswith(prefix + "/") or fnmatch.fnmatch(rel, prefix)


def _shown(path: str, cwd: str) -> str:
    rel = os.path.relpath(path, cwd)
    return path if rel.startswith("..") else rel


def _files_reason(paths: list[str], cwd: str) -> str:
    if not paths:
        return ""
    more = f" (and {len(paths) - 1} more)" if len(paths) > 1 else ""
    return f"{_shown(paths[0], cwd)} changed{more}"


# --------------------------------------------------------------------------- target level


def definition_difference(before: str, after: str) -> str:
    """The first difference between two canonical definitions, in words."""
    try:
        old, new = json.loads(before), json.loads(after)
    except ValueError:
        return "its definition changed"
    for key in sorted(set(old) | set(new), key=_key_order):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key in ("args", "labels", "contexts") and isinstance(a or {}, dict) and isinstance(b or {}, dict):
            a, b = a or {}, b or {}
            word = {"args": "arg", "labels": "label", "contexts": "context"}[key]
            for name in sorted(set(a) | set(b)):
                if name not in a:
                    return f"{word} {name} added"
                if name not in b:
                    return f"{word} {name} removed"
                if a[name] != b[name]:
                    return f"{word} {name} changed"
        if key == "steps" and isinstance(a, list) and isinstance(b, list):
            for i, (x, y) in enumerate(zip(a, b)):
                if x != y:
                    kind = next(iter(y), "step") if isinstance(y, dict) else "step"
                    return f"step {i + 1} ({kind}) changed"
            return f"steps {'added' if len(b) > len(a) else 'removed'}"
        return f"{key} changed"
    return "its definition changed"


_ORDER = ("args", "steps", "dockerfile_inline", "dockerfile", "target", "contexts", "context", "labels", "result")


def _key_order(key: str) -> tuple[int, str]:
    return (_ORDER.index(key) if key in _ORDER else len(_ORDER), key)


class Explainer:
    """Explanations for the targets of one plan (lowered targets and records)."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self.index = planner.engine.index
        self.cwd = planner.cwd
        self._files_before: dict[str, dict[str, dict[str, str]]] = {}

    def _before(self, name: str) -> dict[str, dict[str, str]]:
        if name not in self._files_before:
            self._files_before[name] = self.planner.records.load_files(name)
        return self._files_before[name]

    def reason(self, plan: TargetPlan) -> str:
        """One line: why `plan` builds, or that it does not need to."""
        record = plan.record
        if plan.forced:
            return plan.forced
        if record is None:
            return "no previous build"
        if not plan.changed:
            return plan.missing or "unchanged"
        before = dict(record.parts)
        for label, value in plan.parts:
            if before.get(label) == value:
                continue
            if label == "definition":
                return definition_difference(record.canonical, plan.definition.canonical)
            if label == "dockerfile":
                spec = plan.spec
                if spec.dockerfile:
                    return f"{_shown(spec.dockerfile, self.cwd)} changed"
                return "dockerfile_inline changed" if spec.dockerfile_inline else "its steps changed"
            if label == "ignore":
                return ".dockerignore changed"
            if label.startswith("upstream "):
                return f"upstream {label[len('upstream '):]} changed"
            return self._graph_reason(plan)
        return "its upstream targets changed"

    def _graph_reason(self, plan: TargetPlan) -> str:
        for status, _, why in self.steps(plan):
            if status == "MISS":
                return why
        return "its build graph changed"

    def steps(self, plan: TargetPlan) -> list[tuple[str, str, str]]:
        """(HIT|MISS, step name, why) for each step of the target."""
        record = plan.record
        if plan.name not in self.planner.lowered:  # proven from its record: nothing changed
            keys = [s.key for s in record.steps] if record else []
            hits = self.index.lookup(keys) if keys else {}
            return [
                ("HIT", s.name, "") if s.source or s.key in hits else ("MISS", s.name, "not in the build cache")
                for s in (record.steps if record else ())
            ]
        lowered = self.planner.lower(plan.name)
        vkeys = self.planner.vertex_keys
        vkeys.key_of(lowered.vertex)
        keys = [vkeys.keys.get(s.vertex) or "" for s in lowered.steps]
        hits = self.index.lookup([k for k in keys if k]) if any(keys) else {}
        previous = _match_steps([s.name for s in lowered.steps], record.steps if record else ())
        graph_vertices = {v.digest: v for v in _walk_vertices(lowered.vertex)}
        out = []
        for step, key, prev in zip(lowered.steps, keys, previous):
            vertex = graph_vertices.get(step.vertex)
            if vertex is not None and isinstance(vertex.op, SOURCE_OPS):
                if vertex.op.__class__.__name__ != "ImageSource" or prev is None or prev.key == key:
                    out.append(("HIT", step.name, ""))
                else:
                    out.append(("MISS", step.name, self.step_reason(plan, prev, vkeys.parts.get(step.vertex), vertex)))
                continue
            if key in hits and not self.planner.no_cache:
                out.append(("HIT", step.name, ""))
                continue
            parts = vkeys.parts.get(step.vertex)
            out.append(("MISS", step.name, self.step_reason(plan, prev, parts, vertex)))
        return out

    def step_reason(self, plan: TargetPlan, prev: StepRecord | None, parts: KeyParts | None, vertex: Vertex | None) -> str:
        if self.planner.no_cache:
            return "--no-cache"
        owner = self._owner(plan.name, vertex) if vertex is not None else ""
        if owner:  # FROM target:NAME — the step is the upstream target's result
            return f"upstream {owner} changed"
        if prev is None or prev.parts is None or parts is None:
            return "no previous build of this step"
        if prev.parts.op != parts.op:
            return _op_difference(prev.parts.op, parts.op, vertex)
        before = dict(prev.parts.inputs)
        for label, value in parts.inputs:
            if before.get(label) == value:
                continue
            index = int(label.split()[1])
            if label.endswith("content") and vertex is not None:
                selections = selections_of([vertex])
                selections = [s for s in selections if s.path == getattr(vertex.inputs[index].op, "path", None)]
                now = files_map(selections, self.planner.hashers, self.index)
                found = changed_files(self._before(plan.name), now, selections)
                return _files_reason(found, self.cwd) or f"the files it reads changed ({', '.join(s for sel in selections for s in sel.sources)})"
            if vertex is not None:
                child = vertex.inputs[index]
                owner = self._owner(plan.name, child)
                if owner:
                    return f"upstream {owner} changed"
                name = self.planner.vertex_name(child)
                return f"an earlier step changed ({instruction(name)})" if name else "an earlier step changed"
            return "an earlier step changed"
        return "the result is no longer in the build cache"

    def _owner(self, name: str, vertex: Vertex) -> str:
        for ref in self.planner.graph.references_closure(name):
            lowered = self.planner.lowered.get(ref)
            if lowered is not None and lowered.vertex.digest == vertex.digest:
                return ref
        return ""

    def render(self, names: Iterable[str]) -> str:
        lines = []
        for name in names:
            plan = self.planner.plans[name]
            verdict = "BUILD" if plan.build else "SKIP"
            lines.append(f"{name}: {verdict} ({self.reason(plan)})  key {plan.key[:19]}")
            for status, step, why in self.steps(plan):
                lines.append(f"  {status:<4} {step}{' — ' + why if why else ''}")
        return "\n".join(lines) + "\n"


def _walk_vertices(target: Vertex) -> Iterable[Vertex]:
    from engine.graph.vertex import walk

    return walk([target])


def _match_steps(names: list[str], records: Iterable[StepRecord]) -> list[StepRecord | None]:
    """The previous build's record of each step: same instruction text, else same position."""
    records = list(records)
    by_text: dict[str, list[StepRecord]] = {}
    for rec in records:
        by_text.setdefault(rec.text, []).append(rec)
    out: list[StepRecord | None] = []
    for i, name in enumerate(names):
        same = by_text.get(instruction(name))
        if same:
            out.append(same.pop(0))
        else:
            out.append(records[i] if i < len(records) and records[i].text not in {instruction(n) for n in names} else None)
    return out


def _op_difference(before: str, after: str, vertex: Vertex | None) -> str:
    try:
        old, new = json.loads(before), json.loads(after)
    except ValueError:
        return "the instruction or its settings changed"
    if isinstance(old, list) and isinstance(new, list) and old[:1] == new[:1] == ["image"]:
        ref = getattr(vertex.op, "ref", "") if vertex is not None else ""
        return f"base image {ref} changed ({str(old[1])[:19]} -> {str(new[1])[:19]})"
    if isinstance(old, dict) and isinstance(new, dict):
        for key in new:
            if old.get(key) == new.get(key):
                continue
            if key == "env" and isinstance(old.get(key), list) and isinstance(new.get(key), list):
                a = dict(str(e).partition("=")[::2] for e in old[key])
                b = dict(str(e).partition("=")[::2] for e in new[key])
                for var in sorted(set(a) | set(b)):
                    if a.get(var) != b.get(var):
                        return f"env {var} changed"
            if key == "args":
                return "the command changed"
            return f"its {key} changed"
    return "the instruction or its settings changed"
