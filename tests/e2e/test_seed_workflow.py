"""The user's workflow: build the seed app FROM python:3.11-slim, run it, reach it on a host port.

Docker Hub is out of reach, so `python:3.11-slim` is made from Debian packages
(scripts/python_base.sh, cached per machine) and `shipyard import`ed; `pip install`
inside the build talks to a package index this test serves on 127.0.0.1.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import Shipyard, steps
from tests.helpers import REPO, require_root

WHEEL_CACHE = Path("/var/cache/shipyard/wheels")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def package_index(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A PEP 503 index on 127.0.0.1 holding the one wheel the seed app needs."""
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    wheels = list(WHEEL_CACHE.glob("six-1.16.0-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "six==1.16.0", "-d", str(WHEEL_CACHE)],
            check=True,
            capture_output=True,
        )
        wheels = list(WHEEL_CACHE.glob("six-1.16.0-*.whl"))
    root = tmp_path_factory.mktemp("index")
    (root / "simple" / "six").mkdir(parents=True)
    shutil.copy(wheels[0], root / "simple" / "six" / wheels[0].name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    server.shutdown()


@pytest.fixture(scope="module")
def python_shipyard(tmp_path_factory: pytest.TempPathFactory, package_index: str) -> Shipyard:
    require_root()
    base = tmp_path_factory.mktemp("pybase")
    rootfs = base / "rootfs"
    subprocess.run(["bash", str(REPO / "scripts" / "python_base.sh"), str(rootfs)], check=True)
    (rootfs / "etc" / "pip.conf").write_text(f"[global]\nindex-url = {package_index}\ndisable-pip-version-check = true\n")
    sy = Shipyard(base / "state", "runc")
    sy.run("import", str(rootfs), "-t", "python:3.11-slim", "-c", 'CMD ["python3"]', timeout=300)
    return sy


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    ctx = tmp_path / "seed"
    shutil.copytree(REPO / "examples" / "seed", ctx)
    return ctx


def test_seed_app_builds_with_pip_install(python_shipyard: Shipyard, seed: Path) -> None:
    _, meta = python_shipyard.build(seed, "-t", "my-app")
    s = steps(meta)
    assert not s["[4/5] RUN pip install -r requirements.txt"]
    _, again = python_shipyard.build(seed, "-t", "my-app")
    assert all(steps(again).values())
    (seed / "app.py").write_text((seed / "app.py").read_text() + "\n# edited\n")
    _, edited = python_shipyard.build(seed, "-t", "my-app")
    s = steps(edited)
    assert s["[4/5] RUN pip install -r requirements.txt"], "an app edit must not reinstall requirements"
    assert not s["[5/5] COPY . ."]


def test_seed_app_runs_and_answers_on_a_host_port(python_shipyard: Shipyard, seed: Path) -> None:
    python_shipyard.build(seed, "-t", "my-app")
    port = _free_port()
    proc = python_shipyard.run("run", "-d", "--name", "seed-app", "-p", f"127.0.0.1:{port}:8000", "my-app")
    try:
        deadline = time.time() + 30
        answer = ""
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    answer = response.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert answer == "hello from my-app (six 1.16.0)\n", proc.stdout
    finally:
        python_shipyard.run("rm", "-f", "seed-app", check=False)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
