"""The resolved build file: what the YAML loader produces and the bake planner consumes.

Everything here is final: variables interpolated, `defaults`/`inherits` applied, matrix
expanded (abstract `_name` targets gone), paths made absolute, bake/compose spellings
normalized. `to_canonical()` is what `bake --print` shows and what a target key hashes,
so what the user sees is exactly what decides a rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MountSpec:
    """A mount of an inline `run` step (same vocabulary as `RUN --mount`)."""

    type: str
    target: str
    options: tuple[tuple[str, str], ...] = ()

    def to_canonical(self) -> dict[str, Any]:
        return {"type": self.type, "target": self.target, **dict(self.options)}

    def to_csv(self) -> str:
        """The same mount as a `RUN --mount=` value, for the Dockerfile frontend's mount parser."""
        fields = [f"type={self.type}"]
        if self.target:
            fields.append(f"target={self.target}")
        fields.extend(f"{key}={value}" for key, value in self.options)
        return ",".join('"' + f.replace('"', '""') + '"' if ("," in f or '"' in f) else f for f in fields)


@dataclass(frozen=True)
class StepSpec:
    """One inline step: `kind` is from|run|copy|add|env|arg|workdir|user|label|expose|entrypoint|cmd|healthcheck.

    `value` is the step's canonical value (a string, a list, or a mapping of strings);
    `location` is `file:line:col` for errors raised while lowering it.
    """

    kind: str
    value: Any
    mounts: tuple[MountSpec, ...] = ()
    network: str = ""
    location: str = ""

    def to_canonical(self) -> dict[str, Any]:
        out: dict[str, Any] = {self.kind: self.value}
        if self.mounts:
            out["mounts"] = [m.to_canonical() for m in self.mounts]
        if self.network:
            out["network"] = self.network
        return out


@dataclass(frozen=True)
class OutputSpec:
    """An output of a target: `type` image|registry|oci|docker|local|tar, with its attributes."""

    type: str
    attrs: tuple[tuple[str, str], ...] = ()

    def to_canonical(self) -> dict[str, str]:
        return {"type": self.type, **dict(self.attrs)}


@dataclass(frozen=True)
class SecretSpec:
    id: str
    src: str = ""
    env: str = ""

    def to_canonical(self) -> dict[str, str]:
        out = {"id": self.id}
        if self.src:
            out["src"] = self.src
        if self.env:
            out["env"] = self.env
        return out


@dataclass(frozen=True)
class TargetSpec:
    """One concrete target, fully resolved."""

    name: str
    context: str
    """Absolute path of the build context directory."""
    location: str = ""
    """`file:line:col` of the target's definition (for errors while planning/lowering)."""
    description: str = ""
    dockerfile: str = ""
    """Absolute path of the Dockerfile ("" when `dockerfile_inline` or `steps` is used)."""
    dockerfile_inline: str = ""
    steps: tuple[StepSpec, ...] = ()
    target: str = ""
    """The Dockerfile stage to build ("" = the last one)."""
    args: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    tags: tuple[str, ...] = ()
    contexts: tuple[tuple[str, str], ...] = ()
    """Named contexts: name → `target:NAME` | `docker-image://…` | `oci-layout://…` | absolute dir."""
    result: str = ""
    """For a filesystem-only target: the path its result exposes (`target:NAME` then means that tree)."""
    needs: tuple[str, ...] = ()
    """Ordering-only dependencies (no data flow)."""
    outputs: tuple[OutputSpec, ...] = ()
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    secrets: tuple[SecretSpec, ...] = ()
    ssh: tuple[str, ...] = ()
    entitlements: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    network: str = ""
    matrix: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    """The matrix values this target was expanded with (for display only)."""

    def references(self) -> tuple[str, ...]:
        """Targets this one reads from (`contexts: {x: "target:NAME"}`), in order."""
        return tuple(value[len("target:") :] for _, value in self.contexts if value.startswith("target:"))

    def to_canonical(self) -> dict[str, Any]:
        out: dict[str, Any] = {"context": self.context}
        if self.description:
            out["description"] = self.description
        if self.dockerfile:
            out["dockerfile"] = self.dockerfile
        if self.dockerfile_inline:
            out["dockerfile_inline"] = self.dockerfile_inline
        if self.steps:
            out["steps"] = [s.to_canonical() for s in self.steps]
        for key in ("target", "result", "network"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        for key in ("args", "labels", "contexts"):
            if getattr(self, key):
                out[key] = dict(getattr(self, key))
        for key in ("tags", "needs", "cache_from", "cache_to", "ssh", "entitlements", "platforms", "no_cache_filter"):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        if self.outputs:
            out["outputs"] = [o.to_canonical() for o in self.outputs]
        if self.secrets:
            out["secrets"] = [s.to_canonical() for s in self.secrets]
        if self.no_cache:
            out["no_cache"] = True
        return out


@dataclass(frozen=True)
class VariableSpec:
    name: str
    value: Any
    """The resolved value (a string, or a list for `type: list`)."""
    default: Any = None
    description: str = ""
    env: str = ""
    pattern: str = ""
    type: str = "string"


@dataclass(frozen=True)
class BakeFile:
    files: tuple[str, ...]
    targets: dict[str, TargetSpec]
    groups: dict[str, tuple[str, ...]]
    """Group → members (targets or groups), as written (nesting kept)."""
    variables: dict[str, VariableSpec]
    group_descriptions: dict[str, str] = field(default_factory=dict)
    """Group → its `description`, for `--list groups`."""

    def expand(self, names: list[str]) -> list[str]:
        """Targets named directly or through (nested) groups, in order, each once.

        A matrix target's original name is a group of its expansions (bake's rule);
        the loader puts those groups in `groups`.
        """
        out: list[str] = []
        seen: set[str] = set()

        def visit(name: str, trail: tuple[str, ...]) -> None:
            if name in self.targets:
                if name not in seen:
                    seen.add(name)
                    out.append(name)
                return
            if name in trail:
                from engine.errors import ShipyardError

                raise ShipyardError(f"group cycle: {' -> '.join(trail + (name,))}")
            for member in self.groups.get(name, ()):
                visit(member, trail + (name,))

        for name in names:
            visit(name, ())
        return out
