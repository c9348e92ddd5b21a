"""select_runtime: real probes (runc works here, Debian's crun refuses), and the cache."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from engine.errors import RuntimeBackendError, UsageError
from engine.runtime import select_runtime
from engine.runtime.probe import ProbeCache, Verdict, probe_key

CRUN_HYBRID_ERROR = "cgroups in hybrid mode not supported"


def _require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is not installed (apt-get install {binary})")
    return os.path.realpath(path)


@pytest.fixture
def path_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Replace PATH by a directory holding only the runtimes named (as copies)."""

    def make(*names: str) -> Path:
        bindir = tmp_path / "bin"
        bindir.mkdir(exist_ok=True)
        for name in names:
            shutil.copy2(_require(name), bindir / name)
        monkeypatch.setenv("PATH", str(bindir))
        return bindir

    return make


def test_auto_picks_runc(tmp_path: Path) -> None:
    _require("runc")
    runtime = select_runtime("auto", tmp_path)
    assert runtime.name == "runc"
    cache = json.loads((tmp_path / "runtime" / "probe.json").read_text())
    assert cache["runc"]["ok"] is True


def test_auto_skips_crun_that_cannot_start_containers(tmp_path: Path, path_with) -> None:
    path_with("crun")  # runc absent: auto must try crun, find it broken, fall back
    runtime = select_runtime("auto", tmp_path)
    assert runtime.name == "builtin"
    cache = json.loads((tmp_path / "runtime" / "probe.json").read_text())
    assert cache["crun"]["ok"] is False
    assert CRUN_HYBRID_ERROR in cache["crun"]["reason"]


def test_explicit_crun_gives_a_clear_error(tmp_path: Path) -> None:
    _require("crun")
    with pytest.raises(RuntimeBackendError) as info:
        select_runtime("crun", tmp_path)
    message = str(info.value)
    assert message.startswith("runtime crun cannot start containers: ")
    assert CRUN_HYBRID_ERROR in message
    assert "\n" not in message


def test_explicit_runtime_missing_from_path(tmp_path: Path, path_with) -> None:
    path_with()
    with pytest.raises(RuntimeBackendError, match="runtime runc cannot start containers: runc is not installed"):
        select_runtime("runc", tmp_path)


def test_explicit_runc_and_builtin(tmp_path: Path) -> None:
    _require("runc")
    assert select_runtime("runc", tmp_path).name == "runc"
    assert select_runtime("builtin", tmp_path).name == "builtin"


def test_unknown_choice_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown runtime 'docker'"):
        select_runtime("docker", tmp_path)


def test_cached_verdict_is_used_until_the_binary_changes(tmp_path: Path, path_with) -> None:
    bindir = path_with("runc")
    runc = str(bindir / "runc")
    cache = ProbeCache(tmp_path)
    # A verdict stored under the current key is trusted: auto skips runc without probing.
    cache.put("runc", probe_key("runc", runc), Verdict(False, "cached verdict"))
    assert select_runtime("auto", tmp_path).name == "builtin"
    # The binary changes (new mtime): the stale verdict is ignored and runc re-probed.
    stat = os.stat(runc)
    os.utime(runc, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert select_runtime("auto", tmp_path).name == "runc"
    assert cache.get("runc", probe_key("runc", runc)) == Verdict(True)


def test_explicit_choice_reprobes_a_cached_failure(tmp_path: Path, path_with) -> None:
    bindir = path_with("runc")
    ProbeCache(tmp_path).put("runc", probe_key("runc", str(bindir / "runc")), Verdict(False, "old failure"))
    assert select_runtime("runc", tmp_path).name == "runc"


def test_kernel_release_is_part_of_the_key() -> None:
    assert os.uname().release in probe_key("runc", _require("runc"))


def test_probe_leaves_no_mounts_or_state(tmp_path: Path) -> None:
    _require("runc")
    select_runtime("runc", tmp_path)
    select_runtime("builtin", tmp_path)
    with open("/proc/self/mountinfo") as handle:
        assert str(tmp_path) not in handle.read()
    assert sorted(p.name for p in (tmp_path / "runtime").iterdir()) == ["probe-rootfs", "probe.json", "runc"]
    assert list((tmp_path / "runtime" / "runc").iterdir()) == []
