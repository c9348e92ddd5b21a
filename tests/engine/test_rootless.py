"""Rootless mode's parts: id-map planning, and what changes inside a user namespace.

The namespace tests run a snippet in a real user namespace made by `unshare
--user --map-root-user` (root's one-id map, the same shape as an unprivileged
user's single-id map): there chown to any other id fails, device nodes cannot be
made and overlayfs keeps its markers in `user.` xattrs. The whole rootless path
with unprivileged users is in tests/e2e/test_rootless.py.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from engine import rootless
from engine.rootless import IdRange, plan_mapping, subordinate_ranges
from tests.helpers import REPO, require_root


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def in_userns(code: str, *args: str) -> dict:  # type: ignore[type-arg]
    """Run `code` (which prints one JSON document) in a fresh user namespace as its root."""
    require_root()
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# --- /etc/subuid and the maps ---------------------------------------------------------


def test_subordinate_ranges_match_name_or_uid_and_skip_junk(tmp_path: Path) -> None:
    subuid = write(
        tmp_path / "subuid",
        "alice:100000:65536\n"
        "bob:165536:65536\n"
        "# a comment\n"
        "1001:300000:10\n"
        "alice:notanumber:5\n"
        "alice:400000:0\n"
        "alice:500000:100\n",
    )
    assert subordinate_ranges(str(subuid), "alice", 1001) == ((100000, 65536), (300000, 10), (500000, 100))
    assert subordinate_ranges(str(subuid), "carol", 1002) == ()
    assert subordinate_ranges(str(tmp_path / "missing"), "alice", 1001) == ()


def test_plan_mapping_stacks_ranges_after_the_users_own_id(tmp_path: Path) -> None:
    subuid = write(tmp_path / "subuid", "alice:100000:65536\nalice:300000:10\n")
    subgid = write(tmp_path / "subgid", "alice:200000:65536\n")
    mapping = plan_mapping(1001, 1002, "alice", subuid=str(subuid), subgid=str(subgid), helpers=True)
    assert mapping.kind == "subid"
    assert mapping.uids == (IdRange(0, 1001, 1), IdRange(1, 100000, 65536), IdRange(65537, 300000, 10))
    assert mapping.gids == (IdRange(0, 1002, 1), IdRange(1, 200000, 65536))
    assert [r.line() for r in mapping.gids] == ["0 1002 1", "1 200000 65536"]


@pytest.mark.parametrize(
    "subgid_text, helpers",
    [
        ("", True),  # no gid range: a uid range alone cannot make a usable map
        ("alice:200000:65536\n", False),  # no newuidmap/newgidmap to write it
    ],
)
def test_plan_mapping_falls_back_to_a_single_id(tmp_path: Path, subgid_text: str, helpers: bool) -> None:
    subuid = write(tmp_path / "subuid", "alice:100000:65536\n")
    subgid = write(tmp_path / "subgid", subgid_text)
    mapping = plan_mapping(1001, 1002, "alice", subuid=str(subuid), subgid=str(subgid), helpers=helpers)
    assert mapping.kind == "single"
    assert mapping.uids == (IdRange(0, 1001, 1),)
    assert mapping.gids == (IdRange(0, 1002, 1),)


def test_mapped_checks_every_range() -> None:
    ranges = (IdRange(0, 1001, 1), IdRange(1, 100000, 65536))
    assert rootless.mapped(0, ranges) and rootless.mapped(5, ranges) and rootless.mapped(65536, ranges)
    assert not rootless.mapped(65537, ranges)
    assert not rootless.mapped(5, (IdRange(0, 1001, 1),))


# --- where are we ---------------------------------------------------------------------


def test_host_root_is_not_rootless() -> None:
    require_root()
    assert not rootless.in_user_namespace()
    assert rootless.host_root() and not rootless.rootless() and not rootless.single_id()
    assert rootless.enter(Path("/nonexistent")) is False  # root never enters a namespace


def test_root_of_a_user_namespace_is_rootless_and_keeps_its_state_root(tmp_path: Path) -> None:
    got = in_userns(
        """
        import json, os
        os.environ.pop("SHIPYARD_ROOT", None)
        os.environ["XDG_DATA_HOME"] = "/xdg"
        from engine import rootless
        from engine.state import default_root
        from engine.runtime.ocispec import nofile_limit
        import resource
        print(json.dumps({
            "euid": os.geteuid(),
            "in_userns": rootless.in_user_namespace(),
            "host_root": rootless.host_root(),
            "single": rootless.single_id(),
            "root": str(default_root()),
            "nofile": nofile_limit(),
            "hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        }))
        """
    )
    assert got["euid"] == 0 and got["in_userns"] and not got["host_root"] and got["single"]
    assert got["root"] == "/xdg/shipyard"  # not /var/lib/shipyard: it is not the host's root
    # Raising the hard limit needs CAP_SYS_RESOURCE of the host's namespace.
    assert got["nofile"] == min(got["hard"], 1048576)


# --- snapshots and extraction in a user namespace ------------------------------------------


def _layer_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, extra in [
            ("etc", tarfile.DIRTYPE, {}),
            ("etc/.wh..wh..opq", tarfile.REGTYPE, {}),
            ("etc/owned", tarfile.REGTYPE, {"uid": 1234, "gid": 2345}),
            ("etc/mine", tarfile.REGTYPE, {}),
            ("console", tarfile.CHRTYPE, {"devmajor": 5, "devminor": 1}),
            ("fifo", tarfile.FIFOTYPE, {}),
            (".wh.gone", tarfile.REGTYPE, {}),
        ]:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            for key, value in extra.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def test_overlay_extraction_in_a_user_namespace(tmp_path: Path) -> None:
    """Unmapped owners stay root's, device nodes are skipped, opaque dirs use user.overlay.opaque."""
    (tmp_path / "layer.tar").write_bytes(_layer_tar())
    dest = tmp_path / "dest"
    dest.mkdir()
    got = in_userns(
        """
        import json, os, stat, sys
        from engine.fs.extract import extract_layer
        layer, dest = sys.argv[1], sys.argv[2]
        with open(layer, "rb") as f:
            stats = extract_layer(f, dest, mode="overlay")
        owned = os.lstat(os.path.join(dest, "etc/owned"))
        gone = os.lstat(os.path.join(dest, "gone"))
        print(json.dumps({
            "owners_kept": stats.owners_kept,
            "devices_skipped": stats.devices_skipped,
            "owned": [owned.st_uid, owned.st_gid],
            "console": os.path.lexists(os.path.join(dest, "console")),
            "fifo": stat.S_ISFIFO(os.lstat(os.path.join(dest, "fifo")).st_mode),
            "whiteout": [stat.S_ISCHR(gone.st_mode), gone.st_rdev],
            "xattrs": os.listxattr(os.path.join(dest, "etc")),
        }))
        """,
        str(tmp_path / "layer.tar"),
        str(dest),
    )
    assert got["owners_kept"] == 1 and got["owned"] == [0, 0]
    assert got["devices_skipped"] == 1 and not got["console"]
    assert got["fifo"]
    assert got["whiteout"] == [True, 0]  # a 0/0 device: overlayfs in a user namespace may make it
    assert got["xattrs"] == ["user.overlay.opaque"]


def test_overlay_snapshot_in_a_user_namespace(tmp_path: Path) -> None:
    """The overlay snapshotter mounts with userxattr there; what a step removes becomes a
    whiteout and a recreated directory an opaque one, as the layer tar writer reads them."""
    got = in_userns(
        """
        import json, os, shutil, sys
        from pathlib import Path
        from engine import linux
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
        from cache.index import CacheIndex
        from cache.snapshots import OverlaySnapshotter, overlay_supported
        from engine.fs.layertar import write_layer_tar
        import io, tarfile
        root = Path(sys.argv[1])
        for sub in ("layers", "mounts", "tmp"):
            (root / sub).mkdir()
        ok = overlay_supported(root / "tmp")
        snap = OverlaySnapshotter(CacheIndex(root / "index.db"), root / "layers", root / "mounts")
        base = snap.prepare(None)
        os.makedirs(os.path.join(base.root, "d"))
        open(os.path.join(base.root, "d", "old"), "w").close()
        open(os.path.join(base.root, "f"), "w").close()
        parent = snap.commit(base)
        step = snap.prepare(parent)
        options = [line for line in open("/proc/self/mounts") if step.root in line][0]
        os.unlink(os.path.join(step.root, "f"))
        shutil.rmtree(os.path.join(step.root, "d"))
        os.mkdir(os.path.join(step.root, "d"))
        open(os.path.join(step.root, "d", "new"), "w").close()
        child = snap.commit(step)
        layer = snap.layer_path(snap.index.snapshot(child).layer.dir)
        out = io.BytesIO()
        write_layer_tar(layer, out, whiteouts="overlay")
        out.seek(0)
        names = sorted(tarfile.open(fileobj=out).getnames())
        print(json.dumps({"supported": ok, "options": options, "names": names}))
        """,
        str(tmp_path),
    )
    assert got["supported"]
    assert "userxattr" in got["options"]
    assert got["names"] == sorted([".wh.f", "d", "d/.wh..wh..opq", "d/new"]), got["names"]


def test_container_config_in_a_user_namespace() -> None:
    """As `runc spec --rootless`: /sys bound from the host, no cgroup mount, no gid=5
    when the map has no gid 5."""
    got = in_userns(
        """
        import json
        from engine.runtime.base import ProcessSpec
        from engine.runtime.ocispec import build_config
        config = build_config("/r", ProcessSpec(args=("true",)), hosts_file="/h", resolv_file="/rc", cgroup_mount=True)
        print(json.dumps([[m.destination, m.type, m.source, list(m.options)] for m in config.mounts]))
        """
    )
    mounts = {destination: (kind, source, options) for destination, kind, source, options in got}
    assert mounts["/sys"] == ("bind", "/sys", ["rbind", "nosuid", "noexec", "nodev", "ro"])
    assert "/sys/fs/cgroup" not in mounts
    assert not any(option.startswith("gid=") for option in mounts["/dev/pts"][2])
