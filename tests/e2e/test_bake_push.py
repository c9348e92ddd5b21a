"""`bake --push` against a real registry on 127.0.0.1: pushed once, then skipped while the registry has it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import Shipyard, make_shipyard, write
from tests.registry.servers import start_registry


def test_push_then_skip_while_the_registry_still_has_the_image(tmp_path: Path, busybox_tar: Path) -> None:
    registry = start_registry(tmp_path / "registry")
    try:
        config = tmp_path / "shipyard.toml"
        config.write_text("")
        sy = make_shipyard(tmp_path / "state", busybox_tar, "runc")
        sy = Shipyard(sy.root, "runc", {"SHIPYARD_CONFIG": str(config), "DOCKER_CONFIG": str(tmp_path / "docker")})
        name = f"{registry.host}/bake/app:1"
        write(tmp_path / "repo" / "ctx" / "f.txt", "hello\n")
        write(
            tmp_path / "repo" / "build.yaml",
            f"version: 1\ngroups: {{ default: [app] }}\ntargets:\n  app:\n    context: ctx\n"
            f"    steps:\n      - from: busybox:local\n      - copy: {{ src: [f.txt], dest: / }}\n    tags: ['{name}']\n",
        )
        repo = tmp_path / "repo"
        meta = tmp_path / "meta.json"
        sy.run("bake", "--progress", "plain", cwd=repo)  # built and tagged, not pushed
        proc = sy.run("bake", "--progress", "plain", "--push", "--metadata-file", str(meta), cwd=repo)
        assert f"[app] building: {name} has not been pushed" in proc.stderr
        digest = json.loads(meta.read_text())["app"]["containerimage.digest"]
        assert any(r.startswith("PUT /v2/bake/app/manifests/1 201") for r in registry.requests())
        mark = len(registry.requests())
        sy.run("bake", "--progress", "plain", "--push", "--metadata-file", str(meta), cwd=repo)
        data = json.loads(meta.read_text())["app"]
        assert data["shipyard.skipped"] is True and data["containerimage.digest"] == digest
        assert registry.requests()[mark:] == ["HEAD /v2/bake/app/manifests/1 200"]  # checked, not pushed again
    finally:
        registry.stop()
