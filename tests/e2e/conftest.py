"""End-to-end fixtures: a state root with the busybox base imported, and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import make_busybox_rootfs, require_root

SHIPYARD = [sys.executable, "-m", "engine.cli"]


@dataclass
class Shipyard:
    root: Path
    runtime: str = "auto"
    env: dict[str, str] | None = None

    def run(self, *args: str, check: bool = True, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        env = dict(os.environ, SHIPYARD_ROOT=str(self.root), SHIPYARD_RUNTIME=self.runtime, **(self.env or {}))
        proc = subprocess.run(SHIPYARD + list(args), capture_output=True, text=True, env=env, timeout=timeout, **kwargs)
        if check and proc.returncode != 0:
            raise AssertionError(f"shipyard {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def build(self, context: Path, *extra: str, check: bool = True) -> tuple[subprocess.CompletedProcess, dict]:
        meta = context.parent / f"meta-{os.getpid()}.json"
        if meta.exists():
            meta.unlink()
        proc = self.run("build", "--progress", "plain", "--metadata-file", str(meta), *extra, str(context), check=check)
        data = json.loads(meta.read_text()) if meta.exists() else {}
        return proc, data


def steps(metadata: dict) -> dict[str, bool]:
    """step name → cached."""
    return {s["name"]: s["cached"] for s in metadata["shipyard.steps"]}


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rootfs = make_busybox_rootfs(tmp_path_factory.mktemp("bbroot") / "rootfs")
    tar = rootfs.parent / "busybox.tar"
    subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
    return tar


def make_shipyard(root: Path, busybox_tar: Path, runtime: str = "auto", env: dict[str, str] | None = None) -> Shipyard:
    require_root()
    sy = Shipyard(root, runtime, env)
    sy.run("import", str(busybox_tar), "-t", "busybox:local")
    return sy


@pytest.fixture(params=["runc", "builtin"])
def shipyard(request: pytest.FixtureRequest, tmp_path: Path, busybox_tar: Path) -> Shipyard:
    """A fresh state root per test, for each runtime backend."""
    return make_shipyard(tmp_path / "state", busybox_tar, request.param)


@pytest.fixture
def runc_shipyard(tmp_path: Path, busybox_tar: Path) -> Shipyard:
    return make_shipyard(tmp_path / "state", busybox_tar, "runc")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
