"""Helpers shared by test modules (imported as `tests.helpers`)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load_busybox_module():  # type: ignore[no-untyped-def]
    name = "shipyard_busybox_rootfs"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "busybox_rootfs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


make_busybox_rootfs = _load_busybox_module().make_busybox_rootfs


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (namespaces, overlayfs, runc)")


def processes_with(marker: str) -> list[int]:
    """Pids whose command line contains `marker` (a container's process outliving its build?)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if marker.encode() in handle.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found
