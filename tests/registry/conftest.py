"""Fixtures for registry tests: real `docker-registry` servers on 127.0.0.1 (see servers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from cache.content_store import ContentStore
from tests.registry.servers import Registry, TokenServer, htpasswd_auth, start_registry

USERS = {"alice": "wonderland"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain registry shared by a module's tests (each test uses its own repositories)."""
    server = start_registry(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry with htpasswd basic auth (alice / wonderland)."""
    work = tmp_path_factory.mktemp("basic-registry")
    server = start_registry(work, auth=htpasswd_auth(work, USERS))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    server = TokenServer(tmp_path_factory.mktemp("token"), USERS, refresh_tokens={"refresh-for-alice": "alice"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory, token_server: TokenServer) -> Iterator[Registry]:
    """A registry that wants bearer tokens from `token_server`."""
    server = start_registry(tmp_path_factory.mktemp("token-registry"), auth=token_server.registry_auth())
    yield server
    server.stop()


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    (tmp_path / "blobs").mkdir()
    return ContentStore(tmp_path / "blobs", tmp_path / "tmp", fsync=False)
