"""Shared fixtures: a busybox root filesystem made from Debian's busybox-static."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_busybox_rootfs, require_root  # noqa: F401  (re-exported for test modules)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")
