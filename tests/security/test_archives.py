"""Hostile archives and layers (reliability.md §1): through the extractor, `ADD`, `load` and `import`.

Every case either lands inside the root or is refused naming the member; a sentinel
tree outside proves nothing was created, changed, hard-linked or deleted there.
Cross-layer cases (layer 1 plants `evil -> /host/dir`, layer 2 writes `evil/x`: GNU tar
CVE-2025-45582's two-step shape) go through a real image: loaded, then built on.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import pytest

from engine.fs.extract import LayerError, extract_layer
from tests.e2e.conftest import Shipyard, make_shipyard, write
from tests.security.helpers import (
    Sentinel,
    device,
    directory,
    file,
    hardlink,
    leftovers,
    oci_layout,
    symlink,
    tar_bytes,
    tar_directory,
)

# --------------------------------------------------------------------------- the extractor itself

CONTAINED = "contained"


def _cases(s: Sentinel) -> list[tuple[str, list, str]]:
    """(case, members, expected): CONTAINED, or a fragment of the refusal message."""
    victim, secret = str(s.victim), str(s.secret)
    up = "../" * 12
    return [
        ("dotdot", [file(f"{up}{victim.lstrip('/')}/pwn", "x")], "escapes the destination"),
        ("dotdot-inner", [file("a/../../pwn", "x")], "escapes the destination"),
        ("absolute", [file(f"{victim}/pwn", "x"), file("/etc/passwd", "root")], CONTAINED),
        # A link to a directory the root lacks is refused as a parent (nothing to resolve
        # it to inside); one whose target exists inside is followed there.
        ("symlink-then-file", [symlink("evil", victim), file("evil/pwn", "x")], "symlink to a missing target"),
        ("symlink-then-dir", [symlink("d", victim), directory("d/sub"), file("d/sub/pwn", "x")], "symlink to a missing target"),
        ("abs-symlink-then-file", [directory("tmp"), symlink("evil", "/tmp"), file("evil/pwn", "x")], CONTAINED),
        ("rel-symlink-then-file", [directory("tmp"), symlink("evil", up + "tmp"), file("evil/pwn", "x")], CONTAINED),
        ("symlinked-dir-chain", [directory("tmp"), symlink("a", "b"), symlink("b", "/tmp"), file("a/pwn", "x")], CONTAINED),
        ("hardlink-outside", [hardlink("h", f"{up}{secret.lstrip('/')}")], "escapes the destination"),
        ("hardlink-absolute", [hardlink("h", secret)], "not found"),
        ("hardlink-through-symlink", [symlink("l", str(s.root)), hardlink("h", "l/secret.txt")], "not found"),
        # python/cpython#157190: a hard link to a symlink, then metadata set through it.
        ("hardlink-to-symlink", [symlink("l", secret), hardlink("h", "l"), file("h", "y", mode=0o777)], CONTAINED),
        ("symlink-loop", [symlink("a", "b"), symlink("b", "a"), file("a/pwn", "x")], "symbolic links"),
    ]


@pytest.mark.parametrize("mode", ["overlay", "oci", "apply"])
def test_hostile_members_are_contained_or_refused(tmp_path: Path, sentinel: Sentinel, mode: str) -> None:
    for case, members, expected in _cases(sentinel):
        dest = tmp_path / f"{mode}-{case}"
        dest.mkdir()
        stream = io.BytesIO(tar_bytes(members))
        if expected == CONTAINED:
            extract_layer(stream, str(dest), mode=mode)  # type: ignore[arg-type]
        else:
            with pytest.raises(LayerError, match=expected):
                extract_layer(stream, str(dest), mode=mode)  # type: ignore[arg-type]
        sentinel.check()
        # Whatever was written is inside dest: every entry's real path starts there.
        for current, dirs, files in os.walk(dest):
            for name in dirs + files:
                assert os.path.realpath(os.path.join(current, name), strict=False).startswith(str(dest)) or os.path.islink(
                    os.path.join(current, name)
                ), (case, name)
    for case in ("abs-symlink-then-file", "rel-symlink-then-file"):
        assert (tmp_path / f"{mode}-{case}" / "tmp" / "pwn").read_text() == "x"  # the link was followed *inside*
    assert (tmp_path / f"{mode}-absolute" / "etc" / "passwd").read_text() == "root"
    assert os.readlink(tmp_path / f"{mode}-symlink-then-file" / "evil") == str(sentinel.victim)  # stored verbatim


def test_a_2000_level_symlink_chain_fails_fast(tmp_path: Path, sentinel: Sentinel) -> None:
    members = [symlink(f"l{i}", f"l{i + 1}") for i in range(2_000)] + [symlink("l2000", str(sentinel.victim))]
    members.append(file("l0/pwn", "x"))
    data = tar_bytes(members)
    started = time.monotonic()
    with pytest.raises(LayerError, match="symbolic links"):
        extract_layer(io.BytesIO(data), str(tmp_path), mode="oci")
    assert time.monotonic() - started < 10
    sentinel.check()


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\0" * 511 + b"\1" + b"\0" * 512, "checksum"),  # not a header
        (tar_bytes([file("a", "x" * 2000)])[:1700], "truncated"),
        (tar_bytes([file("a", "x", mode=0o644)]).replace(b"ustar", b"usta\xff", 1), "checksum"),
    ],
)
def test_malformed_tars_fail_cleanly(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(LayerError, match=message):
        extract_layer(io.BytesIO(data), str(tmp_path), mode="oci")


# --------------------------------------------------------------------------- ADD of local archives


def _export(sy: Shipyard, ctx: Path, out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    return sy.build(ctx, "-o", f"type=local,dest={out}", *args, check=False)


def test_add_keeps_hostile_archives_inside_the_image(runc_shipyard: Shipyard, tmp_path: Path, sentinel: Sentinel) -> None:
    sy = runc_shipyard
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    adds = []
    for case, members, expected in _cases(sentinel):
        if expected == CONTAINED:
            (ctx / f"{case}.tar").write_bytes(tar_bytes(members))
            adds.append(f"ADD {case}.tar /{case}/\n")
    (ctx / "a.txt").write_text("a")
    write(
        ctx / "Dockerfile",
        "FROM busybox:local\n"
        + "".join(adds)
        # a later COPY and RUN through the planted links: still inside
        + "COPY a.txt /abs-symlink-then-file/evil/\nRUN echo run > /abs-symlink-then-file/evil/run.txt && ls /rel-symlink-then-file/evil\n",
    )
    out = tmp_path / "out"
    proc, _ = _export(sy, ctx, out)
    assert proc.returncode == 0, proc.stderr
    sentinel.check()
    # ADD extracts with the destination directory as the root: `/tmp` there is /abs-…/tmp;
    # the later COPY and RUN resolve the same link in the image: `/tmp`.
    assert os.listdir(out / "abs-symlink-then-file" / "tmp") == ["pwn"]
    assert sorted(os.listdir(out / "tmp")) == ["a.txt", "run.txt"]
    assert (out / "absolute" / "etc" / "passwd").read_text() == "root"
    assert (out / "absolute" / sentinel.victim.relative_to("/") / "pwn").read_text() == "x"

    for case, members, expected in _cases(sentinel):
        if case not in ("dotdot", "symlink-then-file", "hardlink-outside", "symlink-loop"):
            continue
        bad = tmp_path / f"bad-{case}"
        bad.mkdir()
        (bad / "x.tar").write_bytes(tar_bytes(members))
        write(bad / "Dockerfile", "FROM busybox:local\nADD x.tar /x/\n")
        proc, _ = sy.build(bad, check=False)
        assert proc.returncode == 1, (case, proc.stderr)
        assert expected in proc.stderr and "Dockerfile:2" in proc.stderr and "Traceback" not in proc.stderr, (case, proc.stderr)
    sentinel.check()
    assert leftovers(sy.root) == []


# --------------------------------------------------------------------------- layers: load, FROM, import


def _two_step_layers(s: Sentinel) -> list[bytes]:
    up = "../" * 12
    first = tar_bytes(
        [
            symlink("evil", str(s.victim)),
            symlink("rel", up + str(s.victim).lstrip("/")),
            symlink("secret", str(s.secret)),
            directory("etc"),
            file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            hardlink("etc/passwd-link", "etc/passwd"),
        ]
    )
    second = tar_bytes(
        [
            file("evil/pwn", "layer2"),
            file("rel/pwn", "layer2"),
            hardlink("evil/hl", "evil/pwn"),
            file("secret", "overwritten"),  # replaces the link; never writes through it
        ]
    )
    return [first, second]


@pytest.mark.parametrize("snapshotter", ["overlay", "copy"])
def test_two_step_layer_attack_stays_inside(tmp_path: Path, busybox_tar: Path, sentinel: Sentinel, snapshotter: str) -> None:
    sy = make_shipyard(tmp_path / "state", busybox_tar, "runc", env={"SHIPYARD_SNAPSHOTTER": snapshotter})
    layout = oci_layout(tmp_path / "layout", [busybox_tar.read_bytes(), *_two_step_layers(sentinel)], tag="v1", name="evil:v1")
    archive = tar_directory(layout, tmp_path / "evil.tar")
    sy.run("load", "-i", str(archive))
    sentinel.check()
    ctx = tmp_path / "ctx"
    write(ctx / "a.txt", "a")
    write(
        ctx / "Dockerfile",
        # The loaded image (by the name load gave it) and the same layout as a named context.
        "FROM evil:v1 AS loaded\nCOPY a.txt /evil/\nCOPY a.txt /rel/\n"
        "RUN cat /evil/pwn /rel/pwn /secret && touch /evil/by-run && ls -la /evil/ > /listing\n"
        "FROM layout\nCOPY --from=loaded /listing /listing\nCOPY a.txt /evil/\n",
    )
    out = tmp_path / "out"
    proc, _ = sy.build(ctx, "--build-context", f"layout=oci-layout://{layout}:v1", "-o", f"type=local,dest={out}", check=False)
    assert proc.returncode == 0, proc.stderr
    sentinel.check()
    listing = (out / "listing").read_text()
    assert "pwn" in listing and "by-run" in listing and "a.txt" in listing
    inside = out / sentinel.victim.relative_to("/")
    assert sorted(os.listdir(out / "evil")) == ["a.txt", "hl", "pwn"]
    assert not inside.exists() or os.listdir(inside) == []
    assert (out / "secret").read_text() == "overwritten"
    assert leftovers(sy.root) == []


def test_import_refuses_and_contains_like_the_others(runc_shipyard: Shipyard, tmp_path: Path, sentinel: Sentinel) -> None:
    sy = runc_shipyard
    picked = ("dotdot", "absolute", "symlink-then-file", "abs-symlink-then-file", "hardlink-outside")
    for case, members, expected in [c for c in _cases(sentinel) if c[0] in picked]:
        archive = tmp_path / f"{case}.tar"
        archive.write_bytes(tar_bytes(members))
        proc = sy.run("import", str(archive), f"imp-{case}:1", check=False)
        if expected == CONTAINED:
            assert proc.returncode == 0, (case, proc.stderr)
        else:
            assert proc.returncode == 1 and expected in proc.stderr and "Traceback" not in proc.stderr, (case, proc.stderr)
    sentinel.check()
    assert list((sy.root / "tmp").iterdir()) == []


# --------------------------------------------------------------------------- device nodes


def test_device_nodes_in_an_image_cannot_reach_host_devices(shipyard: Shipyard, tmp_path: Path, busybox_tar: Path) -> None:
    """A layer may carry device nodes (images ship /dev entries), but a RUN step can never
    open one: runc's device cgroup and the builtin runtime's nodev mounts deny it."""
    root_dev = os.stat("/").st_dev
    layer = tar_bytes(
        [
            directory("hostdev"),
            device("hostdev/disk", os.major(root_dev), os.minor(root_dev), block=True),
            device("hostdev/mem", 1, 1, block=False),  # /dev/mem
            device("hostdev/kmsg", 1, 11, block=False),
        ]
    )
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "devs.tar").write_bytes(layer)
    write(
        ctx / "Dockerfile",
        "FROM busybox:local\nADD devs.tar /\n"
        "RUN for d in /hostdev/disk /hostdev/mem /hostdev/kmsg; do "
        "if head -c 1 $d > /dev/null 2>&1; then echo $d; fi; done > /readable; ls -l /hostdev > /listing\n",
    )
    out = tmp_path / "out"
    proc, _ = shipyard.build(ctx, "-o", f"type=local,dest={out}", check=False)
    assert proc.returncode == 0, proc.stderr
    assert (out / "readable").read_text() == ""
    listing = (out / "listing").read_text()
    assert listing.count("\nb") + listing.startswith("b") >= 1  # the nodes are there, as nodes
