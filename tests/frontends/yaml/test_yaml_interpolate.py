"""`${…}` interpolation: the syntax, one pass only, and bounded results."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frontends.yaml.errors import BuildFileError
from frontends.yaml.interpolate import MAX_VALUE_BYTES, Scope, interpolate
from frontends.yaml.yamlsafe import Loc, Source

LOC = Loc(Source("/b.yaml", "b.yaml", "/"), 3, 7)
SCOPE = Scope(
    {"TAG": "dev", "EMPTY": "", "LIST": ["a", "b"], "NESTED": "${TAG}"},
    {"py": "3.12", "os": {"name": "deb"}},
    "app-py3.12",
    "app",
)


def expand(text: str, allow_list: bool = False):
    return interpolate(text, SCOPE, LOC, ("targets", "app", "tags", 0), allow_list)


def test_syntax():
    assert expand("plain") == "plain"
    assert expand("${TAG}-${py}") == "dev-3.12"
    assert expand("${EMPTY:-d} ${EMPTY-d} ${UNSET:-d} ${UNSET-d}") == "d  d d"
    assert expand("${os.name}") == "deb"
    assert expand("${target.name}/${target.short}") == "app-py3.12/app"
    assert expand("$$ $${TAG} $TAG $ ${TAG}$") == "$ ${TAG} $TAG $ dev$"
    assert expand("${UNSET:-a default with spaces}") == "a default with spaces"


def test_one_pass_only():
    assert expand("${NESTED}") == "${TAG}"  # a substituted value is never scanned again


def test_list_only_as_a_whole():
    assert expand("${LIST}", allow_list=True) == ["a", "b"]
    with pytest.raises(BuildFileError, match="list variable LIST can only be used as a whole matrix axis"):
        expand("x${LIST}", allow_list=True)


def test_errors_name_the_location():
    with pytest.raises(BuildFileError) as info:
        expand("${TGA}")
    assert str(info.value) == (
        "b.yaml:3:7: targets.app.tags[0]: unknown variable 'TGA' in ${TGA} (did you mean TAG?) (write $${TGA} for a literal)"
    )
    with pytest.raises(BuildFileError, match="invalid reference \\$\\{a b\\}"):
        expand("${a b}")
    with pytest.raises(
        BuildFileError, match="matrix value os is a mapping: name one of its fields, e.g. \\$\\{os.name\\}"
    ):
        expand("${os}")
    with pytest.raises(BuildFileError, match="unknown variable 'target.nope'"):
        expand("${target.nope}")


def test_output_is_bounded_before_it_is_built():
    scope = Scope({"X": "x" * (MAX_VALUE_BYTES // 2 + 1)})
    with pytest.raises(BuildFileError, match="interpolated value exceeds"):
        interpolate("${X}${X}", scope, LOC, ())


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="${}:-abTAG._ \\", max_size=40))
def test_any_text_gives_a_string_or_a_located_error(text):
    try:
        out = expand(text)
    except BuildFileError as exc:
        assert str(exc).startswith("b.yaml:3:7: targets.app.tags[0]: ")
    else:
        assert isinstance(out, str) and len(out) <= len(text) * 10 + 10
