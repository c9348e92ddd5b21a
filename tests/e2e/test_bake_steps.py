"""Inline `steps:` through the YAML loader and a real build: values arrive exactly as written."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import Shipyard, write

BUILD = r"""
version: 1
variables:
  WHO: { default: world }
targets:
  greet:
    context: ctx
    steps:
      - from: busybox:local
      - env: { GREETING: "it's $HOME and \"${WHO}\"", SPACED: "a  b" }
      - copy: { src: ["my file.txt"], dest: "/in/it's here/" }
      - run: |
          set -e
          mkdir -p /out
          printf '%s|%s\n' "$GREETING" "$SPACED" > /out/env.txt
          cat "/in/it's here/my file.txt" > /out/copied.txt
        network: none
    result: /out
    outputs:
      - type=local,dest=out
"""


def test_steps_values_and_files_arrive_verbatim_and_set_and_var_apply(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    write(tmp_path / "build.yaml", BUILD)
    write(tmp_path / "ctx" / "my file.txt", "payload $x\n")
    sy = runc_shipyard
    meta_path = tmp_path / "meta.json"
    sy.run("bake", "--progress", "plain", "--metadata-file", str(meta_path), "greet", cwd=tmp_path)
    assert (tmp_path / "out" / "env.txt").read_text() == "it's $HOME and \"world\"|a  b\n"
    assert (tmp_path / "out" / "copied.txt").read_text() == "payload $x\n"
    steps = [s["name"] for s in json.loads(meta_path.read_text())["greet"]["shipyard.steps"]]
    assert steps == ["[greet 1/3] FROM busybox:local", "[greet 2/3] COPY my file.txt /in/it's here/", "[greet 3/3] RUN set -e ..."]

    printed = json.loads(sy.run("bake", "--print", "greet", "--var", "WHO=you", cwd=tmp_path).stdout)
    assert printed["target"]["greet"]["steps"][1]["env"]["GREETING"] == "it's $HOME and \"you\""
    sy.run("bake", "--progress", "plain", "greet", "--var", "WHO=you", cwd=tmp_path)
    assert (tmp_path / "out" / "env.txt").read_text() == "it's $HOME and \"you\"|a  b\n"
    explanation = sy.run("bake", "--explain", "greet", "--var", "WHO=everyone", cwd=tmp_path).stdout
    assert explanation.startswith("greet: BUILD (step 2 (env) changed)")
