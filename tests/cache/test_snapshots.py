"""Both snapshotters on the real kernel: the same operations give the same views."""

import os
import stat

import pytest

from cache.index import CacheIndex
from cache.snapshots import CopySnapshotter, OverlaySnapshotter


def _mounts_under(path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


@pytest.fixture(params=["overlay", "copy"])
def snapshotter(request, tmp_path):
    index = CacheIndex(tmp_path / "index.db")
    cls = OverlaySnapshotter if request.param == "overlay" else CopySnapshotter
    (tmp_path / "layers").mkdir()
    (tmp_path / "mounts").mkdir()
    return cls(index, tmp_path / "layers", tmp_path / "mounts")


def _tree(root):
    out = {}
    for current, dirs, files in os.walk(root):
        rel = os.path.relpath(current, root)
        for name in dirs + files:
            path = os.path.join(current, name)
            key = os.path.normpath(os.path.join(rel, name))
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                out[key] = open(path, "rb").read()
            elif stat.S_ISLNK(st.st_mode):
                out[key] = "->" + os.readlink(path)
            else:
                out[key] = "dir"
    return out


def test_chain_of_changes_gives_the_right_view(snapshotter, tmp_path):
    base = snapshotter.prepare(None)
    os.makedirs(os.path.join(base.root, "etc/conf.d"))
    open(os.path.join(base.root, "etc/conf.d/a"), "w").write("a")
    open(os.path.join(base.root, "etc/keep"), "w").write("keep")
    os.makedirs(os.path.join(base.root, "olddir/sub"))
    open(os.path.join(base.root, "olddir/sub/x"), "w").write("x")
    os.symlink("/etc/keep", os.path.join(base.root, "link"))
    base_id = snapshotter.commit(base)

    child = snapshotter.prepare(base_id)
    assert open(os.path.join(child.root, "etc/keep")).read() == "keep"
    os.unlink(os.path.join(child.root, "etc/conf.d/a"))
    open(os.path.join(child.root, "etc/keep"), "w").write("changed")
    import shutil
    shutil.rmtree(os.path.join(child.root, "olddir"))
    os.makedirs(os.path.join(child.root, "olddir"))
    open(os.path.join(child.root, "olddir/new"), "w").write("new")
    child_id = snapshotter.commit(child)

    with snapshotter.view(child_id) as root:
        assert _tree(root) == {
            "etc": "dir",
            "etc/conf.d": "dir",
            "etc/keep": b"changed",
            "olddir": "dir",
            "olddir/new": b"new",
            "link": "->/etc/keep",
        }
    with snapshotter.view(base_id) as root:
        assert _tree(root)["etc/conf.d/a"] == b"a"
    assert _mounts_under(tmp_path) == []


def test_layer_holds_only_changes_with_whiteouts(snapshotter):
    base = snapshotter.prepare(None)
    open(os.path.join(base.root, "gone"), "w").write("x")
    open(os.path.join(base.root, "stays"), "w").write("y")
    base_id = snapshotter.commit(base)
    child = snapshotter.prepare(base_id)
    os.unlink(os.path.join(child.root, "gone"))
    open(os.path.join(child.root, "added"), "w").write("z")
    child_id = snapshotter.commit(child)
    layer = snapshotter.layer_path(snapshotter.index.snapshot(child_id).layer.dir)
    names = sorted(os.listdir(layer))
    if snapshotter.layer_format == "overlay":
        assert names == ["added", "gone"]
        st = os.lstat(os.path.join(layer, "gone"))
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    else:
        assert names == [".wh.gone", "added"]


def test_abort_leaves_no_layer_and_no_mount(snapshotter, tmp_path):
    base_id = snapshotter.commit(snapshotter.prepare(None))
    active = snapshotter.prepare(base_id)
    open(os.path.join(active.root, "f"), "w").write("x")
    snapshotter.abort(active)
    assert len(os.listdir(tmp_path / "layers")) == 1
    assert _mounts_under(tmp_path) == []
    assert os.listdir(tmp_path / "mounts") == []
