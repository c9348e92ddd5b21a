"""`shipyard prune` and `shipyard system df` on real builds: docker's semantics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Shipyard, steps, write


@pytest.fixture
def sy(runc_shipyard: Shipyard, tmp_path: Path) -> Shipyard:
    config = write(tmp_path / "config.toml", "[gc]\nenabled = false\n")  # only explicit prunes here
    runc_shipyard.env = {"SHIPYARD_CONFIG": str(config)}
    return runc_shipyard


def _project(base: Path, name: str, extra: str = "") -> Path:
    ctx = base / name
    write(ctx / "Dockerfile", f"FROM busybox:local\nCOPY f.txt /f.txt\nRUN cat /f.txt > /g.txt{extra}\n")
    write(ctx / "f.txt", f"{name}\n")
    return ctx


def _df(sy: Shipyard) -> dict[str, dict]:
    lines = sy.run("system", "df", "--format", "json").stdout.splitlines()
    return {row["Type"]: row for row in map(json.loads, lines)}


def _executed(meta: dict) -> set[str]:
    return {name for name, cached in steps(meta).items() if not cached}


def test_default_prune_keeps_what_images_use_all_removes_every_record(sy: Shipyard, tmp_path: Path) -> None:
    app = _project(tmp_path, "app")
    scratch = _project(tmp_path, "scratch", " && echo scratch")
    sy.build(app, "-t", "app")
    sy.build(scratch)  # no tag: its results are build cache only
    before = _df(sy)
    assert before["Build Cache"]["TotalCount"] == 4 and before["Images"]["TotalCount"] == 2

    out = sy.run("prune").stdout
    assert out.startswith("Deleted build cache objects:\n") and "Total reclaimed space:" in out
    assert _df(sy)["Build Cache"]["TotalCount"] == 2
    assert _executed(sy.build(app, "-t", "app")[1]) == set()  # the image's records stayed
    assert len(_executed(sy.build(scratch)[1])) == 2  # the rest ran again

    sy.run("prune", "--all")
    after = _df(sy)
    assert after["Build Cache"]["TotalCount"] == 0 and after["Images"]["TotalCount"] == 2
    assert sy.run("run", "--rm", "app", "cat", "/g.txt").stdout == "app\n"  # the image is whole
    check = sy.run("system", "check")
    assert check.stdout.strip().endswith("0 errors, 0 kinds of leftovers"), check.stdout


def test_filter_until_and_keep_storage(sy: Shipyard, tmp_path: Path) -> None:
    scratch = _project(tmp_path, "scratch")
    sy.build(scratch)
    assert "Deleted" not in sy.run("prune", "--filter", "until=1h").stdout  # everything is newer
    assert "Deleted" not in sy.run("prune", "--keep-storage", "1GB").stdout  # it all fits
    assert _df(sy)["Build Cache"]["TotalCount"] == 2
    out = sy.run("prune", "--keep-storage", "0", "--verbose").stdout
    assert out.splitlines()[0].split() == ["ID", "TYPE", "RECLAIMABLE", "LAST", "ACCESSED", "DESCRIPTION"]
    assert "[3/3] RUN cat /f.txt > /g.txt" in out
    assert _df(sy)["Build Cache"]["TotalCount"] == 0


def test_df_table_and_verbose(sy: Shipyard, tmp_path: Path) -> None:
    sy.build(_project(tmp_path, "app"), "-t", "app")
    table = sy.run("system", "df").stdout.splitlines()
    assert table[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [line.split()[0] for line in table[1:]] == ["Images", "Containers", "Build", "Cache"]
    verbose = sy.run("system", "df", "-v").stdout
    assert "Build cache usage:" in verbose and "[2/3] COPY f.txt /f.txt" in verbose


def test_bad_prune_flags_are_usage_errors(sy: Shipyard) -> None:
    for args, message in (
        (["--filter", "label=x"], "unknown filter"),
        (["--filter", "until=soon"], "until=soon"),
        (["--keep-storage", "lots"], "invalid size"),
    ):
        proc = sy.run("prune", *args, check=False)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_automatic_gc_after_a_build_follows_the_config(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    config = write(tmp_path / "config.toml", '[gc]\nkeep-bytes = "1"\n')  # keep no build cache at all
    runc_shipyard.env = {"SHIPYARD_CONFIG": str(config)}
    app = _project(tmp_path, "app")
    scratch = _project(tmp_path, "scratch")
    runc_shipyard.build(app, "-t", "app")
    runc_shipyard.build(scratch)
    usage = _df(runc_shipyard)
    assert usage["Build Cache"]["TotalCount"] == 2  # only the records the image shares stay
    assert not _executed(runc_shipyard.build(app, "-t", "app")[1])
    write(config, "[gc]\nkeep-bytes = 12\n")
    bad = write(tmp_path / "bad.toml", "[gc]\nkeep-bytes = 'lots'\n")
    runc_shipyard.env = {"SHIPYARD_CONFIG": str(bad)}  # a broken config never fails a build
    (app / "f.txt").write_text("changed\n")
    runc_shipyard.build(app, "-t", "app")


def test_automatic_gc_after_a_bake_follows_the_config(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    """A bake is a build too: the `[gc]` limits apply after it, to what no image shares."""
    config = write(tmp_path / "config.toml", "[gc]\nenabled = false\n")
    runc_shipyard.env = {"SHIPYARD_CONFIG": str(config)}
    for name in ("one", "two"):
        _project(tmp_path, name, extra=f" && echo {name} >> /g.txt")
    write(tmp_path / "build.yaml", "version: 1\ntargets:\n  one: { context: one }\n  two: { context: two }\n")
    runc_shipyard.run("bake", "--progress", "plain", "one", "two", cwd=tmp_path)
    assert _df(runc_shipyard)["Build Cache"]["TotalCount"] > 0  # GC off: the bake's records stay

    write(config, '[gc]\nkeep-bytes = "1"\n')  # keep no unshared build cache at all
    (tmp_path / "one" / "f.txt").write_text("changed\n")
    runc_shipyard.run("bake", "--progress", "plain", "one", "two", cwd=tmp_path)
    assert _df(runc_shipyard)["Build Cache"]["TotalCount"] == 0
