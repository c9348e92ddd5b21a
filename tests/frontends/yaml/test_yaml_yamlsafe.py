"""The guarded YAML reader: locations, spellings, merge keys, and what it refuses."""

from __future__ import annotations

import pytest

from frontends.yaml.errors import BuildFileError
from frontends.yaml.yamlsafe import Source, YList, YMap, parse_yaml, scalar_text

SOURCE = Source("/r/build.yaml", "build.yaml", "/r")


def parse(text: str):
    return parse_yaml(text, SOURCE)


def error(text: str) -> str:
    with pytest.raises(BuildFileError) as info:
        parse(text)
    return str(info.value)


def test_locations_of_keys_values_and_items():
    doc = parse("a:\n  b: [x, {c: 1}]\n")
    assert isinstance(doc, YMap) and isinstance(doc["a"], YMap)
    assert str(doc.key_loc("a")) == "build.yaml:1:1"
    inner = doc["a"]
    assert str(inner.key_loc("b")) == "build.yaml:2:3" and str(inner.value_loc("b")) == "build.yaml:2:6"
    items = inner["b"]
    assert isinstance(items, YList)
    assert [str(items.item_loc(i)) for i in range(2)] == ["build.yaml:2:7", "build.yaml:2:10"]


def test_scalars_keep_their_spelling():
    doc = parse("a: 1.10\nb: 0755\nc: on\nd: ~\ne: '1.10'\nf: 2024-01-01\n")
    assert doc["a"] == 1.1 and scalar_text(doc, "a") == "1.10"
    assert doc["b"] == 493 and scalar_text(doc, "b") == "0755"
    assert doc["c"] is True and scalar_text(doc, "c") == "on"
    assert doc["d"] is None and scalar_text(doc, "d") == ""
    assert doc["e"] == "1.10"
    assert doc["f"] == "2024-01-01"  # timestamps stay text


def test_merge_keys_and_shared_aliases():
    doc = parse("base: &b {x: 1, y: 2}\nother: &o {z: 3}\nm:\n  <<: [*b, *o]\n  y: 9\n")
    assert doc["m"] == {"y": 9, "x": 1, "z": 3}
    assert str(doc["m"].key_loc("x")) == "build.yaml:1:11"  # merged entries point at their definition
    doc = parse("a: &l [1, 2]\nb: *l\n")
    assert doc["a"] is doc["b"]  # an alias is shared, never copied


def test_merge_key_needs_a_mapping():
    assert (
        error("a: &s 1\nb:\n  <<: *s\n")
        == "build.yaml:3:7: b.<<: a `<<` merge key takes a mapping or a list of mappings"
    )


def test_keys_are_text():
    doc = parse("1: a\ntrue: b\n~: c\n")
    assert list(doc) == ["1", "true", "~"]


def test_complex_keys_refused():
    assert error("? [a]\n: 1\n") == "build.yaml:1:3: mapping keys must be plain scalars"


def test_json_is_read_too():
    doc = parse('{\n\t"target": {"a": {"tags": ["x\\/y"]}}\n}\n')
    assert doc["target"]["a"]["tags"] == ["x/y"]
    assert error('{"a": 1, "a": 2}') == "build.yaml:1:10: a: duplicate key 'a' (first defined at line 1)"


def test_documents():
    assert parse("") is None
    assert parse("# only a comment\n") is None
    assert error("a: 1\n---\nb: 2\n") == "build.yaml:2:1: expected one YAML document, found more"


def test_undefined_alias():
    assert error("a: *nope\n") == "build.yaml:1:4: a: unknown YAML alias *nope"


def test_control_characters():
    assert error("a: b\x00c\n") == "build.yaml:1:5: YAML error: control characters are not allowed"
