"""The registry client against a real distribution registry (and real faults in front of it)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import time
from pathlib import Path

import pytest

from cache.content_store import ContentStore
from engine.oci import mediatypes
from engine.oci.image import Descriptor, Index, Manifest, Platform
from engine.registry.client import RegistryClient, manifest_media_type
from engine.registry.config import parse_config
from engine.registry.credentials import Credential, DockerCredentials, StaticCredentials
from engine.registry.errors import RegistryAuthError, RegistryError, RegistryNotFoundError
from tests.registry.conftest import USERS
from tests.registry.servers import FaultProxy, Registry, TokenServer, free_port, start_registry


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_image(client: RegistryClient, ref: str, layer: bytes, arch: str = "amd64") -> tuple[str, bytes, str]:
    """A one-layer image (gzip layer, OCI config) pushed under `ref`: (manifest digest, manifest, layer digest)."""
    config = json.dumps(
        {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(gzip.decompress(layer))]}}
    ).encode()
    client.push_blob(ref, sha(layer), len(layer), lambda: io.BytesIO(layer))
    client.push_blob(ref, sha(config), len(config), lambda: io.BytesIO(config))
    manifest = Manifest(
        config=Descriptor(mediatypes.OCI_CONFIG, sha(config), len(config)),
        layers=(Descriptor(mediatypes.OCI_LAYER_GZIP, sha(layer), len(layer)),),
    ).to_json()
    return client.put_manifest(ref, manifest, mediatypes.OCI_MANIFEST), manifest, sha(layer)


def random_layer(size: int) -> bytes:
    return gzip.compress(os.urandom(size), compresslevel=0)


@pytest.fixture
def client() -> RegistryClient:
    with RegistryClient(chunk_size=1 << 20, monolithic_limit=1 << 20, backoff=0.05) as c:
        yield c


def test_blobs_upload_monolithic_and_chunked_skip_existing_and_mount(registry: Registry, client: RegistryClient) -> None:
    small, big = os.urandom(4096), os.urandom((2 << 20) + 12345)
    ref = f"{registry.host}/blobs/one:v1"
    assert client.push_blob(ref, sha(small), len(small), lambda: io.BytesIO(small)) == "uploaded"
    before = len(registry.requests())
    assert client.push_blob(ref, sha(big), len(big), lambda: io.BytesIO(big)) == "uploaded"
    patches = [r for r in registry.requests()[before:] if r.startswith("PATCH ")]
    assert len(patches) == 3  # 1 MiB chunks
    assert client.push_blob(ref, sha(big), len(big), lambda: io.BytesIO(b"never read")) == "exists"
    assert client.blob_exists(ref, sha(big)) and not client.blob_exists(ref, sha(b"absent"))
    other = f"{registry.host}/blobs/two:v1"
    assert client.push_blob(other, sha(big), len(big), lambda: io.BytesIO(big), mount_from="blobs/one") == "mounted"
    assert client.blob_exists(other, sha(big))


def test_manifests_round_trip_and_an_index_resolves_per_platform(registry: Registry, client: RegistryClient, store: ContentStore) -> None:
    repo = f"{registry.host}/multi/app"
    amd_digest, amd_manifest, amd_layer = push_image(client, f"{repo}:amd64", random_layer(1000))
    arm_digest, arm_manifest, _ = push_image(client, f"{repo}:arm64", random_layer(1000), arch="arm64")
    index = Index(
        manifests=(
            Descriptor(mediatypes.OCI_MANIFEST, arm_digest, len(arm_manifest), platform=Platform("arm64", "linux", variant="v8")),
            Descriptor(mediatypes.OCI_MANIFEST, amd_digest, len(amd_manifest), platform=Platform("amd64", "linux")),
        )
    ).to_json()
    index_digest = client.put_manifest(f"{repo}:latest", index, mediatypes.OCI_INDEX)
    resolved = client.resolve(repo)
    assert (resolved.digest, resolved.data, resolved.root_digest) == (amd_digest, amd_manifest, index_digest)
    assert resolved.media_type == mediatypes.OCI_MANIFEST and resolved.root_media_type == mediatypes.OCI_INDEX
    assert client.resolve(f"{repo}:latest", platform="linux/aarch64").digest == arm_digest
    assert client.resolve(f"{repo}@{amd_digest}").digest == amd_digest
    with pytest.raises(RegistryNotFoundError, match=r"no image for linux/s390x \(the index has linux/amd64, linux/arm64/v8\)"):
        client.resolve(repo, platform="linux/s390x")
    assert client.head_manifest(repo) == index_digest
    assert client.head_manifest(f"{repo}:nope") is None
    doc = client.get_manifest(repo)
    assert doc.is_index and doc.digest == index_digest
    with pytest.raises(RegistryNotFoundError) as info:
        client.get_manifest(f"{repo}:nope")
    assert str(info.value) == f"fetching manifest {repo}:nope: 404 manifest unknown from {registry.host}"
    layer_size = json.loads(amd_manifest)["layers"][0]["size"]
    with pytest.raises(RegistryError, match=f"the blob ended after {layer_size} of its descriptor's {layer_size + 1} bytes"):
        client.fetch_blob(repo, amd_layer, store, size=layer_size + 1)
    assert not store.has(amd_layer)
    client.fetch_blob(repo, amd_layer, store, size=layer_size)
    assert store.verify(amd_layer)


@pytest.mark.parametrize(
    "doc, content_type, message",
    [
        ({"schemaVersion": 2, "manifests": [], "layers": []}, "application/vnd.oci.image.index.v1+json", "ambiguous"),
        ({"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST, "config": {}, "layers": []}, mediatypes.OCI_INDEX, "served as"),
        ({"schemaVersion": 1, "fsLayers": []}, "application/json", "schema 1"),
        ({"schemaVersion": 2, "mediaType": "application/vnd.example+json", "layers": []}, "", "unsupported manifest type"),
        ({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "layers": []}, "", "contradict"),
    ],
)
def test_unsafe_manifest_documents_are_refused(doc: dict, content_type: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        manifest_media_type(json.dumps(doc).encode(), content_type, "fetching manifest x")


def test_media_type_is_inferred_only_when_unambiguous() -> None:
    docker = {"schemaVersion": 2, "config": {"mediaType": mediatypes.DOCKER_CONFIG}, "layers": []}
    assert manifest_media_type(json.dumps(docker).encode(), "application/json", "x") == mediatypes.DOCKER_MANIFEST
    assert manifest_media_type(b'{"schemaVersion":2,"manifests":[]}', "", "x") == mediatypes.OCI_INDEX


def test_a_tampered_blob_is_refused_and_nothing_is_stored(tmp_path: Path, client: RegistryClient, store: ContentStore) -> None:
    registry = start_registry(tmp_path / "tamper")
    try:
        ref = f"{registry.host}/tamper/me:v1"
        layer = random_layer(50_000)
        push_image(client, ref, layer)
        data = registry.blob_data(sha(layer))
        corrupted = bytearray(data.read_bytes())
        corrupted[100] ^= 0xFF
        data.write_bytes(bytes(corrupted))
        with pytest.raises(RegistryError, match=rf"blob {sha(layer)} of {registry.host}/tamper/me .*digest mismatch.*nothing was stored"):
            client.fetch_blob(ref, sha(layer), store, size=len(layer))
        assert not store.has(sha(layer))
        assert not list(store.tmp_dir.iterdir())  # no half-written temp blob either
        deadline = time.monotonic() + 5  # the registry writes its access log line after answering
        while True:
            gets = [r for r in registry.requests() if r.startswith(f"GET /v2/tamper/me/blobs/{sha(layer)}")]
            if len(gets) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(gets) == 2  # retried once from scratch, then refused
        with pytest.raises(RegistryError, match="larger than its descriptor"):
            client.fetch_blob(ref, sha(layer), store, size=len(layer) - 1)
        assert not store.has(sha(layer))
    finally:
        registry.stop()


def test_a_dropped_download_resumes_with_a_range_request(registry: Registry, client: RegistryClient, store: ContentStore) -> None:
    ref = f"{registry.host}/resume/me:v1"
    layer = random_layer(3 << 20)
    push_image(client, ref, layer)
    proxy = FaultProxy(registry.host)
    proxy.drop_download_after = 1 << 20
    try:
        seen: list[int] = []
        via = f"{proxy.host}/resume/me:v1"
        client.fetch_blob(via, sha(layer), store, size=len(layer), progress=lambda done, total: seen.append(done))
        assert store.verify(sha(layer)) and "drop_download" in proxy.fired
        ranges = [r.headers.get("range") for r in proxy.seen if r.method == "GET" and "/blobs/" in r.path]
        assert ranges[0] is None and ranges[1].startswith("bytes=") and int(ranges[1][6:-1]) > 0
        assert seen[-1] == len(layer)
    finally:
        proxy.stop()


def test_an_upload_cut_half_way_restarts_its_session_and_completes(registry: Registry, client: RegistryClient) -> None:
    proxy = FaultProxy(registry.host)
    proxy.drop_upload_after = 700_000  # bytes into an upload request body (a 1 MiB PATCH)
    try:
        blob = os.urandom(3 << 20)
        ref = f"{proxy.host}/interrupted/upload:v1"
        opened = []

        def open_blob() -> io.BytesIO:
            opened.append(1)
            return io.BytesIO(blob)

        assert client.push_blob(ref, sha(blob), len(blob), open_blob) == "uploaded"
        assert "drop_upload" in proxy.fired and len(opened) == 2  # a fresh stream for a fresh session
        assert sum(1 for r in proxy.seen if r.method == "POST") == 2
        assert client.blob_exists(f"{registry.host}/interrupted/upload:v1", sha(blob))
    finally:
        proxy.stop()


def test_429_waits_for_retry_after(registry: Registry, client: RegistryClient) -> None:
    proxy = FaultProxy(registry.host)
    proxy.answer_429 = True
    try:
        started = time.monotonic()
        assert client.head_manifest(f"{proxy.host}/nothing/here:v1") is None
        assert time.monotonic() - started >= 1.0 and "429" in proxy.fired
    finally:
        proxy.stop()


def test_mirrors_are_tried_in_order_and_fall_back(registry: Registry, store: ContentStore) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with RegistryClient(backoff=0.01) as plain:
        digest, _, layer = push_image(plain, f"{registry.host}/library/mirrored:1.0", random_layer(2000))
    config = parse_config(
        f'[registry."docker.io"]\nmirrors = ["{dead}", "{registry.host}/no-such-prefix", "{registry.host}"]\n'
    )
    with RegistryClient(config, backoff=0.01) as client:
        resolved = client.resolve("mirrored:1.0")
        assert resolved.digest == digest and resolved.source == registry.host
        client.fetch_blob("mirrored:1.0", layer, store)
        assert store.has(layer)
        with pytest.raises(RegistryError) as info:
            client.resolve("not-mirrored")
        message = str(info.value)
        assert message.startswith("fetching manifest docker.io/library/not-mirrored:latest: cannot reach registry-1.docker.io")
        assert f"mirror {dead}: " in message and f"mirror {registry.host}: fetching manifest" in message


def test_bearer_tokens_per_scope_from_the_token_server(
    token_registry: Registry, token_server: TokenServer, tmp_path: Path, store: ContentStore
) -> None:
    ref = f"{token_registry.host}/team/app:v1"
    with RegistryClient(backoff=0.01) as anonymous:
        with pytest.raises(RegistryAuthError, match=r"401 .* from " + token_registry.host):
            anonymous.push_blob(ref, sha(b"x"), 1, lambda: io.BytesIO(b"x"))
    docker = DockerCredentials(tmp_path / "docker")
    docker.store(token_registry.host, Credential(*next(iter(USERS.items()))))
    with RegistryClient(credentials=docker, backoff=0.01) as client:
        digest, _, layer = push_image(client, ref, random_layer(1000))
        assert client.resolve(ref).digest == digest
        client.fetch_blob(ref, layer, store)
        assert client.auth.token_requests == 2  # one token for pull+push, one for pull
        assert all(r["user"] == "alice" for r in token_server.requests[-2:])
    with RegistryClient(credentials=StaticCredentials(token_registry.host, Credential("alice", "wrong")), backoff=0.01) as bad:
        with pytest.raises(RegistryAuthError, match="token server 127.0.0.1:.* refused the stored credentials") as info:
            bad.resolve(ref)
        assert "wrong" not in str(info.value)
    with RegistryClient(credentials=StaticCredentials(token_registry.host, Credential(identity_token="refresh-for-alice"))) as refresh:
        assert refresh.resolve(ref).digest == digest
        assert token_server.requests[-1]["method"] == "POST"
        assert not any(token in str(token_server.requests) for token in token_server.issued)


def test_basic_auth_and_login_checks(basic_registry: Registry) -> None:
    ref = f"{basic_registry.host}/private/app:v1"
    with RegistryClient(backoff=0.01) as anonymous:
        with pytest.raises(RegistryAuthError, match=f"{basic_registry.host} requires a login"):
            anonymous.head_manifest(ref)
    wrong = StaticCredentials(basic_registry.host, Credential("alice", "nope"))
    with RegistryClient(credentials=wrong, backoff=0.01) as client:
        with pytest.raises(RegistryAuthError, match=rf"logging in to {basic_registry.host}: 401"):
            client.check_login(basic_registry.host)
    right = StaticCredentials(basic_registry.host, Credential("alice", USERS["alice"]))
    with RegistryClient(credentials=right, backoff=0.01) as client:
        client.check_login(basic_registry.host)
        digest, _, _ = push_image(client, ref, random_layer(500))
        assert client.head_manifest(ref) == digest
