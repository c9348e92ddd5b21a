"""Choose a runtime by starting a real container with it, and remember the verdict.

A binary on PATH proves nothing: Debian's crun 1.8.1 is installed and refuses every
container on a hybrid cgroup layout. So the probe runs the host's `true` in a
read-only container made of the host's /usr (and friends) bound into an empty
rootfs, through the same code path as a build step. The verdict is cached in
state_root/runtime/probe.json under a key made of the binary's path, mtime and
size, the kernel release and our euid (plus nsinit.py for the builtin runtime, and
the user namespace's id map in rootless mode), so
a runtime upgrade, a new kernel or a different user re-probes instead of trusting
a stale answer. `auto` trusts a cached failure; an explicit choice re-probes it,
so its error is always fresh.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from engine.errors import BuildCancelled, RuntimeBackendError, UsageError
from engine.runtime.base import BindMount, ProcessSpec, Runtime
from engine.runtime.builtin import NSINIT, BuiltinRuntime, helper_python
from engine.runtime.oci import OciRuntime
from engine.runtime.workdir import sweep_stale

CHOICES = ("auto", "runc", "crun", "builtin")
AUTO_ORDER = ("runc", "crun", "builtin")
PROBE_TIMEOUT_SECONDS = 20.0
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""


def _file_key(path: str) -> str:
    st = os.stat(path)
    return f"{path}:{st.st_mtime_ns}:{st.st_size}"


def probe_key(name: str, binary: str) -> str:
    parts = [name, _file_key(binary), os.uname().release, f"euid={os.geteuid()}"]
    from engine.rootless import in_user_namespace, read_map

    if in_user_namespace():  # rootless: which user, and whether it has subordinate ids
        parts.append("userns=" + ",".join(r.line().replace(" ", ":") for r in read_map()))
    if name == "builtin":
        parts.append(_file_key(NSINIT))
    return "|".join(parts)


class ProbeCache:
    """probe.json: runtime name → {key, ok, reason}; rewritten atomically."""

    def __init__(self, state_root: Path) -> None:
        self.path = Path(state_root) / "runtime" / "probe.json"

    def _load(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, name: str, key: str) -> Verdict | None:
        entry = self._load().get(name)
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        return Verdict(bool(entry.get("ok")), str(entry.get("reason", "")))

    def put(self, name: str, key: str, verdict: Verdict) -> None:
        data = self._load()
        data[name] = {"key": key, "ok": verdict.ok, "reason": verdict.reason}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".probe.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a cache we cannot write only costs a re-probe


PROBE_HOST_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")


def _probe_rootfs(state_root: Path) -> tuple[str, tuple[BindMount, ...]]:
    """An empty rootfs plus read-only binds of the host's program directories.

    Merged-/usr symlinks (bin -> usr/bin) are recreated instead of bound. The
    host `/` itself cannot serve: its own /sys and /proc are already mounted
    where the container's go, and the kernel refuses to stack them (EBUSY).
    """
    rootfs = Path(state_root) / "runtime" / "probe-rootfs"
    rootfs.mkdir(parents=True, exist_ok=True)
    mounts = []
    for name in PROBE_HOST_DIRS:
        host = "/" + name
        inside = rootfs / name
        if os.path.islink(host):
            try:
                os.symlink(os.readlink(host), inside)
            except FileExistsError:
                pass
        elif os.path.isdir(host):
            mounts.append(BindMount(source=host, target=host, readonly=True))
    return str(rootfs), tuple(mounts)


def run_probe(runtime: OciRuntime | BuiltinRuntime, state_root: Path) -> Verdict:
    """Start `true` in a small read-only container; ok when it exits 0."""
    output: list[bytes] = []
    cancel = threading.Event()
    timer = threading.Timer(PROBE_TIMEOUT_SECONDS, cancel.set)
    timer.daemon = True
    timer.start()
    try:
        rootfs, mounts = _probe_rootfs(state_root)
        true = os.path.realpath(shutil.which("true") or "/bin/true")
        spec = ProcessSpec(args=(true,), mounts=mounts, readonly_rootfs=True, network="host")
        status = runtime.run(
            rootfs,
            spec,
            container_id=f"probe-{uuid.uuid4().hex[:16]}",
            on_output=lambda _fd, data: output.append(data),
            cancel=cancel,
        )
    except BuildCancelled:
        return Verdict(False, f"a test container did not finish within {PROBE_TIMEOUT_SECONDS:.0f}s")
    except (RuntimeBackendError, OSError) as exc:
        return Verdict(False, str(exc))
    finally:
        timer.cancel()
    if status == 0:
        return Verdict(True)
    lines = [line.strip() for line in b"".join(output).decode("utf-8", "replace").splitlines() if line.strip()]
    reason = lines[-1] if lines else f"a test container exited with status {status}"
    return Verdict(False, reason)


def _make(name: str, state_root: Path) -> tuple[OciRuntime | BuiltinRuntime | None, str, str]:
    """(runtime, binary, why-not) for one candidate."""
    if name == "builtin":
        return BuiltinRuntime(state_root), helper_python(), ""
    binary = shutil.which(name)
    if binary is None:
        from engine.rootless import in_user_namespace

        if in_user_namespace():
            # Debian installs runc in /usr/sbin, which is not on an ordinary user's
            # PATH: rootless mode would otherwise never find it.
            binary = shutil.which(name, path=SBIN_PATH)
    if binary is None:
        return None, "", f"{name} is not installed (not found on PATH)"
    return OciRuntime(name, os.path.realpath(binary), state_root), os.path.realpath(binary), ""


def _verdict(name: str, state_root: Path, *, trust_failure: bool) -> tuple[Runtime | None, str]:
    runtime, binary, missing = _make(name, state_root)
    if runtime is None:
        return None, missing
    cache = ProbeCache(state_root)
    key = probe_key(name, binary)
    verdict = cache.get(name, key)
    if verdict is None or (not verdict.ok and not trust_failure):
        verdict = run_probe(runtime, state_root)
        cache.put(name, key, verdict)
    return (runtime, "") if verdict.ok else (None, verdict.reason)


def select_runtime(choice: str, state_root: Path) -> Runtime:
    """The runtime for `choice` (auto|runc|crun|builtin) that can start containers here.

    Also sweeps containers left behind by an engine process that died (see workdir).
    """
    if choice not in CHOICES:
        raise UsageError(f"unknown runtime {choice!r}: choose one of {', '.join(CHOICES)}")
    state_root = Path(state_root)
    sweep_stale(state_root)
    if choice != "auto":
        runtime, reason = _verdict(choice, state_root, trust_failure=False)
        if runtime is None:
            raise RuntimeBackendError(f"runtime {choice} cannot start containers: {reason}")
        return runtime
    reasons = []
    for name in AUTO_ORDER:
        runtime, reason = _verdict(name, state_root, trust_failure=True)
        if runtime is not None:
            return runtime
        reasons.append(f"{name}: {reason}")
    raise RuntimeBackendError("no container runtime can start containers here (" + "; ".join(reasons) + ")")


def open_runtime(name: str, state_root: Path) -> Runtime:
    """The runtime a container was started with, for `exec` and cleanup (no probe:
    it already ran a container here)."""
    runtime, _binary, missing = _make(name, Path(state_root))
    if runtime is None:
        raise RuntimeBackendError(missing)
    return runtime
