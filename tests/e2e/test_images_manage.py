"""images / tag / rmi / inspect / history through the CLI, on a built image."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Shipyard, write

DOCKERFILE = """\
FROM busybox:local
ENV GREETING=hello
RUN echo "$GREETING from a layer that is long enough to be cut in history" > /greeting
LABEL org.example.team=images
EXPOSE 8080
CMD ["cat", "/greeting"]
"""


@pytest.fixture
def built(runc_shipyard: Shipyard, tmp_path: Path) -> tuple[Shipyard, dict]:
    ctx = write(tmp_path / "ctx" / "Dockerfile", DOCKERFILE).parent
    _, meta = runc_shipyard.build(ctx, "-t", "app:1")
    return runc_shipyard, meta


def _image_id(sy: Shipyard, ref: str) -> str:
    return json.loads(sy.run("inspect", ref).stdout)[0]["Id"]


def test_images_listing_like_docker(built: tuple[Shipyard, dict]) -> None:
    sy, meta = built
    sy.run("tag", "app:1", "registry.local:5000/team/app:v2")
    out = sy.run("images").stdout.splitlines()
    assert re.fullmatch(r"REPOSITORY +TAG +IMAGE ID +CREATED +SIZE", out[0])
    assert out[0].index("TAG") == len("registry.local:5000/team/app") + 3  # tabwriter: widest cell + 3
    short = meta["containerimage.config.digest"].split(":")[1][:12]
    rows = [line.split() for line in out[1:]]
    assert ["app", "1", short] == rows[0][:3] or ["app", "1", short] == rows[1][:3]
    assert {r[0] for r in rows} == {"app", "registry.local:5000/team/app", "busybox"}
    assert sy.run("images", "-q").stdout.split().count(short) == 2
    digests = sy.run("images", "--digests", "app").stdout.splitlines()
    assert "DIGEST" in digests[0] and meta["containerimage.digest"] in digests[1] and len(digests) == 2
    assert len(sy.run("images", "registry.local:5000/*/*").stdout.splitlines()) == 2  # glob
    assert len(sy.run("images", "app:2").stdout.splitlines()) == 1  # header only
    assert sy.run("images", "--no-trunc", "-q", "app:1").stdout.strip() == meta["containerimage.config.digest"]
    line = sy.run("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", "app").stdout.strip()
    assert line == f"app:1 {short}"
    as_json = json.loads(sy.run("images", "--format", "{{json .}}", "busybox").stdout)
    assert as_json["Repository"] == "busybox" and as_json["Tag"] == "local" and as_json["Size"].endswith("MB")
    assert sy.run("images", "--filter", "dangling=true").stdout.splitlines()[1:] == []


def test_tag_and_rmi_untag_semantics(built: tuple[Shipyard, dict]) -> None:
    sy, meta = built
    image_id = meta["containerimage.config.digest"]
    sy.run("tag", image_id[7:19], "app:latest")  # by short ID
    sy.run("tag", "app", "other/app:x")  # `app` is app:latest
    assert _image_id(sy, "other/app:x") == image_id
    refused = sy.run("rmi", image_id[7:19], check=False)
    assert refused.returncode == 1 and "referenced in multiple repositories" in refused.stderr
    assert sy.run("rmi", "app:1").stdout == "Untagged: app:1\n"
    assert sy.run("rmi", "other/app:x", "nope:1", check=False).stdout == "Untagged: other/app:x\n"
    assert sy.run("rmi", "app", check=False).stdout == f"Untagged: app:latest\nDeleted: {image_id}\n"
    again = sy.run("rmi", "app:latest", check=False)
    assert again.returncode == 1 and "No such image: app:latest" in again.stderr
    assert "app" not in sy.run("images").stdout
    bad = sy.run("tag", "busybox:local", "busybox@sha256:" + "0" * 64, check=False)
    assert bad.returncode != 0 and "digest reference" in bad.stderr


def test_rmi_refuses_an_image_in_use_unless_forced(built: tuple[Shipyard, dict]) -> None:
    sy, meta = built
    image_id = meta["containerimage.config.digest"]
    db = sqlite3.connect(sy.root / "index.db")
    with db:
        db.execute(
            "INSERT INTO containers(id, name, image, image_name, created, state) VALUES(?,?,?,?,?,?)",
            ("c0ffee" * 10 + "abcd", "test-container", image_id, "app:1", time.time(), "exited"),
        )
    db.close()
    refused = sy.run("rmi", "app:1", check=False)
    assert refused.returncode == 1
    assert f'unable to remove repository reference "app:1" (must force) - a container is using its referenced image {image_id[7:19]}' in refused.stderr
    refused = sy.run("rmi", image_id, check=False)
    assert refused.returncode == 1 and "being used by a container" in refused.stderr
    assert _image_id(sy, "app:1") == image_id
    assert sy.run("rmi", "-f", "app:1").stdout == f"Untagged: app:1\nDeleted: {image_id}\n"


def test_inspect_and_history_fields(built: tuple[Shipyard, dict]) -> None:
    sy, meta = built
    [info] = json.loads(sy.run("inspect", "app:1").stdout)
    config = json.loads((sy.root / "blobs" / "sha256" / meta["containerimage.config.digest"][7:]).read_text())
    assert info["Id"] == meta["containerimage.config.digest"]
    assert info["RepoTags"] == ["app:1"]
    assert info["RepoDigests"] == ["app@" + meta["containerimage.digest"]]
    assert info["Descriptor"]["digest"] == meta["containerimage.digest"]
    assert info["Created"] == config["created"]
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert info["Config"]["Cmd"] == ["cat", "/greeting"] and info["Config"]["Entrypoint"] is None
    assert "GREETING=hello" in info["Config"]["Env"]
    assert info["Config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert info["Config"]["Labels"] == {"org.example.team": "images"}
    assert info["RootFS"] == {"Type": "layers", "Layers": config["rootfs"]["diff_ids"]}
    assert len(info["RootFS"]["Layers"]) == 2 and info["Size"] > 1_000_000
    assert info["Metadata"]["LastTagTime"].endswith("Z")
    assert sy.run("inspect", "-f", "{{.Id}} {{json .Config.Cmd}}", "app:1").stdout == f"{info['Id']} [\"cat\",\"/greeting\"]\n"
    missing = sy.run("inspect", "app:1", "ghost:1", check=False)
    assert missing.returncode == 1 and "No such image: ghost:1" in missing.stderr
    assert len(json.loads(missing.stdout)) == 1

    lines = sy.run("history", "app:1").stdout.splitlines()
    assert re.fullmatch(r"IMAGE +CREATED +CREATED BY +SIZE +COMMENT", lines[0])
    assert len(lines) == 1 + len(config["history"])
    assert lines[1].startswith(info["Id"][7:19] + "   ")
    assert all(line.startswith("<missing>") for line in lines[2:])
    assert re.search(r'CMD \["cat" "/greeting"\] +0B +buildkit.dockerfile.v0$', lines[1])
    run_line = next(line for line in lines if "RUN " in line)
    assert "…" in run_line and re.search(r"\d+(\.\d+)?[kM]B", run_line)
    full = sy.run("history", "--no-trunc", "app:1").stdout
    assert "long enough to be cut in history" in full and info["Id"] in full
    assert sy.run("history", "-q", "app:1").stdout.split()[0] == info["Id"][7:19]
    records = [json.loads(line) for line in sy.run("history", "--format", "json", "app:1").stdout.splitlines()]
    assert set(records[0]) == {"Comment", "CreatedAt", "CreatedBy", "CreatedSince", "ID", "Size"}
    created_by = [h.get("created_by", "") for h in reversed(config["history"])]
    assert [r["CreatedBy"] for r in records] == [c if len(c) <= 45 else c[:44] + "…" for c in created_by]
