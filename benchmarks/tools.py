"""The builders under test, each behind one small interface: reset to cold, build, clean up.

Every build is one subprocess timed with `time.perf_counter` around it, so each tool pays
its own start-up, context transfer, solve and image commit, as a user would see it.
Each runner also reports, per Dockerfile step, whether the tool took it from its cache
(Shipyard from its `--metadata-file`, BuildKit from `--progress plain`, buildah from its
`--> Using cache` lines): a case whose precondition ("all cached", "really cold") did not
hold is then reported as invalid rather than as a number.

What every tool is asked for is the same: build the same Dockerfile over the same context
and tag the result (Shipyard stores it in its image store, docker in its image store,
buildah commits it to its storage).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parent.parent
DOCKER = "/usr/bin/docker"  # the first `docker` on PATH may be a newer client that refuses DOCKER_BUILDKIT=1
ANCHORS = Path(os.environ.get("SHIPYARD_ANCHORS_WORK", "/tmp/shipyard-anchors"))
ANCHOR_BUSYBOX_OCI = ANCHORS / "busybox-oci.tar"
ANCHOR_BUSYBOX_ROOTFS = ANCHORS / "busybox-rootfs.tar"
BASE_TAG = "busybox:local"
BUILD_TIMEOUT_S = 1800.0


class BenchmarkError(Exception):
    """A tool could not do what a case needs (failed build, missing base image, ...)."""


@dataclass(frozen=True)
class BuildSpec:
    context: Path
    dockerfile: Path
    tag: str
    host_network: bool = True  # applies to the anchors; Shipyard's RUN always shares the host network


@dataclass(frozen=True)
class StepReport:
    name: str
    cached: bool


@dataclass(frozen=True)
class BuildResult:
    seconds: float
    steps: tuple[StepReport, ...]
    exact_steps: bool = True  # False: the count of cached steps is right, which ones is a guess


class Tool(Protocol):
    name: str
    label: str

    def unavailable(self) -> str | None:
        """Why this tool cannot run here, or None."""

    def settings(self) -> dict[str, object]:
        """How the tool is invoked, recorded in the JSON results."""

    def reset(self) -> None:
        """Cold state: nothing cached, only the busybox base present (not timed)."""

    def build(self, spec: BuildSpec) -> BuildResult:
        """Run one build (timed); raise BenchmarkError if it fails."""

    def close(self) -> None:
        """Remove what the runs left behind."""


def _timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run with stdout and stderr merged in one pipe (their order matters to the parsers)."""
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, errors="replace", timeout=BUILD_TIMEOUT_S,
    )  # fmt: skip
    return time.perf_counter() - start, proc


