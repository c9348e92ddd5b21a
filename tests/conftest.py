"""Shared fixtures: a busybox root filesystem made from Debian's busybox-static."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load_busybox_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("busybox_rootfs", REPO / "scripts" / "busybox_rootfs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["busybox_rootfs"] = module
    spec.loader.exec_module(module)
    return module


make_busybox_rootfs = _load_busybox_module().make_busybox_rootfs


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (namespaces, overlayfs, runc)")
