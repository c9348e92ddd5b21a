"""Fixtures for the YAML loader tests: a scratch repo to write build files into, and the
proposal's full monorepo example (shared/yaml-frontend.md §8.1) laid out on disk."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from frontends.yaml.errors import BuildFileError
from frontends.yaml.loader import load_bake
from frontends.yaml.model import BakeFile

EXAMPLE = """\
# build.yaml  (repo root)
# yaml-language-server: $schema=./build.schema.json
version: 1

include:
  - services/*/build.yaml

variables:
  REGISTRY:   { default: "127.0.0.1:5000/acme" }
  TAG:        { default: "dev", env: GIT_SHORT_SHA, description: "image tag" }
  PY_DEFAULT: { default: "3.12", pattern: '^3\\.[0-9]+$' }
  PY_VERSIONS: { default: ["3.11", "3.12", "3.13"], type: list }

x-service-labels: &service-labels
  org.opencontainers.image.vendor: acme

defaults:
  platforms: [linux/amd64]
  cache_from: [ "type=local,src=.buildcache" ]
  cache_to:   [ { type: local, dest: .buildcache, mode: max } ]
  labels:
    org.opencontainers.image.source: "https://example.invalid/acme/monorepo"

groups:
  default:  [api, worker, web]
  ci:       [default, test]

targets:
  base:
    matrix:
      py: ${PY_VERSIONS}
    name: "base-py${py}"
    description: "python runtime + common wheels"
    context: libs/common
    steps:
      - from: "python:${py}-slim@sha256:0000000000000000000000000000000000000000000000000000000000000000"
      - env: { PIP_NO_CACHE_DIR: "1", PYTHONDONTWRITEBYTECODE: "1" }
      - run: apt-get update && apt-get install -y --no-install-recommends libpq5
        mounts:
          - { type: cache, target: /var/cache/apt, id: apt, sharing: locked }
      - copy: { src: [pyproject.toml, src/], dest: /opt/common/ }
      - run: pip install /opt/common
        mounts:
          - { type: cache, target: /root/.cache/pip, id: "pip-py${py}", sharing: shared }
      - workdir: /app

  _service:
    contexts:
      base: "target:base-py${PY_DEFAULT}"
    labels: *service-labels
    platforms: [linux/amd64, linux/arm64]
    outputs:
      - "type=image,name=${REGISTRY}/${target.short}:${TAG}"

  api:
    inherits: [_service]
    context: services/api
    dockerfile: Dockerfile
    args: { APP_MODULE: "api.main:app" }
    tags: ["${REGISTRY}/api:${TAG}"]

  worker:
    inherits: [_service]
    context: services/worker
    dockerfile: Dockerfile
    secrets:
      - { id: pypi_token, env: PYPI_TOKEN }
    tags: ["${REGISTRY}/worker:${TAG}"]

  frontend-assets:
    context: services/web/frontend
    steps:
      - from: "node:22-slim@sha256:1111111111111111111111111111111111111111111111111111111111111111"
      - workdir: /src
      - copy: { src: [package.json, package-lock.json], dest: ./ }
      - run: npm ci
        mounts: [ { type: cache, target: /root/.npm, id: npm } ]
      - copy: { src: ["."], dest: ./ }
      - run: npm run build
    result: /src/dist

  web:
    inherits: [_service]
    context: services/web
    dockerfile: Dockerfile
    contexts:
      base:   "target:base-py${PY_DEFAULT}"
      assets: "target:frontend-assets"
    tags: ["${REGISTRY}/web:${TAG}"]

  test:
    matrix:
      py: ${PY_VERSIONS}
    name: "test-py${py}"
    context: .
    contexts:
      base: "target:base-py${py}"
    steps:
      - from: base
      - copy: { src: [libs/, services/api/, services/worker/, requirements-dev.txt], dest: /src/ }
      - run: pip install -r /src/requirements-dev.txt
        mounts: [ { type: cache, target: /root/.cache/pip, id: "pip-py${py}" } ]
      - run: mkdir -p /out && pytest -q --junitxml=/out/junit.xml /src
        network: none
    outputs:
      - { type: local, dest: "reports/py${py}", from: /out }

  migrations:
    context: services/api
    dockerfile_inline: |
      FROM base
      COPY migrations/ /migrations/
    contexts: { base: "target:api" }
    needs: [test]
    entitlements: [network.host]
    tags: ["${REGISTRY}/migrations:${TAG}"]
"""

FRAGMENT = """\
targets:
  api-docs:
    description: docs of the api, from its own fragment
    context: docs
    dockerfile_inline: "FROM scratch\\nCOPY . /docs\\n"
    contexts: { api: "target:api" }
"""


class Repo:
    """A scratch directory to write build files into and load them from."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def load(self, *files: str, **kwargs: Any) -> BakeFile:
        kwargs.setdefault("environ", {})
        return load_bake(list(files) or None, cwd=str(self.root), **kwargs)

    def error(self, *files: str, **kwargs: Any) -> str:
        """The message of the BuildFileError loading raises (fails the test if it loads)."""
        with pytest.raises(BuildFileError) as info:
            self.load(*files, **kwargs)
        return str(info.value)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


@pytest.fixture
def example(repo: Repo) -> Repo:
    """The proposal's full example, with the directories and files it names."""
    repo.write("build.yaml", EXAMPLE)
    for rel in ("libs/common/pyproject.toml", "services/worker/Dockerfile", "services/web/Dockerfile"):
        repo.write(rel, "")
    repo.write("services/api/Dockerfile", "FROM base\n")
    repo.write("services/api/build.yaml", FRAGMENT)
    repo.write("services/web/frontend/package.json", "{}")
    return repo
