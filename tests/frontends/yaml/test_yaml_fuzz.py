"""Property tests: on any input the loader returns a BakeFile or raises BuildFileError —
never another exception, never a hang.

The strategies and the check live in `benchmarks.fuzz_targets`, shared with the long
run `python -m benchmarks.fuzz`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.fuzz_targets import apply_edits, check_yaml, yaml_documents, yaml_edits, yaml_overrides
from tests.frontends.yaml.conftest import EXAMPLE

pytestmark = pytest.mark.timeout(120)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@SETTINGS
@given(yaml_edits())
def test_mutated_example(workdir, edits):
    check_yaml(workdir, apply_edits(EXAMPLE, edits))


@SETTINGS
@given(yaml_documents(), st.booleans())
def test_random_documents(workdir, doc, versioned):
    if versioned:
        doc["version"] = 1
    check_yaml(workdir, yaml.safe_dump(doc, allow_unicode=True))


@SETTINGS
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_random_bytes_and_text(workdir, data):
    check_yaml(workdir, data)


@SETTINGS
@given(yaml_overrides())
def test_random_command_line_overrides(workdir, overrides):
    sets, variables = overrides
    check_yaml(workdir, EXAMPLE, sets=sets, variables=variables)
