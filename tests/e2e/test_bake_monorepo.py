"""`shipyard bake` on the example monorepo (examples/monorepo), end to end through the CLI.

The shared base is built once for every service, an unchanged target is skipped, an
edit rebuilds exactly the targets that read the edited file (and `--explain` names
it), a changed base rebuilds everything built on it, a removed image rebuilds its
target, `--affected` picks exactly the changed targets, and privileges requested in
the file are refused before anything runs unless granted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import Shipyard, make_shipyard
from tests.helpers import REPO

EXAMPLE = REPO / "examples" / "monorepo"
SERVICES = ("api", "worker", "web")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    dest = tmp_path / "monorepo"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("reports"))
    return dest


@pytest.fixture
def sy(tmp_path: Path, busybox_tar: Path) -> Shipyard:
    return make_shipyard(tmp_path / "state", busybox_tar, "runc")


def bake(sy: Shipyard, repo: Path, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
    meta = repo.parent / "bake-meta.json"
    meta.unlink(missing_ok=True)
    proc = sy.run("bake", "--progress", "plain", "--metadata-file", str(meta), *args, cwd=repo, check=check)
    return proc, (json.loads(meta.read_text()) if meta.exists() else {})


def built(metadata: dict) -> set[str]:
    return {name for name, data in metadata.items() if not data.get("shipyard.skipped")}


def executed(metadata: dict) -> list[str]:
    return [s["name"] for data in metadata.values() for s in data["shipyard.steps"] if not s["cached"]]


def test_first_bake_builds_everything_with_the_shared_base_once_then_skips_all(sy: Shipyard, repo: Path) -> None:
    proc, meta = bake(sy, repo, "ci")
    assert set(meta) == {"base", "frontend-assets", *SERVICES, "test-unit", "test-lint"}
    assert built(meta) == set(meta)
    runs = executed(meta)
    assert runs.count("[base 3/4] RUN sh /opt/common/setup.sh") == 1  # one execution for three services and two tests
    assert sum("setup.sh" in name for name in runs) == 2  # the COPY and the RUN, nowhere else
    for service in SERVICES:
        first = meta[service]["shipyard.steps"][0]
        assert first["name"] == f"[{service} 1/{len(meta[service]['shipyard.steps'])}] FROM target:base"
        assert first["cached"] and first["cache_source"] == "target:base"
        assert meta[service]["containerimage.digest"].startswith("sha256:")
    assert meta["frontend-assets"]["shipyard.result"] == "/src/dist" and meta["frontend-assets"]["containerimage.digest"] == ""
    assert proc.stderr.count("\n#1 [") == 1, "one solve for the whole bake"
    assert (repo / "reports" / "unit" / "unit.txt").read_text() == "unit: 2 files ok\n"
    assert (repo / "reports" / "lint" / "lint.txt").read_text() == "lint ok\n"
    images = sy.run("images").stdout
    assert all(f"example/{s}" in images for s in SERVICES)

    proc, again = bake(sy, repo, "ci")
    assert built(again) == set() and all(d["shipyard.skipped"] is True for d in again.values())
    assert executed(again) == []
    assert {n: d["containerimage.digest"] for n, d in again.items()} == {n: d["containerimage.digest"] for n, d in meta.items()}
    assert "7 targets, 0 built, 7 skipped" in proc.stderr


def test_editing_one_service_rebuilds_only_that_service_and_explain_names_the_file(sy: Shipyard, repo: Path) -> None:
    bake(sy, repo)
    (repo / "services" / "worker" / "worker.py").write_text('print("worker v2")\n')
    explanation = sy.run("bake", "--explain", cwd=repo).stdout
    assert "worker: BUILD (services/worker/worker.py changed)" in explanation
    assert "MISS [worker 2/3] COPY worker.py /app/ — services/worker/worker.py changed" in explanation
    for name in ("base", "frontend-assets", "api", "web"):
        assert f"{name}: SKIP (unchanged)" in explanation
    _, meta = bake(sy, repo)
    assert built(meta) == {"worker"}
    assert executed(meta) == ["[worker 2/3] COPY worker.py /app/", "[worker 3/3] RUN cat /opt/common/bin/banner > /app/banner"]


def test_editing_the_shared_base_rebuilds_every_dependent(sy: Shipyard, repo: Path) -> None:
    bake(sy, repo)
    (repo / "libs" / "common" / "VERSION").write_text("2.0.0\n")
    explanation = sy.run("bake", "--explain", cwd=repo).stdout
    assert "base: BUILD (libs/common/VERSION changed)" in explanation
    for service in SERVICES:
        assert f"{service}: BUILD (upstream base changed)" in explanation
    assert "frontend-assets: SKIP (unchanged)" in explanation
    _, meta = bake(sy, repo)
    assert built(meta) == {"base", *SERVICES}


def test_removing_a_built_image_makes_its_target_rebuild(sy: Shipyard, repo: Path) -> None:
    _, first = bake(sy, repo)
    sy.run("rmi", "example/api:dev")
    proc, meta = bake(sy, repo)
    assert built(meta) == {"api"}
    assert "[api] building: image docker.io/example/api:dev is no longer in the image store" in proc.stderr
    assert executed(meta) == []  # its key did not change: every step comes from the cache
    assert meta["api"]["containerimage.digest"] == first["api"]["containerimage.digest"]
    assert "example/api" in sy.run("images").stdout


def test_affected_builds_exactly_the_targets_whose_key_changed(sy: Shipyard, repo: Path) -> None:
    bake(sy, repo)
    sy.run("rmi", "example/web:dev")  # web's key is unchanged: --affected leaves it alone
    (repo / "services" / "api" / "app.py").write_text('print("api v2")\n')
    _, meta = bake(sy, repo, "--affected")
    assert built(meta) == {"api"}
    assert "example/web" not in sy.run("images").stdout
    _, meta = bake(sy, repo)  # without --affected, the missing image counts
    assert built(meta) == {"web"}


def test_entitlements_requested_in_the_file_need_allow_and_are_checked_before_anything_runs(sy: Shipyard, repo: Path) -> None:
    proc, meta = bake(sy, repo, "migrations", check=False)
    assert proc.returncode == 1 and meta == {}
    assert proc.stderr.strip().splitlines()[-1] == (
        "ERROR: target migrations requests network.host, which the command line did not grant (pass --allow network.host)"
    )
    assert "example/api" not in sy.run("images").stdout  # nothing ran, not even its dependencies
    proc, meta = bake(sy, repo, "migrations", "--allow", "network.host")
    assert built(meta) == {"base", "api", "test-unit", "test-lint", "migrations"}  # needs: [test] ran first
    assert [s["name"] for s in meta["migrations"]["shipyard.steps"]] == [
        "[migrations 1/2] FROM target:api",
        '[migrations 2/2] RUN --network=host echo "migrating with $(cat /opt/common/VERSION)" > /app/migrated',
    ]


def test_graph_list_and_unknown_names(sy: Shipyard, repo: Path) -> None:
    graph = json.loads(sy.run("graph", "--format", "json", cwd=repo).stdout)
    edges = {(e["from"], e["to"], e["kind"]) for e in graph["edges"]}
    assert ("web", "frontend-assets", "context") in edges and ("migrations", "test-unit", "needs") in edges
    levels = {t["name"]: t["level"] for t in graph["targets"]}
    assert levels["base"] == levels["frontend-assets"] == 0 and levels["api"] == 1 and levels["migrations"] == 2
    dot = sy.run("graph", "--format", "dot", cwd=repo).stdout
    assert dot.startswith("digraph targets {") and '"web" -> "base" [label="base"];' in dot
    text = sy.run("graph", "web", cwd=repo).stdout
    assert text.splitlines()[-3:] == ["web (image, level 1)", "  reads base (context base)", "  reads frontend-assets (context assets)"]
    assert "test-unit" in sy.run("bake", "--list", "targets", cwd=repo).stdout
    proc = sy.run("bake", "wbe", cwd=repo, check=False)
    assert proc.returncode == 2 and "no target or group named 'wbe' (did you mean 'web'?)" in proc.stderr
