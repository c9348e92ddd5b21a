"""Inline `steps:` to `StepSpec`s: each step's shape checked, its value in one canonical form.

The schema already guarantees one action key per step and the types of its fields;
this module settles what the schema cannot: `copy`/`add` sources as a list, `add` from
the context only (no URLs, no git), `arg` as a mapping of name → default (None: no
default), `expose` ports, healthcheck `test` in exec form, and `run` mounts read by the
Dockerfile frontend's own `RUN --mount` parser, so a mount means exactly what the same
`--mount=` means in a Dockerfile (and is refused with the same words).
"""

from __future__ import annotations

import re
from typing import Any

from frontends.yaml.model import MountSpec, StepSpec
from frontends.yaml.yamlsafe import Loc, YList, YMap, fail, scalar_text

__all__ = ["STEP_KINDS", "normalize_mount", "normalize_steps"]

STEP_KINDS = (
    "from", "run", "copy", "add", "env", "arg", "workdir", "user", "label",
    "expose", "entrypoint", "cmd", "healthcheck",
)  # fmt: skip
_PORT = re.compile(r"[0-9]+(-[0-9]+)?(/(tcp|udp|sctp))?", re.IGNORECASE)
_ARG_NAME = re.compile(r"[^\s=]+")
_REMOTE = re.compile(r"^([a-z][a-z0-9+.-]*://|git@)", re.IGNORECASE)
_MOUNT_KEY_NAMES = {
    "dst": "target",
    "destination": "target",
    "src": "source",
    "ro": "readonly",
}


def _strings(value: Any) -> list[str]:
    if isinstance(value, YList):
        return [scalar_text(value, i) for i in range(len(value))]
    return [value]


def _command(value: Any) -> Any:
    """Shell form stays a string, exec form a list of strings."""
    if isinstance(value, YList):
        return [scalar_text(value, i) for i in range(len(value))]
    return value


def normalize_mount(mount: Any, loc: Loc, path: tuple[Any, ...]) -> MountSpec:
    fields: list[tuple[str, str]] = []
    if isinstance(mount, YMap):
        for key in mount:
            value = scalar_text(mount, key)
            if key in ("rw", "readwrite"):
                fields.append(("readonly", "false" if mount[key] else "true"))
                continue
            if key in ("readonly", "ro", "required"):
                value = "true" if mount[key] else "false"
            fields.append((_MOUNT_KEY_NAMES.get(key, key), value))
    else:
        from frontends.dockerfile.flags import InstructionSyntaxError
        from frontends.dockerfile.mounts import split_csv_record

        try:
            record = split_csv_record(mount)
        except InstructionSyntaxError as exc:
            fail(f"invalid mount: {exc.message}", loc, path)
        for field in record:
            key, sep, value = field.partition("=")
            key = key.strip().lower()
            if not sep:
                if key in ("readonly", "ro", "required"):
                    value = "true"
                elif key in ("rw", "readwrite"):
                    key, value = "readonly", "false"
                else:
                    fail(f"mount field {field!r} is not key=value", loc, path)
            if key in ("rw", "readwrite"):
                key, value = (
                    "readonly",
                    "false" if value.lower() in ("true", "1") else "true",
                )
            fields.append((_MOUNT_KEY_NAMES.get(key, key), value))
    seen: dict[str, str] = {}
    for key, value in fields:
        if "\n" in value or "\r" in value:
            fail(f"mount {key} holds a line break", loc, path)
        if key in seen:
            fail(f"mount gives {key} twice", loc, path)
        seen[key] = value
    kind = seen.pop("type", "bind")
    target = seen.pop("target", "")
    spec = MountSpec(kind, target, tuple(sorted(seen.items())))
    from frontends.dockerfile.flags import InstructionSyntaxError
    from frontends.dockerfile.mounts import parse_mount

    try:
        parse_mount(spec.to_csv(), None)
    except InstructionSyntaxError as exc:
        fail(f"invalid mount: {exc.message}", loc, path)
    if kind in ("bind", "cache", "tmpfs") and not target:
        fail(f"a {kind} mount needs a target", loc, path)
    return spec


