"""The published JSON Schema: valid draft 2020-12, what the loader's validator implements,
and the same verdicts as the `jsonschema` package on the example files and on mutations."""

from __future__ import annotations

import copy
import glob
import json
import os
from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frontends.yaml import schema as yschema
from frontends.yaml.errors import BuildFileError
from frontends.yaml.yamlsafe import Loc, Source, parse_yaml
from tests.frontends.yaml.conftest import EXAMPLE

REPO = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SCHEMA = yschema.load_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def parsed(text: str, name: str = "build.yaml") -> Any:
    return parse_yaml(text, Source(name, name, "/"))


def ours_valid(doc: Any) -> bool:
    try:
        yschema.validate(doc, Loc(Source("x", "x", "/"), 1, 1))
    except BuildFileError:
        return False
    return True


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_uses_only_keywords_the_loader_implements():
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if where.endswith(("/properties", "/patternProperties", "/$defs")):
                    walk(value, f"{where}/{key}")
                    continue
                assert key in yschema.SUPPORTED_KEYWORDS, f"{where}: {key}"
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{where}/{index}")

    walk(SCHEMA, "#")


def test_root_copy_for_editors_is_the_same_schema():
    with open(os.path.join(REPO, "build.schema.json"), encoding="utf-8") as f:
        assert json.load(f) == SCHEMA


def test_aliases_have_the_canonical_definition():
    for defs in ("target", "defaults"):
        props = SCHEMA["$defs"][defs]["properties"]
        for alias, canonical in yschema.TARGET_ALIASES.items():
            assert _without_description(props[alias]) == _without_description(props[canonical]), alias


def _without_description(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != "description"}


def test_example_files_validate_with_jsonschema_and_ours():
    documents = [("proposal example", EXAMPLE)]
    for path in sorted(glob.glob(os.path.join(REPO, "examples", "**", "build.yaml"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            documents.append((path, f.read()))
    for name, text in documents:
        doc = parsed(text)
        errors = [e.message for e in VALIDATOR.iter_errors(doc)]
        assert errors == [], name
        assert ours_valid(doc), name


def test_invalid_documents_rejected_by_both():
    for text in (
        "version: 2\n",
        "version: 1\ntargets: {a: {tags: x}}\n",
        "version: 1\ntargets: {a: {steps: [{from: x, run: y}]}}\n",
        "version: 1\ntargets: {'bad name': {}}\n",
        "version: 1\nvariables: {target: x}\n",
        "version: 1\ntargets: {a: {outputs: [{type: bogus}]}}\n",
        "version: 1\ntargets: {a: {matrix: {py: '3.12'}}}\n",
    ):
        doc = parsed(text)
        assert not VALIDATOR.is_valid(doc), text
        assert not ours_valid(doc), text


_KEYS = sorted(
    {
        *SCHEMA["properties"],
        *SCHEMA["$defs"]["target"]["properties"],
        "from", "run", "copy", "src", "dest", "type", "id", "env", "default", "mounts", "x-ext", "bogus",
    }
)  # fmt: skip
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([1.5, 1.0]),
    st.sampled_from(["", "x", "linux/amd64", "/abs", "type=local,dest=x", "network.host", "cache", "3.12", "${V}"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=3),
    max_leaves=8,
)
_BASE = json.loads(json.dumps(parsed(EXAMPLE)))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, prefix + (key,)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(_paths(value, prefix + (index,)))
    return out


_ALL_PATHS = _paths(_BASE)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_ALL_PATHS), st.booleans(), _values), min_size=1, max_size=3))
def test_same_verdict_as_jsonschema_on_mutated_documents(mutations):
    doc = copy.deepcopy(_BASE)
    for path, rename, value in mutations:
        if not path:
            continue
        parent: Any = doc
        try:
            for part in path[:-1]:
                parent = parent[part]
            last = path[-1]
            if isinstance(parent, dict) and last in parent:
                if rename and isinstance(value, str):
                    parent[value or "k"] = parent.pop(last)
                else:
                    parent[last] = value
            elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
                parent[last] = value
        except (KeyError, IndexError, TypeError):
            continue
    assert ours_valid(doc) == VALIDATOR.is_valid(doc)
