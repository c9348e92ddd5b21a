"""Hostile input: random and mutated Dockerfiles and words may only parse or raise
DockerfileError — never another exception, never a hang.

The strategies and the checks live in `benchmarks.fuzz_targets`, shared with the long
run `python -m benchmarks.fuzz`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.fuzz_targets import DOCKERFILE_CORPUS, check_dockerfile, check_word, mutated, token_soup, word_cases

FUZZ = settings(
    max_examples=300,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.timeout(300)
@FUZZ
@given(mutated(DOCKERFILE_CORPUS))
def test_mutated_dockerfiles(text: str) -> None:
    check_dockerfile(text)


@pytest.mark.timeout(300)
@FUZZ
@given(st.text(max_size=400))
def test_random_text(text: str) -> None:
    check_dockerfile(text)


@pytest.mark.timeout(300)
@FUZZ
@given(token_soup())
def test_token_soup(text: str) -> None:
    check_dockerfile(text)


@pytest.mark.timeout(300)
@FUZZ
@given(word_cases())
def test_word_expansion(case: tuple[str, str, bool, bool, dict[str, str]]) -> None:
    check_word(*case)
