"""A compose file's `services.*.build` sections as build-file targets.

Each service with a `build:` becomes a target of the same name (`image:` becomes its
first tag), and the `default` group holds them all, as `docker buildx bake -f
compose.yaml` does. `additional_contexts` values `service:NAME` become `target:NAME`,
so a service built `FROM` another is ordered after it and invalidated by it (the
docker/compose#12673/#12783 class of bugs cannot happen). Compose's own interpolation
(`$VAR`, `${VAR:-d}`, `${VAR:?err}`, `${VAR:+alt}`, `$$`) is applied from the
environment (and `--var`) here, and its result is escaped so that the build-file
interpolation that follows leaves it alone.

Build keys compose accepts but Shipyard has no use for (`extra_hosts`, `isolation`,
`privileged`, `pull`, `shm_size`, `ulimits`, `provenance`, `sbom`) are ignored;
unknown keys are errors, with a suggestion.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from frontends.yaml.interpolate import MAX_VALUE_BYTES
from frontends.yaml.matrix import NAME_RE
from frontends.yaml.schema import did_you_mean, validate
from frontends.yaml.yamlsafe import Loc, Source, YList, YMap, fail, scalar_text

__all__ = ["convert_compose", "interpolate_compose"]

_TOP_KEYS = (
    "version",
    "name",
    "include",
    "services",
    "networks",
    "volumes",
    "secrets",
    "configs",
)
_BUILD_KEYS = (
    "context", "dockerfile", "dockerfile_inline", "args", "ssh", "cache_from", "cache_to",
    "additional_contexts", "labels", "no_cache", "target", "secrets", "tags", "platforms",
    "network", "entitlements",
)  # fmt: skip
_IGNORED_BUILD_KEYS = (
    "extra_hosts",
    "isolation",
    "privileged",
    "pull",
    "shm_size",
    "ulimits",
    "provenance",
    "sbom",
)
_LIST_KEYS = ("cache_from", "cache_to", "tags", "platforms", "entitlements")
_STRING_KEYS = ("context", "dockerfile", "dockerfile_inline", "target", "network")
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", re.DOTALL)


def interpolate_compose(text: str, env: Mapping[str, str], loc: Loc, path: tuple[Any, ...]) -> str:
    """Compose's interpolation (single level, no nested defaults), result bounded."""
    if "$" not in text:
        return text
    out: list[str] = []
    size = 0
    i, n = 0, len(text)
    while i < n:
        j = text.find("$", i)
        if j < 0:
            piece, i = text[i:], n
        elif text.startswith("$$", j):
            piece, i = text[i:j] + "$", j + 2
        elif text.startswith("${", j):
            end = text.find("}", j + 2)
            m = _BRACED.fullmatch(text[j + 2 : end]) if end >= 0 else None
            if m is None:
                fail(f"invalid interpolation in {text[:40]!r}", loc, path)
            name, op, arg = m.group(1), m.group(2), m.group(3) or ""
            value = env.get(name)
            if op in (":-", "-"):
                if value is None or (op == ":-" and value == ""):
                    value = arg
            elif op in (":?", "?"):
                if value is None or (op == ":?" and value == ""):
                    fail(
                        f"required variable {name} is missing a value: {arg}".rstrip(": "),
                        loc,
                        path,
                    )
            elif op in (":+", "+"):
                value = arg if value is not None and (op == "+" or value != "") else ""
            piece, i = text[i:j] + (value or ""), end + 1
        else:
            m = _VAR.match(text, j + 1)
            if m is None:
                piece, i = text[i : j + 1], j + 1
            else:
                piece, i = text[i:j] + env.get(m.group(0), ""), m.end()
        size += len(piece)
        if size > MAX_VALUE_BYTES:
            fail(f"interpolated value exceeds {MAX_VALUE_BYTES} bytes", loc, path)
        out.append(piece)
    return "".join(out)


