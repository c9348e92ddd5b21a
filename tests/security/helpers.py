"""Hostile inputs made in the test, and proofs that nothing outside a root was touched.

- `Entry` / `tar_bytes`: crafted tar archives (made with `tarfile`, so every hostile
  name, link and device is exactly what the test says).
- `Sentinel`: a host tree outside every root (a secret file, an empty victim dir, a
  file with a hard-link count of 1) and a snapshot of it; `check()` proves it was not
  created in, changed, deleted or hard-linked.
- `oci_layout`: an OCI image layout whose layers are given tar bytes (for `load`, `FROM
  oci-layout://` and pushing with skopeo).
- `leftovers`: mounts, runc containers and staging directories a state root still has.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.e2e.conftest import Shipyard

T0 = 1_650_000_000


@dataclass(frozen=True)
class Entry:
    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    link: str = ""
    mode: int | None = None
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, str] = field(default_factory=dict)


def file(name: str, data: bytes | str = b"", mode: int = 0o644) -> Entry:
    return Entry(name, tarfile.REGTYPE, data.encode() if isinstance(data, str) else data, mode=mode)


def directory(name: str, mode: int = 0o755) -> Entry:
    return Entry(name, tarfile.DIRTYPE, mode=mode)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.SYMTYPE, link=target)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.LNKTYPE, link=target)


def device(name: str, major: int, minor: int, block: bool = True) -> Entry:
    return Entry(name, tarfile.BLKTYPE if block else tarfile.CHRTYPE, mode=0o666, devmajor=major, devminor=minor)


def tar_bytes(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.kind
            info.mtime = T0
            info.mode = entry.mode if entry.mode is not None else (0o755 if entry.kind == tarfile.DIRTYPE else 0o644)
            info.linkname = entry.link
            info.devmajor, info.devminor = entry.devmajor, entry.devminor
            info.pax_headers = dict(entry.pax)
            payload = None
            if entry.kind == tarfile.REGTYPE:
                info.size = len(entry.data)
                payload = io.BytesIO(entry.data)
            tar.addfile(info, payload)
    return buf.getvalue()


def snapshot(root: Path) -> dict[str, tuple]:  # type: ignore[type-arg]
    out = {}
    for current, dirs, files in os.walk(root):
        for name in [""] + dirs + files:
            path = os.path.join(current, name) if name else current
            st = os.lstat(path)
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_mtime_ns, st.st_nlink, digest)
    return out


class Sentinel:
    """A host tree outside every root; `check()` proves nothing in it changed."""

    SECRET = "sentinel-secret-7f3a"

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "victim").mkdir(parents=True)
        (root / "secret.txt").write_text(self.SECRET)
        (root / "keep.txt").write_text("keep me")
        self.before = snapshot(root)

    @property
    def victim(self) -> Path:
        return self.root / "victim"

    @property
    def secret(self) -> Path:
        return self.root / "secret.txt"

    def check(self) -> None:
        after = snapshot(self.root)
        assert after == self.before, f"outside the root, {sorted(set(after.items()) ^ set(self.before.items()))} changed"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_layout(
    path: Path, layers: list[bytes], *, compress: str = "gzip", tag: str = "v1", name: str = "", config: dict | None = None
) -> Path:
    """An OCI image layout at `path` with one image whose layers are the given tars (`name`: what load calls it)."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = sha256(data)
        (blobs / digest.split(":")[1]).write_bytes(data)
        return digest

    descriptors = []
    for layer in layers:
        if compress == "gzip":
            blob, media = gzip.compress(layer, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
        elif compress == "zstd":
            import zstandard

            blob, media = zstandard.ZstdCompressor().compress(layer), "application/vnd.oci.image.layer.v1.tar+zstd"
        else:
            blob, media = layer, "application/vnd.oci.image.layer.v1.tar"
        descriptors.append({"mediaType": media, "digest": put(blob), "size": len(blob)})
    image = {
        "architecture": "amd64",
        "os": "linux",
        "config": config or {"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer) for layer in layers]},
        "history": [{"created_by": "test"} for _ in layers],
    }
    config_bytes = json.dumps(image).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config_bytes), "size": len(config_bytes)},
        "layers": descriptors,
    }
    manifest_bytes = json.dumps(manifest).encode()
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": put(manifest_bytes),
                "size": len(manifest_bytes),
                "annotations": {"org.opencontainers.image.ref.name": tag, **({"io.containerd.image.name": name} if name else {})},
            }
        ],
    }
    (path / "index.json").write_text(json.dumps(index))
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return path


def tar_directory(src: Path, dest: Path) -> Path:
    subprocess.run(["tar", "-C", str(src), "-cf", str(dest), "."], check=True)
    return dest


def leftovers(state: Path) -> list[str]:
    """What a finished shipyard process left: mounts under the state root, runc containers, staging dirs."""
    found = []
    root = str(state.resolve())
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4]
            if point == root or point.startswith(root + "/"):
                found.append(f"mount {point}")
    runc_root = state / "runtime" / "runc"
    if runc_root.is_dir():
        listed = subprocess.run(["runc", "--root", str(runc_root), "list", "-q"], capture_output=True, text=True)
        found += [f"runc container {name}" for name in listed.stdout.split()]
    mounts = state / "mounts"
    if mounts.is_dir():
        found += [f"staging {p.name}" for p in mounts.iterdir() if p.name.startswith("run-")]
    return found


# A child's peak RSS starts from its parent's RSS at fork (Linux copies the high-water
# mark with the mm, and exec keeps it), so the command is started by a small launcher
# process rather than by pytest, and the launcher reports what wait4 says.
_LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as report:
    report.write("%d %d" % (os.waitstatus_to_exitcode(status), usage.ru_maxrss // 1024))
"""


def run_measured(sy: "Shipyard", *args: str) -> tuple[int, str, int]:
    """(exit status, stderr, peak RSS in MiB) of one shipyard command."""
    from tests.e2e.conftest import SHIPYARD

    env = dict(os.environ, SHIPYARD_ROOT=str(sy.root), SHIPYARD_RUNTIME=sy.runtime, **(sy.env or {}))
    report = sy.root.parent / "rusage.txt"
    proc = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(report), *SHIPYARD, *args], env=env, stderr=subprocess.PIPE, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    status, rss = map(int, report.read_text().split())
    return status, proc.stderr, rss
