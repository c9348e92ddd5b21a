"""Fixtures for the security suite: state roots with busybox imported, and a sentinel tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Shipyard, busybox_tar, make_shipyard  # noqa: F401  (busybox_tar is a fixture)
from tests.security.helpers import Sentinel, leftovers


@pytest.fixture
def sentinel(tmp_path: Path) -> Sentinel:
    return Sentinel(tmp_path / "host")


@pytest.fixture(params=["runc", "builtin"])
def shipyard(request: pytest.FixtureRequest, tmp_path: Path, busybox_tar: Path) -> Shipyard:  # noqa: F811
    """A fresh state root per test, for each runtime backend; checked for leftovers after."""
    sy = make_shipyard(tmp_path / "state", busybox_tar, request.param)
    yield sy  # type: ignore[misc]
    assert leftovers(sy.root) == []


@pytest.fixture
def runc_shipyard(tmp_path: Path, busybox_tar: Path) -> Shipyard:  # noqa: F811
    sy = make_shipyard(tmp_path / "state", busybox_tar, "runc")
    yield sy  # type: ignore[misc]
    assert leftovers(sy.root) == []
