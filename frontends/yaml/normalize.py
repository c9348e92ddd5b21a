"""One resolved target definition (a located mapping) to its canonical `TargetSpec`.

Paths become absolute here, each against the directory of the file that wrote the
value (a fragment's own directory; the working directory for `--set` values), except
`dockerfile`, which is relative to the context as in compose and bake. bake's CSV
strings and the structured mappings meet in one form: `OutputSpec` for outputs, a
canonical CSV string (`type` first, then keys sorted) for `cache_from`/`cache_to`.
Mappings (`args`, `labels`, `contexts`) are sorted by key, so reordering a file does not
change what `--print` shows or what a target key hashes.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import re
from typing import Any

from frontends.yaml.model import OutputSpec, SecretSpec, TargetSpec
from frontends.yaml.schema import did_you_mean
from frontends.yaml.steps import normalize_steps
from frontends.yaml.yamlsafe import Loc, YList, YMap, fail, scalar_text

__all__ = [
    "CACHE_TYPES",
    "OUTPUT_TYPES",
    "Edge",
    "canonical_csv",
    "normalize_target",
    "parse_csv",
]

OUTPUT_TYPES = ("image", "registry", "oci", "docker", "local", "tar")
_FILE_OUTPUTS = ("oci", "docker", "local", "tar")
CACHE_TYPES = ("local", "registry", "inline")
_URL = re.compile(r"^([a-z][a-z0-9+.-]*://|git@)", re.IGNORECASE)


class Edge:
    """A dependency of one target on another, with where it was written."""

    __slots__ = ("dep", "kind", "loc", "path", "source")

    def __init__(self, source: str, dep: str, kind: str, loc: Loc, path: tuple[Any, ...]) -> None:
        self.source = source
        self.dep = dep
        self.kind = kind
        """`context` (data flows) or `needs` (ordering only)."""
        self.loc = loc
        self.path = path


def _abs(base: str, path: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(path) if path.startswith("~/") else path))


def parse_csv(text: str, loc: Loc, path: tuple[Any, ...]) -> dict[str, str]:
    """`type=local,src=dir` → {"type": "local", "src": "dir"} (keys lowercased; quotes as in Go's csv)."""
    if "\n" in text or "\r" in text:
        fail("a CSV value cannot hold a line break", loc, path)
    try:
        record = next(csv.reader([text], strict=True))
    except (csv.Error, StopIteration) as exc:
        fail(f"invalid CSV {text!r}: {exc}", loc, path)
    out: dict[str, str] = {}
    for item in record:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            fail(f"{item!r} is not key=value in {text!r}", loc, path)
        if key in out:
            fail(f"{key} given twice in {text!r}", loc, path)
        out[key] = value
    return out


def canonical_csv(fields: dict[str, str]) -> str:
    """`type=…` first, then the other keys sorted; values quoted only when they must be."""
    keys = (["type"] if "type" in fields else []) + sorted(k for k in fields if k != "type")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([f"{k}={fields[k]}" for k in keys])
    return buf.getvalue()


def _fields(item: Any, holder: YList, index: int, loc: Loc, path: tuple[Any, ...]) -> dict[str, str]:
    if isinstance(item, YMap):
        return {key.lower(): scalar_text(item, key) for key in item}
    return parse_csv(item, loc, path)


def _output(item: Any, holder: YList, index: int, path: tuple[Any, ...]) -> OutputSpec:
    loc = holder.item_loc(index)
    base = loc.source.base
    if isinstance(item, str) and "=" not in item:
        fields = {
            "type": "local",
            "dest": item,
        }  # bake: a bare path is a local directory
    else:
        fields = _fields(item, holder, index, loc, path)
    kind = fields.pop("type", "")
    if kind not in OUTPUT_TYPES:
        fail(
            f"output type {kind!r} is not one of {', '.join(OUTPUT_TYPES)}{did_you_mean(kind, OUTPUT_TYPES)}",
            loc,
            path,
        )
    if kind in _FILE_OUTPUTS:
        dest = fields.get("dest", "")
        if not dest:
            fail(f"a {kind} output needs dest=", loc, path)
        if dest == "-":
            fail("writing an output to stdout is not supported; give a path", loc, path)
        fields["dest"] = _abs(base, dest)
    if "from" in fields:
        if kind != "local":
            fail("from= (a subtree of the result) is only for local outputs", loc, path)
        if not fields["from"].startswith("/"):
            fail(
                f"from={fields['from']} must be an absolute path in the result",
                loc,
                path,
            )
        fields["from"] = posixpath.normpath(fields["from"])
    return OutputSpec(kind, tuple(sorted(fields.items())))


def _cache(item: Any, holder: YList, index: int, path: tuple[Any, ...], direction: str) -> str:
    loc = holder.item_loc(index)
    if isinstance(item, str) and "=" not in item:
        fields = {
            "type": "registry",
            "ref": item,
        }  # bake: a bare reference is a registry cache
    else:
        fields = _fields(item, holder, index, loc, path)
    kind = fields.get("type", "")
    if kind not in CACHE_TYPES:
        fail(
            f"cache type {kind!r} is not one of {', '.join(CACHE_TYPES)}{did_you_mean(kind, CACHE_TYPES)}",
            loc,
            path,
        )
    if "mode" in fields and fields["mode"] not in ("min", "max"):
        fail(f"cache mode {fields['mode']!r} is not min or max", loc, path)
    if kind == "local":
        key = "src" if direction == "from" else "dest"
        if key not in fields:
            fail(f"a local cache_{direction} needs {key}=", loc, path)
        for k in ("src", "dest"):
            if k in fields:
                fields[k] = _abs(loc.source.base, fields[k])
    elif kind == "registry" and "ref" not in fields:
        fail("a registry cache needs ref=", loc, path)
    return canonical_csv(fields)


def _secret(item: Any, holder: YList, index: int, path: tuple[Any, ...]) -> SecretSpec:
    loc = holder.item_loc(index)
    fields = _fields(item, holder, index, loc, path)
    if "source" in fields and "src" not in fields:
        fields["src"] = fields.pop("source")
    unknown = [k for k in fields if k not in ("id", "src", "env", "type")]
    if unknown:
        fail(
            f"unknown secret field {unknown[0]!r}{did_you_mean(unknown[0], ('id', 'src', 'env', 'type'))}",
            loc,
            path,
        )
    kind = fields.get("type", "")
    if kind not in ("", "file", "env"):
        fail(f"secret type {kind!r} is not file or env", loc, path)
    secret_id = fields.get("id", "")
    if not secret_id:
        fail("a secret needs id=", loc, path)
    src, env = fields.get("src", ""), fields.get("env", "")
    if kind == "env" and not env:
        env, src = src or secret_id, ""
    if src and env:
        fail("a secret takes src or env, not both", loc, path)
    return SecretSpec(id=secret_id, src=_abs(loc.source.base, src) if src else "", env=env)


def _context_value(value: str, loc: Loc, path: tuple[Any, ...]) -> str:
    if value.startswith(("target:", "docker-image://")):
        if value in ("target:", "docker-image://"):
            fail(f"{value!r} names nothing", loc, path)
        return value
    if value.startswith("oci-layout://"):
        rest = value[len("oci-layout://") :]
        if "@" in rest:
            where, ref = rest.rsplit("@", 1)
            ref = "@" + ref
        else:
            head, sep, tag = rest.rpartition(":")
            where, ref = (head, ":" + tag) if sep and head and "/" not in tag else (rest, "")
        if not where:
            fail(f"{value!r} names no layout directory", loc, path)
        return "oci-layout://" + _abs(loc.source.base, where) + ref
    if value.startswith("service:"):
        fail(
            f"{value!r} is compose syntax; write target:{value[len('service:') :]}",
            loc,
            path,
        )
    if _URL.match(value):
        return value
    return _abs(loc.source.base, value)


def _strings(body: YMap, key: str) -> tuple[str, ...]:
    value = body.get(key)
    if value is None:
        return ()
    out: list[str] = []
    for index in range(len(value)):
        text = scalar_text(value, index)
        if text not in out:
            out.append(text)
    return tuple(out)


def _pairs(body: YMap, key: str) -> tuple[tuple[str, str], ...]:
    value = body.get(key)
    if not isinstance(value, YMap):
        return ()
    return tuple(sorted((k, scalar_text(value, k)) for k in value if value[k] is not None))


def normalize_target(
    name: str,
    body: YMap,
    location: Loc,
    matrix: dict[str, Any],
    path: tuple[Any, ...],
) -> tuple[TargetSpec, list[Edge]]:
    """The canonical target and the dependency edges it declares (needs still unexpanded)."""
    edges: list[Edge] = []
    base = location.source.base
    if "context" in body:
        context = _context_value(body["context"], body.value_loc("context"), path + ("context",))
        if context.startswith(("target:", "docker-image://", "oci-layout://")) or _URL.match(context):
            fail(
                "the main context must be a local directory (use `contexts` for images and targets)",
                body.value_loc("context"),
                path + ("context",),
            )
    else:
        context = os.path.normpath(base)
    recipe = [key for key in ("dockerfile", "dockerfile_inline", "steps") if key in body]
    if len(recipe) > 1:
        fail(
            f"give one of dockerfile, dockerfile_inline or steps, not {' and '.join(recipe)}",
            body.key_loc(recipe[1]),
            path + (recipe[1],),
        )
    dockerfile = ""
    if "dockerfile" in body:
        dockerfile = os.path.normpath(os.path.join(context, body["dockerfile"]))
    elif not recipe:
        dockerfile = os.path.join(context, "Dockerfile")
    steps = normalize_steps(body["steps"], path + ("steps",)) if "steps" in body else ()
    if steps and steps[0].kind != "from":
        fail(
            "the first step must be `from`",
            body["steps"].item_loc(0),
            path + ("steps", 0),
        )

    contexts: list[tuple[str, str]] = []
    if isinstance(body.get("contexts"), YMap):
        ctx = body["contexts"]
        for key in sorted(ctx):
            cloc = ctx.value_loc(key)
            value = _context_value(ctx[key], cloc, path + ("contexts", key))
            contexts.append((key, value))
            if value.startswith("target:"):
                edges.append(
                    Edge(
                        name,
                        value[len("target:") :],
                        "context",
                        cloc,
                        path + ("contexts", key),
                    )
                )
    needs: list[str] = []
    if "needs" in body:
        holder = body["needs"]
        for index in range(len(holder)):
            dep = holder[index]
            edges.append(Edge(name, dep, "needs", holder.item_loc(index), path + ("needs", index)))
            if dep not in needs:
                needs.append(dep)

    def each(key: str, fn: Any, *extra: Any) -> tuple[Any, ...]:
        holder = body.get(key)
        if holder is None:
            return ()
        out: list[Any] = []
        for index, item in enumerate(holder):
            value = fn(item, holder, index, path + (key, index), *extra)
            if value not in out:
                out.append(value)
        return tuple(out)

    result = ""
    if "result" in body:
        result = posixpath.normpath(body["result"])
    network = body.get("network", "")
    spec = TargetSpec(
        name=name,
        context=context,
        location=str(location),
        description=body.get("description", ""),
        dockerfile=dockerfile,
        dockerfile_inline=body.get("dockerfile_inline", ""),
        steps=steps,
        target=body.get("target", ""),
        args=_pairs(body, "args"),
        labels=_pairs(body, "labels"),
        tags=_strings(body, "tags"),
        contexts=tuple(contexts),
        result=result,
        needs=tuple(needs),
        outputs=each("outputs", _output),
        cache_from=each("cache_from", _cache, "from"),
        cache_to=each("cache_to", _cache, "to"),
        secrets=each("secrets", _secret),
        ssh=_strings(body, "ssh"),
        entitlements=_strings(body, "entitlements"),
        platforms=_strings(body, "platforms"),
        no_cache=bool(body.get("no_cache", False)),
        no_cache_filter=_strings(body, "no_cache_filter"),
        network="" if network == "default" else network,
        matrix=tuple(
            (k, v if isinstance(v, str) else ",".join(f"{a}={b}" for a, b in v.items())) for k, v in matrix.items()
        ),
    )
    secret_ids = [s.id for s in spec.secrets]
    dup = next((i for i in secret_ids if secret_ids.count(i) > 1), None)
    if dup:
        fail(
            f"secret id {dup!r} given twice",
            body.value_loc("secrets"),
            path + ("secrets",),
        )
    return spec, edges
