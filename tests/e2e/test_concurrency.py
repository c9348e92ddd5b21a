"""Several shipyard processes on one state directory at once: builds, a prune loop, a shared step."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.e2e.conftest import SHIPYARD, Shipyard, write


def _popen(sy: Shipyard, *args: str) -> subprocess.Popen:
    env = dict(os.environ, SHIPYARD_ROOT=str(sy.root), SHIPYARD_RUNTIME=sy.runtime)
    return subprocess.Popen(SHIPYARD + list(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _service(base: Path, name: str, n: int) -> Path:
    ctx = base / name
    write(
        ctx / "Dockerfile",
        "FROM busybox:local\n"
        "RUN echo shared > /shared && sleep 0.3\n"  # the same step in every service
        f"COPY app.txt /app/{name}.txt\n"
        f"RUN cat /app/{name}.txt > /app/copy && echo {name} > /name\n"
        f"RUN seq 1 {200 * n} > /numbers\n",
    )
    write(ctx / "app.txt", f"service {name}\n" * 100)
    return ctx


def test_four_builds_and_a_prune_loop_share_one_state(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    sy = runc_shipyard
    contexts = [_service(tmp_path, f"svc{i}", i + 1) for i in range(4)]
    removed_while_building = 0
    for round_ in range(2):  # the second round rebuilds over what the prunes left
        if round_:
            for ctx in contexts:
                (ctx / "app.txt").write_text(f"changed {ctx.name}\n")
        builds = []
        for i, ctx in enumerate(contexts):
            meta = tmp_path / f"meta{i}.json"
            builds.append(
                (_popen(sy, "build", "--progress", "plain", "--metadata-file", str(meta), "-t", f"svc{i}:latest", str(ctx)), meta)
            )
        prunes = 0
        while any(b.poll() is None for b, _ in builds):
            prune = sy.run("prune", "--all", check=False)
            assert prune.returncode == 0, prune.stderr
            prunes += 1
            removed_while_building += "Deleted build cache objects" in prune.stdout
        assert prunes >= 1
        for i, (build, meta) in enumerate(builds):
            _, err = build.communicate()
            assert build.returncode == 0, f"build {i} failed:\n{err}"
            assert json.loads(meta.read_text())["containerimage.config.digest"]

    assert removed_while_building >= 1  # the prunes did remove records while the builds ran
    check = sy.run("system", "check")
    assert " 0 errors" in check.stdout, check.stdout
    for i in range(4):
        out = sy.run("run", "--rm", f"svc{i}:latest", "sh", "-c", "cat /name /shared; wc -l < /numbers").stdout.split()
        assert out == [f"svc{i}", "shared", str(200 * (i + 1))]
    sy.run("system", "check", "--repair")
    final = sy.run("system", "check")
    assert final.stdout.strip().endswith("0 errors, 0 kinds of leftovers"), final.stdout


def test_the_same_step_started_by_two_builds_runs_once(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    sy = runc_shipyard
    ctx = tmp_path / "ctx"
    write(
        ctx / "Dockerfile",
        "FROM busybox:local\n"
        "RUN --mount=type=cache,target=/runs,sharing=shared sh -c 'echo ran >> /runs/log; sleep 1.5; echo built > /out'\n",
    )
    metas = [tmp_path / "a.json", tmp_path / "b.json"]
    builds = [_popen(sy, "build", "--progress", "plain", "--metadata-file", str(m), "-t", "same", str(ctx)) for m in metas]
    for build in builds:
        _, err = build.communicate()
        assert build.returncode == 0, err
    runs = [json.loads(m.read_text())["shipyard.steps"][-1] for m in metas]
    assert sorted(r["cached"] for r in runs) == [False, True], runs
    assert runs[0]["cache_key"] == runs[1]["cache_key"]
    logs = list((sy.root / "cachemounts").glob("*/0/log"))
    assert len(logs) == 1 and logs[0].read_text() == "ran\n"
    assert sy.run("run", "--rm", "same", "cat", "/out").stdout == "built\n"