def _check(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        raise BenchmarkError(f"{what} failed with exit code {proc.returncode}:\n{tail}")


def _quiet(cmd: list[str], env: dict[str, str] | None = None, what: str = "") -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", timeout=600)
    if what:
        _check(proc, what)
    return proc


def instruction(step_name: str) -> str:
    """`[build 2/4] COPY . /src` → `COPY . /src` (also for buildah's `STEP 2/4: COPY …`)."""
    if step_name.startswith("["):
        return step_name.split("] ", 1)[-1]
    if "STEP " in step_name:
        return step_name.split(": ", 1)[-1]
    return step_name


def is_from(step_name: str) -> bool:
    return instruction(step_name).upper().startswith("FROM ")


# ---------------------------------------------------------------------------- Shipyard


class ShipyardTool:
    """`shipyard --root STATE build …`; cold = a fresh state root with only the base imported."""

    name = "shipyard"
    label = "Shipyard"

    def __init__(self, statedir: Path, runtime: str = "auto") -> None:
        self.runtime = runtime
        self.root = statedir / "shipyard"
        self.meta = statedir / "shipyard-metadata.json"
        self.base_source = statedir / "busybox-rootfs"
        script = Path(sys.executable).parent / "shipyard"
        self.command = [str(script)] if script.exists() else [sys.executable, "-m", "engine.cli"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}

    def unavailable(self) -> str | None:
        proc = subprocess.run([*self.command, "--help"], capture_output=True, cwd=REPO, env=self.env)
        return None if proc.returncode == 0 else f"`{' '.join(self.command)} --help` failed"

    def settings(self) -> dict[str, object]:
        return {"command": self.command, "runtime": self.runtime, "base": str(self._base())}

    def _base(self) -> Path:
        """The anchors' busybox tarball when present (the very bytes docker and buildah use)."""
        if ANCHOR_BUSYBOX_ROOTFS.is_file():
            return ANCHOR_BUSYBOX_ROOTFS
        if not (self.base_source / "bin" / "busybox").exists():
            proc = _quiet([sys.executable, str(REPO / "scripts" / "busybox_rootfs.py"), str(self.base_source)])
            _check(proc, "making the busybox root filesystem")
        return self.base_source

    def reset(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        proc = _quiet([*self.command, "--root", str(self.root), "import", str(self._base()), "-t", BASE_TAG], env=self.env)
        _check(proc, "shipyard import of the busybox base")

    def build(self, spec: BuildSpec) -> BuildResult:
        self.meta.unlink(missing_ok=True)
        cmd = [
            *self.command, "--root", str(self.root), "build",
            "-f", str(spec.dockerfile), "-t", spec.tag, "--progress", "plain",
            "--runtime", self.runtime, "--metadata-file", str(self.meta), str(spec.context),
        ]  # fmt: skip
        seconds, proc = _timed(cmd, env=self.env, cwd=REPO)
        _check(proc, "shipyard build")
        try:
            data = json.loads(self.meta.read_text())
            steps = tuple(StepReport(s["name"], bool(s["cached"])) for s in data["shipyard.steps"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BenchmarkError(f"shipyard wrote no usable --metadata-file: {exc}") from None
        return BuildResult(seconds, steps)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.base_source, ignore_errors=True)
        self.meta.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- docker BuildKit

_BK_NAME = re.compile(r"^#(\d+) (\[[^\]]+\] .*)$")
_BK_CACHED = re.compile(r"^#(\d+) CACHED\s*$")


def parse_buildkit_plain(output: str) -> tuple[StepReport, ...]:
    """Steps from `--progress plain`: `#N [stage i/n] INSTR` names a vertex, `#N CACHED` marks it."""
    names: dict[str, str] = {}
    cached: set[str] = set()
    for line in output.splitlines():
        if m := _BK_CACHED.match(line):
            cached.add(m.group(1))
        elif (m := _BK_NAME.match(line)) and m.group(1) not in names:
            names[m.group(1)] = m.group(2)
    return tuple(
        StepReport(name, vid in cached)
        for vid, name in names.items()
        if not name.startswith(("[internal]", "[auth]"))
    )


class BuildKitTool:
    """`DOCKER_BUILDKIT=1 /usr/bin/docker build`; cold = our images removed + `docker builder prune -af`."""

    name = "buildkit"
    label = "BuildKit"

    def __init__(self) -> None:
        self.env = dict(os.environ, DOCKER_BUILDKIT="1")
        self.tags: set[str] = set()

    def unavailable(self) -> str | None:
        if not os.access(DOCKER, os.X_OK):
            return f"{DOCKER} is not installed"
        if subprocess.run([DOCKER, "info"], capture_output=True).returncode != 0:
            return "the docker daemon is not running (run /work/shared/anchors/setup.sh)"
        if subprocess.run([DOCKER, "image", "inspect", BASE_TAG], capture_output=True).returncode != 0:
            return f"docker has no {BASE_TAG} image (run /work/shared/anchors/setup.sh)"
        return None

    def settings(self) -> dict[str, object]:
        version = _quiet([DOCKER, "version", "--format", "{{.Server.Version}}"]).stdout.strip()
        return {"command": f"DOCKER_BUILDKIT=1 {DOCKER} build --progress plain", "server_version": version}

    def reset(self) -> None:
        if self.tags:
            _quiet([DOCKER, "rmi", "-f", *sorted(self.tags)])
        # busybox:local survives: the anchors pin it with a stopped container.
        _quiet([DOCKER, "builder", "prune", "-af"], what="docker builder prune -af")

    def build(self, spec: BuildSpec) -> BuildResult:
        cmd = [DOCKER, "build", "--progress", "plain", "-f", str(spec.dockerfile), "-t", spec.tag]
        if spec.host_network:
            cmd.append("--network=host")
        self.tags.add(spec.tag)
        seconds, proc = _timed([*cmd, str(spec.context)], env=self.env)
        _check(proc, "docker build")
        return BuildResult(seconds, parse_buildkit_plain(proc.stdout))

    def close(self) -> None:
        if self.tags:
            _quiet([DOCKER, "rmi", "-f", *sorted(self.tags)])
            self.tags.clear()


# ---------------------------------------------------------------------------- buildah

_BUILDAH_STEP = re.compile(r"STEP \d+/\d+: (.*)$")


def parse_buildah(output: str) -> tuple[StepReport, ...]:
    """`STEP i/n: INSTR` names a step; each `--> Using cache` line marks one pending step cached.

    With parallel stages (`--jobs`) the lines of two stages interleave and the cache line
    carries no stage, so it goes to the latest step still pending (a `COPY --from` that
    waits on another stage prints its STEP line early and resolves late). The number of
    cached steps is exact either way, which is what "all cached" and "none cached" need;
    which step missed is a best guess, so BuildResult.exact_steps is False for buildah.
    """
    steps: list[list[object]] = []
    pending: list[int] = []
    for line in output.splitlines():
        if m := _BUILDAH_STEP.search(line):
            steps.append([m.group(0), False])
            if not is_from(m.group(0)):
                pending.append(len(steps) - 1)
        elif line.startswith("--> Using cache") and pending:
            steps[pending.pop()][1] = True
    return tuple(StepReport(str(name), bool(cached)) for name, cached in steps)


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix.rstrip("/") or point.startswith(prefix):
                found.append(point)
    return sorted(found, key=len, reverse=True)


class BuildahTool:
    """`buildah bud --layers` on its own storage; cold = fresh storage seeded from the anchors' OCI tar."""

    name = "buildah"
    label = "buildah"

    def __init__(self, statedir: Path, jobs: int = 8) -> None:
        self.base = statedir / "buildah"
        self.jobs = jobs

    def _cmd(self, *args: str) -> list[str]:
        return ["buildah", "--root", str(self.base / "root"), "--runroot", str(self.base / "run"), *args]

    def unavailable(self) -> str | None:
        if shutil.which("buildah") is None:
            return "buildah is not installed"
        if not shutil.which("runc"):
            return "runc is not installed"
        if not ANCHOR_BUSYBOX_OCI.is_file():
            return f"{ANCHOR_BUSYBOX_OCI} is missing (run /work/shared/anchors/setup.sh)"
        return None

    def settings(self) -> dict[str, object]:
        version = _quiet(["buildah", "--version"]).stdout.strip()
        return {
            "command": f"buildah bud --runtime runc --pull=never --layers --jobs {self.jobs}",
            "version": version,
            "storage": str(self.base),
        }

    def _teardown(self) -> None:
        if (self.base / "root").exists():
            _quiet(self._cmd("rm", "--all"))
        for point in _mounts_under(self.base):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)

    def reset(self) -> None:
        self._teardown()
        self.base.mkdir(parents=True)
        pulled = _quiet(self._cmd("pull", "-q", f"oci-archive:{ANCHOR_BUSYBOX_OCI}"), what="buildah pull of the busybox base")
        _quiet(self._cmd("tag", pulled.stdout.strip().splitlines()[-1], f"docker.io/library/{BASE_TAG}"), what="buildah tag")

    def build(self, spec: BuildSpec) -> BuildResult:
        cmd = self._cmd(
            "bud", "--runtime", "runc", "--pull=never", "--layers", "--jobs", str(self.jobs),
            "-f", str(spec.dockerfile), "-t", spec.tag,
        )  # fmt: skip
        if spec.host_network:
            cmd += ["--network", "host"]
        seconds, proc = _timed([*cmd, str(spec.context)])
        _check(proc, "buildah bud")
        return BuildResult(seconds, parse_buildah(proc.stdout), exact_steps=False)

    def close(self) -> None:
        self._teardown()