class _Converter:
    def __init__(self, doc: YMap, source: Source, env: Mapping[str, str]) -> None:
        self.doc = doc
        self.source = source
        self.env = env
        top_secrets = doc.get("secrets")
        self.secrets = top_secrets if isinstance(top_secrets, YMap) else YMap(doc.loc)

    def text(self, container: YMap | YList, key: Any, path: tuple[Any, ...]) -> str:
        """A scalar, compose-interpolated, then escaped for the build-file interpolation."""
        loc = container.value_loc(key) if isinstance(container, YMap) else container.item_loc(key)
        value = container[key]
        if isinstance(value, (YMap, YList)):
            fail("expected a string", loc, path)
        return interpolate_compose(scalar_text(container, key), self.env, loc, path).replace("$", "$$")

    def pairs(self, build: YMap, key: str, path: tuple[Any, ...], from_env: bool) -> YMap:
        """A compose map-or-list (`{A: 1}` or `["A=1", "B"]`) as a mapping of strings."""
        raw = build[key]
        out = YMap(raw.loc if isinstance(raw, (YMap, YList)) else build.value_loc(key))
        if isinstance(raw, YMap):
            for name in raw:
                loc = raw.value_loc(name)
                if raw[name] is None:
                    if from_env and name in self.env:
                        out.put(
                            name,
                            self.env[name].replace("$", "$$"),
                            raw.key_loc(name),
                            loc,
                        )
                    continue
                out.put(name, self.text(raw, name, path + (name,)), raw.key_loc(name), loc)
        elif isinstance(raw, YList):
            for index in range(len(raw)):
                item = self.text(raw, index, path + (index,))
                name, sep, value = item.partition("=")
                loc = raw.item_loc(index)
                if not sep:
                    if from_env and name in self.env:
                        out.put(name, self.env[name].replace("$", "$$"), loc, loc)
                    continue
                out.put(name, value, loc, loc)
        else:
            fail("expected a mapping or a list of KEY=VALUE", build.value_loc(key), path)
        return out

    def strings(self, build: YMap, key: str, path: tuple[Any, ...]) -> YList:
        raw = build[key]
        if not isinstance(raw, YList):
            fail("expected a list", build.value_loc(key), path)
        out = YList(raw.loc)
        for index in range(len(raw)):
            out.add(self.text(raw, index, path + (index,)), raw.item_loc(index))
        return out

    def secret(self, raw: YList, index: int, path: tuple[Any, ...]) -> str:
        item = raw[index]
        loc = raw.item_loc(index)
        if isinstance(item, YMap):
            if "source" not in item:
                fail("a build secret needs `source`", loc, path)
            name = scalar_text(item, "source")
            secret_id = scalar_text(item, "target") if "target" in item else name
        else:
            name = secret_id = scalar_text(raw, index)
        decl = self.secrets.get(name)
        if not isinstance(decl, YMap):
            fail(
                f"unknown secret {name!r}{did_you_mean(name, self.secrets)} (declare it under the top-level `secrets`)",
                loc,
                path,
            )
        dpath = ("secrets", name)
        if "file" in decl:
            return f"id={secret_id},src={self.text(decl, 'file', dpath + ('file',))}"
        if "environment" in decl:
            return f"id={secret_id},env={self.text(decl, 'environment', dpath + ('environment',))}"
        fail(
            "a build secret needs `file` or `environment`",
            self.secrets.value_loc(name),
            dpath,
        )

    def build_target(self, name: str, service: YMap) -> YMap:
        path: tuple[Any, ...] = ("services", name, "build")
        build = service["build"]
        bloc = service.value_loc("build")
        body = YMap(bloc)
        if isinstance(build, str):
            body.put(
                "context",
                self.text(service, "build", path),
                service.key_loc("build"),
                bloc,
            )
        elif isinstance(build, YMap):
            for key in build:
                kpath = path + (key,)
                kloc, vloc = build.key_loc(key), build.value_loc(key)
                if key.startswith("x-") or key in _IGNORED_BUILD_KEYS:
                    continue
                if key not in _BUILD_KEYS:
                    fail(
                        f"unknown build key {key!r}{did_you_mean(key, _BUILD_KEYS + _IGNORED_BUILD_KEYS)}",
                        kloc,
                        kpath,
                    )
                if key in _STRING_KEYS:
                    body.put(key, self.text(build, key, kpath), kloc, vloc)
                elif key in _LIST_KEYS:
                    body.put(key, self.strings(build, key, kpath), kloc, vloc)
                elif key in ("args", "labels"):
                    body.put(
                        key,
                        self.pairs(build, key, kpath, from_env=key == "args"),
                        kloc,
                        vloc,
                    )
                elif key == "additional_contexts":
                    contexts = self.pairs(build, key, kpath, from_env=False)
                    for ctx in contexts:
                        value = contexts[ctx]
                        if value.startswith("service:"):
                            contexts[ctx] = "target:" + value[len("service:") :]
                    body.put(key, contexts, kloc, vloc)
                elif key == "no_cache":
                    body.put(key, build[key], kloc, vloc, build.raw.get(key))
                elif key == "ssh":
                    raw = build[key]
                    ssh = YList(vloc)
                    if isinstance(raw, YMap):
                        for sid in raw:
                            ssh.add(
                                f"{sid}={self.text(raw, sid, kpath + (sid,))}",
                                raw.value_loc(sid),
                            )
                    else:
                        ssh = self.strings(build, key, kpath)
                    body.put(key, ssh, kloc, vloc)
                elif key == "secrets":
                    raw = build[key]
                    if not isinstance(raw, YList):
                        fail("expected a list", vloc, kpath)
                    secrets = YList(raw.loc)
                    for index in range(len(raw)):
                        secrets.add(
                            self.secret(raw, index, kpath + (index,)),
                            raw.item_loc(index),
                        )
                    body.put(key, secrets, kloc, vloc)
        else:
            fail("`build` is a context path or a mapping", bloc, path)
        if "network" in body and body["network"] not in ("default", "none", "host"):
            fail(
                f"build network {body['network']!r} is not supported (default, none or host)",
                body.value_loc("network"),
                path + ("network",),
            )
        if "image" in service:
            image = self.text(service, "image", ("services", name, "image"))
            tags = YList(service.value_loc("image"))
            tags.add(image, service.value_loc("image"))
            for index, tag in enumerate(body.get("tags", ())):
                if tag != image:
                    tags.add(tag, body["tags"].item_loc(index))
            body.pop("tags", None)
            body.put("tags", tags, service.key_loc("image"), service.value_loc("image"))
        validate(body, bloc, "#/$defs/target", path)
        return body

    def convert(self) -> YMap:
        doc = self.doc
        for key in doc:
            if key.startswith("x-"):
                continue
            if key not in _TOP_KEYS:
                fail(
                    f"unknown compose key {key!r}{did_you_mean(key, _TOP_KEYS)}",
                    doc.key_loc(key),
                    (key,),
                )
        if "include" in doc:
            fail(
                "compose `include` is not supported here: pass each compose file with -f",
                doc.key_loc("include"),
                ("include",),
            )
        services = doc["services"]
        if not isinstance(services, YMap):
            fail("`services` must be a mapping", doc.value_loc("services"), ("services",))
        targets = YMap(services.loc)
        members = YList(services.loc)
        for name in services:
            service = services[name]
            if service is None:
                continue
            if not isinstance(service, YMap):
                fail(
                    "a service is a mapping",
                    services.value_loc(name),
                    ("services", name),
                )
            if "build" not in service:
                continue
            if not NAME_RE.fullmatch(name) or name.startswith("_"):
                fail(
                    f"service name {name!r} cannot be a target name",
                    services.key_loc(name),
                    ("services", name),
                )
            targets.put(
                name,
                self.build_target(name, service),
                services.key_loc(name),
                services.value_loc(name),
            )
            members.add(name, services.key_loc(name))
        out = YMap(doc.loc)
        out.put("version", 1, doc.loc, doc.loc)
        out.put("targets", targets, doc.key_loc("services"), services.loc)
        groups = YMap(doc.loc)
        groups.put("default", members, doc.loc, doc.loc)
        out.put("groups", groups, doc.loc, doc.loc)
        return out


def convert_compose(doc: YMap, source: Source, environ: Mapping[str, str], variables: Mapping[str, str]) -> YMap:
    """The compose document as a build-file document (targets + a `default` group)."""
    env = {**environ, **variables}
    return _Converter(doc, source, env).convert()
