"""A real multi-stage Dockerfile, built with real containers, rebuilt from the cache."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Shipyard, steps, write

MULTI_STAGE = """\
FROM busybox:local AS base
RUN mkdir -p /out && echo base > /out/base.txt

FROM base AS left
COPY app/ /src/app/
RUN sleep 1 && cat /src/app/* > /out/left.txt

FROM base AS right
RUN sleep 1 && echo right > /out/right.txt

FROM busybox:local
WORKDIR /final
COPY --from=left /out/left.txt ./
COPY --from=right /out/right.txt ./
CMD ["cat", "/final/left.txt"]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    write(ctx / "Dockerfile", MULTI_STAGE)
    write(ctx / "app" / "main.txt", "hello from app\n")
    write(ctx / "app" / "other.txt", "second file\n")
    write(ctx / "README.md", "not copied\n")
    return ctx


def _events(proc: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]


def test_independent_stages_run_in_parallel(shipyard: Shipyard, project: Path) -> None:
    proc = shipyard.run("build", "--progress", "json", str(project))
    events = _events(proc)
    spans = {}
    for event in events:
        if "sleep 1" in event.get("name", "") and event["type"] in ("started", "completed"):
            spans.setdefault(event["name"], {})[event["type"]] = event["time"]
    assert len(spans) == 2, spans
    (a_start, a_end), (b_start, b_end) = [(s["started"], s["completed"]) for s in spans.values()]
    assert a_start < b_end and b_start < a_end, "the two sleeping stages did not overlap"


def test_noop_rebuild_is_all_cached_and_same_image(shipyard: Shipyard, project: Path) -> None:
    _, first = shipyard.build(project, "-t", "app:1")
    assert not all(steps(first).values())
    _, second = shipyard.build(project, "-t", "app:1")
    assert all(steps(second).values()), steps(second)
    assert second["containerimage.digest"] == first["containerimage.digest"]
    assert second["containerimage.config.digest"] == first["containerimage.config.digest"]
    names = [s["name"] for s in second["shipyard.steps"]]
    assert names[0] == "[base 1/2] FROM docker.io/library/busybox:local"
    assert "[left 2/3] COPY app/ /src/app/" in names
    assert names[-1] == "[stage-3 4/4] COPY --from=right /out/right.txt ./"
    assert all(s["cache_key"].startswith("sha256:") for s in second["shipyard.steps"])


def test_edit_outside_copied_dir_is_a_full_cache_hit(shipyard: Shipyard, project: Path) -> None:
    shipyard.build(project)
    (project / "README.md").write_text("edited, same file that no COPY reads\n")
    _, meta = shipyard.build(project)
    assert all(steps(meta).values()), steps(meta)


def test_edit_inside_reruns_only_the_steps_after_that_copy(shipyard: Shipyard, project: Path) -> None:
    shipyard.build(project)
    (project / "app" / "main.txt").write_text("hello from app, edited\n")
    _, meta = shipyard.build(project)
    missed = sorted(name for name, cached in steps(meta).items() if not cached)
    assert missed == sorted(
        [
            "[left 2/3] COPY app/ /src/app/",
            "[left 3/3] RUN sleep 1 && cat /src/app/* > /out/left.txt",
            "[stage-3 3/4] COPY --from=left /out/left.txt ./",
            # layered on the step above, so it reruns too (as in Docker); the right stage does not
            "[stage-3 4/4] COPY --from=right /out/right.txt ./",
        ]
    )


def test_same_size_edit_right_after_a_build_is_seen(shipyard: Shipyard, project: Path, tmp_path: Path) -> None:
    """The racy-file rule: an edit that keeps size (and lands in the same clock tick) still misses."""
    target = project / "app" / "main.txt"
    shipyard.build(project, "--output", f"type=local,dest={tmp_path / 'out1'}")
    before = target.stat()
    target.write_text("HELLO FROM APP\n")  # same length
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    _, meta = shipyard.build(project, "--output", f"type=local,dest={tmp_path / 'out2'}")
    assert not steps(meta)["[left 2/3] COPY app/ /src/app/"]
    assert (tmp_path / "out2" / "final" / "left.txt").read_text().startswith("HELLO FROM APP")


def test_failing_run_reports_its_line_and_output(shipyard: Shipyard, tmp_path: Path) -> None:
    ctx = tmp_path / "fail"
    write(ctx / "Dockerfile", "FROM busybox:local\nRUN echo ok\nRUN echo 'something broke' >&2; exit 7\nRUN echo never\n")
    proc, _ = shipyard.build(ctx, check=False)
    assert proc.returncode != 0
    assert "Dockerfile:3" in proc.stderr
    assert "something broke" in proc.stderr
    assert "exit code 7" in proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR: Dockerfile:3:"), last


def test_failure_cancels_parallel_steps_and_caches_nothing_of_them(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    ctx = tmp_path / "cancel"
    write(
        ctx / "Dockerfile",
        "FROM busybox:local AS slow\nRUN sleep 30\n"
        "FROM busybox:local AS bad\nRUN sleep 0.5; exit 1\n"
        "FROM busybox:local\nCOPY --from=slow /etc/passwd /a\nCOPY --from=bad /etc/passwd /b\n",
    )
    started = time.time()
    proc, _ = runc_shipyard.build(ctx, check=False)
    assert proc.returncode != 0
    assert time.time() - started < 20, "the slow stage was not cancelled"
    proc2 = runc_shipyard.run("build", "--progress", "json", str(ctx), check=False)
    started_names = [e["name"] for e in _events(proc2) if e["type"] == "started"]
    assert "[slow 2/2] RUN sleep 30" in started_names, "a cancelled step must not be cached"
    with open("/proc/self/mountinfo") as f:
        assert str(runc_shipyard.root) not in f.read()


def test_unreachable_stage_is_not_built_and_target_selects(shipyard: Shipyard, tmp_path: Path) -> None:
    ctx = tmp_path / "target"
    write(
        ctx / "Dockerfile",
        "ARG GREETING=hello\n"
        "FROM busybox:local AS broken\nRUN exit 1\n"
        "FROM busybox:local AS wanted\nARG GREETING\nRUN echo $GREETING > /greeting\n"
        "FROM wanted AS last\nRUN exit 1\n",
    )
    out = tmp_path / "out"
    _, meta = shipyard.build(ctx, "--target", "wanted", "--build-arg", "GREETING=howdy", "--output", f"type=local,dest={out}")
    assert (out / "greeting").read_text() == "howdy\n"
    assert all(not name.startswith("[broken") and not name.startswith("[last") for name in steps(meta))


def test_identical_steps_in_two_stages_run_once(shipyard: Shipyard, tmp_path: Path) -> None:
    ctx = tmp_path / "dedup"
    write(
        ctx / "Dockerfile",
        "FROM busybox:local AS a\nRUN echo same > /same\n"
        "FROM busybox:local AS b\nRUN echo same > /same\n"
        "FROM busybox:local\nCOPY --from=a /same /a\nCOPY --from=b /same /b\n",
    )
    proc = shipyard.run("build", "--progress", "json", str(ctx))
    started = [e["name"] for e in _events(proc) if e["type"] == "started" and "RUN" in e["name"]]
    assert len(started) == 1, started


def test_no_cache_runs_every_step(shipyard: Shipyard, project: Path) -> None:
    shipyard.build(project)
    _, meta = shipyard.build(project, "--no-cache")
    assert not any(cached for name, cached in steps(meta).items() if "FROM" not in name)


def test_cached_build_materializes_nothing(runc_shipyard: Shipyard, project: Path) -> None:
    runc_shipyard.build(project, "-t", "lazy:1")
    layers = set(os.listdir(runc_shipyard.root / "layers"))
    proc = runc_shipyard.run("build", "--progress", "json", "-t", "lazy:1", str(project))
    assert not [e for e in _events(proc) if e["type"] == "started"]
    assert set(os.listdir(runc_shipyard.root / "layers")) == layers
    assert os.listdir(runc_shipyard.root / "mounts") == []


def test_scratch_and_local_output(shipyard: Shipyard, tmp_path: Path) -> None:
    ctx = tmp_path / "scratch"
    write(ctx / "Dockerfile", "FROM scratch\nCOPY hello.txt /data/\nCOPY hello.txt /copy.txt\n")
    write(ctx / "hello.txt", "hi\n")
    out = tmp_path / "out"
    shipyard.build(ctx, "--output", f"type=local,dest={out}")
    assert sorted(os.listdir(out)) == ["copy.txt", "data"]
    assert (out / "data" / "hello.txt").read_text() == "hi\n"


def test_image_config_like_buildkit(shipyard: Shipyard, tmp_path: Path) -> None:
    ctx = tmp_path / "config"
    write(
        ctx / "Dockerfile",
        "FROM busybox:local\nARG V=1\nENV A=1 B=\"two words\"\nWORKDIR /srv\nRUN echo $V > v\n"
        "EXPOSE 8000 53/udp\nLABEL org.example=yes\nUSER app\nENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"cat /srv/v\"]\n",
    )
    shipyard.build(ctx, "-t", "configured:latest")
    listing = json.loads(shipyard.run("images", "--format", "json").stdout)
    image_id = next(row["id"] for row in listing if row["repository"] == "configured")
    config = json.loads((shipyard.root / "blobs" / "sha256" / image_id.split(":")[1]).read_text())
    c = config["config"]
    assert c["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1", "B=two words"]
    assert c["WorkingDir"] == "/srv" and c["User"] == "app"
    assert c["ExposedPorts"] == {"53/udp": {}, "8000/tcp": {}}
    assert c["Labels"] == {"org.example": "yes"}
    assert c["Entrypoint"] == ["/bin/sh", "-c"] and c["Cmd"] == ["cat /srv/v"]
    history = [(h.get("created_by", ""), h.get("empty_layer", False)) for h in config["history"]]
    assert history[1:] == [
        ("ARG V=1", True),
        ("ENV A=1 B=two words", True),
        ("WORKDIR /srv", False),
        ("RUN |1 V=1 /bin/sh -c echo $V > v # buildkit", False),
        ("EXPOSE map[53/udp:{} 8000/tcp:{}]", True),
        ("LABEL org.example=yes", True),
        ("USER app", True),
        ('ENTRYPOINT ["/bin/sh" "-c"]', True),
        ('CMD ["cat /srv/v"]', True),
    ]
    assert len(config["rootfs"]["diff_ids"]) == 3


def test_copy_snapshotter_builds_and_caches(tmp_path: Path, busybox_tar: Path, project: Path) -> None:
    from tests.e2e.conftest import make_shipyard

    sy = make_shipyard(tmp_path / "state", busybox_tar, "runc", {"SHIPYARD_SNAPSHOTTER": "copy"})
    out = tmp_path / "out"
    _, first = sy.build(project, "--output", f"type=local,dest={out}")
    assert (out / "final" / "left.txt").read_text() == "hello from app\nsecond file\n"
    assert (out / "final" / "right.txt").read_text() == "right\n"
    _, second = sy.build(project)
    assert all(steps(second).values())


def test_run_layer_holds_only_what_the_command_wrote(shipyard: Shipyard, tmp_path: Path) -> None:
    """Mount stubs the runtime needed (/etc/hosts, /proc, ...) never land in a layer."""
    ctx = tmp_path / "stubs"
    write(
        ctx / "Dockerfile",
        "FROM busybox:local AS tools\nFROM scratch\nCOPY --from=tools /bin /bin\nRUN mkdir /made\nRUN echo hi > /made/file\n",
    )
    out = tmp_path / "out.tar"
    shipyard.build(ctx, "--output", f"type=docker,dest={out}")
    import tarfile

    with tarfile.open(out) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
        layers = []
        for name in manifest[0]["Layers"][1:]:
            with tarfile.open(fileobj=archive.extractfile(name)) as layer:
                layers.append(sorted(m.name.rstrip("/") for m in layer.getmembers()))
    assert layers == [["made"], ["made", "made/file"]], layers


def test_retagged_base_image_invalidates_a_no_op_rebuild(shipyard: Shipyard, project: Path, tmp_path: Path) -> None:
    """A rebuild that looks like a no-op must still see a base image re-tagged under the same name."""
    shipyard.build(project, "-t", "app:1")
    _, cached = shipyard.build(project, "-t", "app:1")
    assert all(steps(cached).values())
    newbase = tmp_path / "newbase"
    from tests.helpers import make_busybox_rootfs

    make_busybox_rootfs(newbase)
    (newbase / "etc" / "motd").write_text("a different base\n")
    shipyard.run("import", str(newbase), "-t", "busybox:local")
    _, meta = shipyard.build(project, "-t", "app:1")
    assert not steps(meta)["[base 2/2] RUN mkdir -p /out && echo base > /out/base.txt"]
    assert meta["containerimage.digest"] != cached["containerimage.digest"]


def test_pruned_cache_record_is_not_trusted(runc_shipyard: Shipyard, project: Path) -> None:
    """If the final step's cache record disappears, the next build really runs it again.

    (A record below a hit may vanish without consequence: that step is not needed.)"""
    import sqlite3

    runc_shipyard.build(project, "-t", "app:1")
    db = sqlite3.connect(runc_shipyard.root / "index.db")
    # Both of its keys (by definition and by the content it copies) go.
    deleted = db.execute("DELETE FROM cache_keys WHERE description LIKE '%COPY --from=right%'").rowcount
    assert deleted == 2
    db.commit()
    db.close()
    _, meta = runc_shipyard.build(project, "-t", "app:1")
    assert not steps(meta)["[stage-3 4/4] COPY --from=right /out/right.txt ./"]
    assert steps(meta)["[right 2/2] RUN sleep 1 && echo right > /out/right.txt"]


def _layer_members(archive_path: Path) -> list[list[tuple]]:
    """Every layer's entries with the metadata an image carries (dir mtimes aside)."""
    import hashlib
    import tarfile

    out = []
    with tarfile.open(archive_path) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
        for name in manifest[0]["Layers"]:
            with tarfile.open(fileobj=archive.extractfile(name)) as layer:
                entries = []
                for m in layer.getmembers():
                    data = layer.extractfile(m).read() if m.isfile() else b""
                    mtime = None if m.isdir() else m.mtime
                    entries.append((m.name, m.type, m.mode, m.uid, m.gid, m.size, m.linkname, mtime, hashlib.sha256(data).hexdigest()))
                out.append(entries)
    return out


def test_direct_copy_layers_equal_overlay_copy_layers(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    """Copying straight into a fresh layer gives the same layers as copying through the overlay."""
    ctx = tmp_path / "eq"
    write(
        ctx / "Dockerfile",
        "FROM busybox:local\nRUN mkdir -p /app/conf /opt/svc && chmod 700 /app/conf && chown 1000:1000 /app/conf "
        "&& chmod 750 /app && chown 1000:50 /app && chmod 711 /opt && chown 2:2 /opt && chmod 1777 /opt/svc "
        "&& echo base > /app/conf/base.ini\n"
        "WORKDIR /app\nCOPY requirements.txt .\nCOPY . .\nCOPY --chown=app:staff main.py /opt/svc/\nCOPY conf /etc/\n",
    )
    write(ctx / "requirements.txt", "flask\n")
    write(ctx / "main.py", "print('hi')\n")
    write(ctx / "conf" / "app.ini", "[app]\n")
    os.chmod(ctx / "main.py", 0o755)
    direct, overlay = tmp_path / "direct.tar", tmp_path / "overlay.tar"
    runc_shipyard.build(ctx, "--output", f"type=docker,dest={direct}")
    runc_shipyard.env = {"SHIPYARD_NO_DIRECT_COPY": "1"}
    runc_shipyard.build(ctx, "--no-cache", "--output", f"type=docker,dest={overlay}")
    direct_layers, overlay_layers = _layer_members(direct), _layer_members(overlay)
    strip = lambda layer: [entry[:7] + entry[8:] for entry in layer]  # noqa: E731 - RUN reran: its files are newer
    assert [strip(layer) for layer in direct_layers[:2]] == [strip(layer) for layer in overlay_layers[:2]]
    assert direct_layers[2:] == overlay_layers[2:]  # the WORKDIR and COPY layers, mtimes included


def test_unchanged_files_are_hard_links_to_the_previous_copy(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    ctx = tmp_path / "reuse"
    write(ctx / "Dockerfile", "FROM busybox:local\nCOPY . /src\nRUN cat /src/a.txt /src/sub/b.txt > /joined\n")
    write(ctx / "a.txt", "alpha\n")
    write(ctx / "sub" / "b.txt", "beta\n")
    time.sleep(0.05)  # let the timestamp granularity pass, so the first copy's record is trusted
    runc_shipyard.build(ctx)
    (ctx / "sub" / "b.txt").write_text("BETA!\n")
    out = tmp_path / "out"
    _, meta = runc_shipyard.build(ctx, "--output", f"type=local,dest={out}")
    assert not steps(meta)["[2/3] COPY . /src"]
    assert (out / "joined").read_text() == "alpha\nBETA!\n"
    layers = runc_shipyard.root / "layers"
    a_copies = sorted(p for p in layers.glob("*/fs/src/a.txt"))
    b_copies = sorted(p for p in layers.glob("*/fs/src/sub/b.txt"))
    assert len(a_copies) == 2 and len(b_copies) == 2
    assert a_copies[0].stat().st_ino == a_copies[1].stat().st_ino  # unchanged: one inode, two layers
    assert b_copies[0].stat().st_ino != b_copies[1].stat().st_ino  # edited: copied anew
