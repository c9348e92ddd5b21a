"""Importing a compose file's `build:` sections as targets."""

from __future__ import annotations

import json

from frontends.yaml.loader import print_resolved
from frontends.yaml.model import SecretSpec

COMPOSE = """\
name: shop
x-build: &build
  platforms: [linux/amd64]
services:
  base:
    image: ${REGISTRY:-local}/base:${TAG:?set TAG}
    build:
      context: ./base
      <<: *build
  app:
    image: app
    build:
      context: app
      dockerfile: Dockerfile.app
      target: runtime
      args:
        - GIT_COMMIT
        - MODE=prod
        - PRICE=$$5
        - UNSET_IN_ENV
      labels: { com.example.team: "$TEAM" }
      additional_contexts:
        base: service:base
        docs: ../docs
      secrets: [token, { source: key, target: ssh_key }]
      cache_from: ["type=local,src=.cache"]
      tags: [app:extra]
      ssh: { default: ~/.ssh/id }
      shm_size: 2gb
      no_cache: true
  db:
    image: postgres
    ports: ["5432:5432"]
  worker:
    build: ./worker
secrets:
  token: { environment: TOKEN }
  key: { file: ./key.pem }
"""


def test_compose_build_sections_become_targets(repo):
    repo.write("compose.yaml", COMPOSE)
    bake = repo.load(
        "compose.yaml", environ={"GIT_COMMIT": "abc", "TEAM": "core", "TAG": "1"}, variables={"REGISTRY": "r.io"}
    )
    root = str(repo.root)
    assert list(bake.targets) == ["base", "app", "worker"]
    assert bake.groups == {"default": ("base", "app", "worker")}
    base = bake.targets["base"]
    assert base.context == f"{root}/base" and base.tags == ("r.io/base:1",) and base.platforms == ("linux/amd64",)
    app = bake.targets["app"]
    assert app.dockerfile == f"{root}/app/Dockerfile.app" and app.target == "runtime"
    assert dict(app.args) == {"GIT_COMMIT": "abc", "MODE": "prod", "PRICE": "$5"}
    assert app.labels == (("com.example.team", "core"),)
    assert dict(app.contexts) == {"base": "target:base", "docs": f"{repo.root.parent}/docs"}
    assert app.references() == ("base",)
    assert app.secrets == (SecretSpec("token", env="TOKEN"), SecretSpec("ssh_key", src=f"{root}/key.pem"))
    assert app.cache_from == (f"type=local,src={root}/.cache",)
    assert app.tags == ("app", "app:extra")
    assert app.ssh == ("default=~/.ssh/id",) and app.no_cache
    assert bake.targets["worker"].context == f"{root}/worker"
    assert json.loads(print_resolved(bake, ["app"]))["target"]["app"]["contexts"]["base"] == "target:base"


def test_compose_errors_are_located(repo):
    repo.write("compose.yaml", COMPOSE)
    assert (
        repo.error("compose.yaml")
        == "compose.yaml:6:12: services.base.image: required variable TAG is missing a value: set TAG"
    )
    repo.write("compose.yaml", "services:\n  a:\n    build:\n      context: .\n      dockerfle: x\n")
    assert (
        repo.error("compose.yaml")
        == "compose.yaml:5:7: services.a.build.dockerfle: unknown build key 'dockerfle' (did you mean dockerfile?)"
    )
    repo.write("compose.yaml", "services:\n  a:\n    build:\n      secrets: [nope]\n")
    assert repo.error("compose.yaml") == (
        "compose.yaml:4:17: services.a.build.secrets[0]: unknown secret 'nope' (declare it under the top-level `secrets`)"
    )
    repo.write("compose.yaml", "services:\n  a:\n    build:\n      additional_contexts: {b: 'service:b'}\n")
    assert repo.error("compose.yaml") == "compose.yaml:4:32: services.a.build.contexts.b: unknown target 'b'"
    repo.write("compose.yaml", "services:\n  a:\n    build:\n      platforms: linux/amd64\n")
    assert repo.error("compose.yaml") == "compose.yaml:4:18: services.a.build.platforms: expected a list"
    repo.write("compose.yaml", "servics: {}\n")
    assert repo.error("compose.yaml").startswith("compose.yaml:1:1: version: missing `version: 1`")
