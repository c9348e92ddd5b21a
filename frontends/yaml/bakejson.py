"""docker buildx bake's JSON form (`docker-bake.json`) as a build-file document.

bake JSON is `{"variable": {...}, "group": {NAME: {"targets": [...]}}, "target": {...}}`
with bake's attribute names (`cache-from`, `output`, `secret`, `no-cache`, …), which
the build-file schema accepts as aliases; `${VAR}` interpolation works as in bake JSON.
JSON is read by the same guarded YAML reader (JSON is YAML), so duplicate keys, sizes
and locations are handled the same way. Paths resolve from the file's directory.
`pull` is accepted and ignored (Shipyard always resolves bases by digest); other bake
attributes Shipyard does not implement are errors rather than silently dropped.
"""

from __future__ import annotations

from frontends.yaml.matrix import NAME_RE
from frontends.yaml.schema import did_you_mean, validate
from frontends.yaml.yamlsafe import Loc, Source, YMap, fail

__all__ = ["convert_bake_json"]

_TOP_KEYS = ("variable", "group", "target")
_UNSUPPORTED = ("annotations", "attest", "call", "shm-size", "ulimits")
_IGNORED = ("pull",)


def convert_bake_json(doc: object, source: Source) -> YMap:
    if not isinstance(doc, YMap):
        fail(
            "a bake file is a JSON object with target, group and variable",
            Loc(source, 1, 1),
        )
    for key in doc:
        if key == "function":
            fail("bake HCL functions are not supported", doc.key_loc(key), (key,))
        if key not in _TOP_KEYS:
            fail(
                f"unknown bake key {key!r}{did_you_mean(key, _TOP_KEYS)}",
                doc.key_loc(key),
                (key,),
            )
        if not isinstance(doc[key], YMap):
            fail("expected an object", doc.value_loc(key), (key,))
    out = YMap(doc.loc)
    out.put("version", 1, doc.loc, doc.loc)
    if "variable" in doc:
        variables = doc["variable"]
        for name in variables:
            validate(
                name,
                variables.key_loc(name),
                "#/properties/variables/propertyNames",
                ("variable", name),
            )
            validate(
                variables[name],
                variables.value_loc(name),
                "#/$defs/variable",
                ("variable", name),
            )
        out.put("variables", variables, doc.key_loc("variable"), doc.value_loc("variable"))
    if "group" in doc:
        groups = doc["group"]
        for name in groups:
            if not NAME_RE.fullmatch(name):
                fail(
                    f"invalid group name {name!r}",
                    groups.key_loc(name),
                    ("group", name),
                )
            validate(groups[name], groups.value_loc(name), "#/$defs/group", ("group", name))
        out.put("groups", groups, doc.key_loc("group"), doc.value_loc("group"))
    if "target" in doc:
        raw = doc["target"]
        targets = YMap(raw.loc)
        for name in raw:
            path = ("target", name)
            if not NAME_RE.fullmatch(name):
                fail(f"invalid target name {name!r}", raw.key_loc(name), path)
            body = raw[name]
            if not isinstance(body, YMap):
                fail("expected an object", raw.value_loc(name), path)
            for key in body:
                if key in _UNSUPPORTED:
                    fail(
                        f"bake attribute {key!r} is not supported",
                        body.key_loc(key),
                        path + (key,),
                    )
            body = body.without(*_IGNORED)
            validate(body, body.loc, "#/$defs/target", path)
            targets.put(name, body, raw.key_loc(name), raw.value_loc(name))
        out.put("targets", targets, doc.key_loc("target"), doc.value_loc("target"))
    return out
