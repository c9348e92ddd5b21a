"""Property tests: on any input the loader returns a BakeFile or raises BuildFileError —
never another exception, never a hang."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frontends.yaml.errors import BuildFileError
from frontends.yaml.loader import load_bake
from frontends.yaml.model import BakeFile
from tests.frontends.yaml.conftest import EXAMPLE

pytestmark = pytest.mark.timeout(120)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def load_text(workdir: Path, text: str | bytes, **kwargs) -> None:
    path = workdir / "build.yaml"
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    path.write_bytes(text)
    try:
        result = load_bake(None, cwd=str(workdir), environ={}, **kwargs)
    except BuildFileError as exc:
        message = str(exc)
        assert message and "\n" not in message.split(": ", 1)[0]
        return
    assert isinstance(result, BakeFile)


_YAMLISH = st.sampled_from(list(":-{}[],&*!|>'\"#%@`?$ \n\t") + ["${", "<<", "---", "~", "null", "1.5", "x", "  "])
_edits = st.lists(
    st.tuples(
        st.sampled_from(["delete", "insert", "dup_line", "swap"]),
        st.floats(0, 1),
        st.floats(0, 1),
        st.lists(_YAMLISH, max_size=4),
    ),
    min_size=1,
    max_size=4,
)


@SETTINGS
@given(_edits)
def test_mutated_example(workdir, edits):
    text = EXAMPLE
    for kind, a, b, chars in edits:
        i = int(a * len(text))
        if kind == "delete":
            text = text[:i] + text[i + int(b * 20) :]
        elif kind == "insert":
            text = text[:i] + "".join(chars) + text[i:]
        else:
            lines = text.splitlines(keepends=True)
            x, y = int(a * (len(lines) - 1)), int(b * (len(lines) - 1))
            if kind == "dup_line":
                lines.insert(y, lines[x])
            else:
                lines[x], lines[y] = lines[y], lines[x]
            text = "".join(lines)
    load_text(workdir, text)


_KEYS = st.sampled_from(
    [
        "version", "include", "variables", "defaults", "groups", "targets", "x-a", "api", "_base", "t",
        "inherits", "matrix", "name", "context", "dockerfile", "dockerfile_inline", "steps", "args", "labels",
        "tags", "contexts", "result", "needs", "outputs", "cache_from", "cache-to", "secrets", "entitlements",
        "platforms", "no_cache", "network", "from", "run", "copy", "add", "env", "arg", "mounts", "src", "dest",
        "type", "id", "default", "pattern", "healthcheck", "expose", "test", "py",
    ]
)  # fmt: skip
_WORDS = [
    "", "x", "api", "_base", "t-${py}", "${py}", "${V}", "target:api", "target:t-1", "type=local,dest=o",
    "/abs", ".", "3.12", "network.host", "cache", "[a", "^(a", "$$", "docker-image://x", "oci-layout://l",
]  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from(_WORDS),
    st.text(max_size=6),
)
_VALUES = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4), max_leaves=12
)


@SETTINGS
@given(st.dictionaries(_KEYS, _VALUES, max_size=6), st.booleans())
def test_random_documents(workdir, doc, versioned):
    if versioned:
        doc["version"] = 1
    load_text(workdir, yaml.safe_dump(doc, allow_unicode=True))


@SETTINGS
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_random_bytes_and_text(workdir, data):
    load_text(workdir, data)


@SETTINGS
@given(
    st.lists(st.text(alphabet="*.=+api-tagsrg,platformx/_", max_size=25), max_size=3),
    st.dictionaries(st.sampled_from(["PY_DEFAULT", "PY_VERSIONS", "TAG", "NOPE"]), st.text(max_size=12), max_size=3),
)
def test_random_command_line_overrides(workdir, sets, variables):
    load_text(workdir, EXAMPLE, sets=sets, variables=variables)