def _copy(kind: str, spec: YMap, loc: Loc, path: tuple[Any, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"src": _strings(spec["src"]), "dest": spec["dest"]}
    if kind == "add":
        for index, src in enumerate(out["src"]):
            if _REMOTE.match(src):
                fail(
                    f"add takes files from the build context only, not {src!r}",
                    loc,
                    path + ("src", index),
                )
    for key in ("from", "chown", "chmod"):
        if key in spec:
            out[key] = scalar_text(spec, key)
    for key in ("link", "parents"):
        if key in spec:
            out[key] = bool(spec[key])
    if "exclude" in spec:
        out["exclude"] = _strings(spec["exclude"])
    return out


def _arg(value: Any, step: YMap, loc: Loc, path: tuple[Any, ...]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    if isinstance(value, YMap):
        for key in value:
            if not _ARG_NAME.fullmatch(key):
                fail(f"invalid arg name {key!r}", value.key_loc(key), path + (key,))
            out[key] = None if value[key] is None else scalar_text(value, key)
        return out
    name, sep, default = value.partition("=")
    if not _ARG_NAME.fullmatch(name):
        fail(f"invalid arg name {name!r}", loc, path)
    out[name] = default if sep else None
    return out


def _healthcheck(value: Any, loc: Loc, path: tuple[Any, ...]) -> dict[str, Any]:
    if isinstance(value, str):
        if value.strip().upper() == "NONE":
            return {"test": ["NONE"]}
        return {"test": ["CMD-SHELL", value]}
    out: dict[str, Any] = {}
    if value.get("disable"):
        return {"test": ["NONE"]}
    if "test" not in value:
        fail("healthcheck needs a `test` (or `disable: true`)", loc, path)
    test = _command(value["test"])
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    elif test[0].upper() not in ("CMD", "CMD-SHELL", "NONE"):
        test = ["CMD", *test]
    out["test"] = test
    for key in ("interval", "timeout", "start_period", "start_interval"):
        if key in value:
            out[key] = value[key]
    if "retries" in value:
        out["retries"] = int(value["retries"])
    return out


def normalize_steps(steps: YList, path: tuple[Any, ...]) -> tuple[StepSpec, ...]:
    out: list[StepSpec] = []
    for index, step in enumerate(steps):
        loc = steps.item_loc(index)
        spath = path + (index,)
        kind = next(k for k in STEP_KINDS if k in step)
        raw = step[kind]
        vloc = step.value_loc(kind)
        vpath = spath + (kind,)
        value: Any
        mounts: tuple[MountSpec, ...] = ()
        network = ""
        if kind in ("from", "workdir"):
            value = raw
        elif kind == "user":
            value = scalar_text(step, kind)
        elif kind in ("run", "entrypoint", "cmd"):
            value = _command(raw)
            if kind == "run":
                if "mounts" in step:
                    items = step["mounts"]
                    mounts = tuple(
                        normalize_mount(m, items.item_loc(i), spath + ("mounts", i)) for i, m in enumerate(items)
                    )
                    targets = [m.target for m in mounts if m.target]
                    dup = next((t for t in targets if targets.count(t) > 1), None)
                    if dup:
                        fail(
                            f"two mounts at {dup}",
                            step.value_loc("mounts"),
                            spath + ("mounts",),
                        )
                network = step.get("network", "")
                if network == "default":
                    network = ""
        elif kind in ("copy", "add"):
            value = _copy(kind, raw, vloc, vpath)
        elif kind in ("env", "label"):
            value = {key: scalar_text(raw, key) for key in raw}
        elif kind == "arg":
            value = _arg(raw, step, vloc, vpath)
        elif kind == "expose":
            ports = (
                [scalar_text(raw, i) for i in range(len(raw))] if isinstance(raw, YList) else [scalar_text(step, kind)]
            )
            for port in ports:
                if not _PORT.fullmatch(port):
                    fail(
                        f"invalid port {port!r}: want PORT, PORT/tcp, PORT/udp or a range",
                        vloc,
                        vpath,
                    )
            value = ports
        elif kind == "healthcheck":
            value = _healthcheck(raw, vloc, vpath)
        else:  # pragma: no cover - STEP_KINDS is the schema's list
            fail(f"unknown step {kind!r}", loc, spath)
        out.append(
            StepSpec(
                kind=kind,
                value=value,
                mounts=mounts,
                network=network,
                location=str(loc),
            )
        )
    return tuple(out)
