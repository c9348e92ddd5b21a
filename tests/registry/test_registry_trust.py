"""Registry trust: a tampering HTTP proxy in front of the real `docker-registry`.

Every case puts `TamperingProxy` (an HTTP proxy on 127.0.0.1 that forwards to the real
registry and may rewrite, cut, lengthen or replace one kind of answer) between the
client and Debian's `docker-registry`, and checks that what the proxy did is refused —
or, for a cut connection, resumed — and that nothing unverified reaches the content
store or the image store. `OtherOrigin` is a second server (another port, or
127.0.0.2) standing for a CDN or storage host a registry redirects to: it records
every request's headers, so the tests can prove credentials never leave the
registry's own origin. The CLI cases run `shipyard pull` / `shipyard build` against
the same proxy.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from cache.content_store import ContentStore
from engine.oci import mediatypes
from engine.oci.image import Descriptor, Index, Manifest, Platform
from engine.registry.client import RegistryClient
from engine.registry.config import parse_config
from engine.registry.credentials import Credential, StaticCredentials
from engine.registry.errors import RegistryAuthError, RegistryError
from tests.e2e.conftest import Shipyard, write
from tests.registry.conftest import USERS
from tests.registry.servers import Registry

PASSWORD = USERS["alice"]
BASIC = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
ENDLESS_CAP = 64 << 20
HOP_BY_HOP = frozenset(("connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"))


def sha(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest()


# --------------------------------------------------------------------------- servers


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes = b""


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    cut_after: int | None = None
    """Declare the whole body's length, send only this many bytes, then close the connection."""
    endless: bool = False
    """After the body keep sending junk (a terabyte is declared) until the client hangs up (or ENDLESS_CAP)."""


Forward = Callable[[], Answer]
Handle = Callable[[Seen, Forward], Answer]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Base:
    """A threaded HTTP/1.1 server on `bind`, optionally TLS, that sends `Answer`s."""

    def __init__(self, bind: str, tls: tuple[Path, Path] | None = None) -> None:
        self.seen: list[Seen] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                owner.seen.append(seen)
                self.send(owner.answer(seen))

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = serve

            def send(self, answer: Answer) -> None:
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    if name not in HOP_BY_HOP and not (name == "content-length" and self.command != "HEAD"):
                        self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(answer.body) + (1 << 40 if answer.endless else 0)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                try:
                    self.wfile.write(answer.body if answer.cut_after is None else answer.body[: answer.cut_after])
                    self.wfile.flush()
                    junk = b"\xa5" * 65536
                    while answer.endless and owner.junk_sent < ENDLESS_CAP:  # a capped "forever": a regression fails, not hangs
                        self.wfile.write(junk)
                        owner.junk_sent += len(junk)
                except OSError:
                    pass
                if answer.cut_after is not None or answer.endless:
                    self.close_connection = True

        self.junk_sent = 0
        self.httpd = _Server((bind, 0), Handler)
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.host = f"{bind}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, seen: Seen) -> Answer:
        raise NotImplementedError

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class TamperingProxy(_Base):
    """Forwards every request to the real registry; `handle(seen, forward)` decides what goes back."""

    def __init__(self, upstream: str, tls: tuple[Path, Path] | None = None) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.handle: Handle = lambda seen, forward: forward()
        super().__init__("127.0.0.1", tls)

    def answer(self, seen: Seen) -> Answer:
        return self.handle(seen, lambda: self.forward(seen))

    def forward(self, seen: Seen, path: str = "") -> Answer:
        """The registry's own answer (the Host header is kept: its Locations name the proxy)."""
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            headers = {k: v for k, v in seen.headers.items() if k not in HOP_BY_HOP}
            connection.request(seen.method, path or seen.path, body=seen.body, headers=headers)
            response = connection.getresponse()
            body = response.read()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
        finally:
            connection.close()


class OtherOrigin(_Base):
    """A storage host on another origin: serves blobs, takes uploads, and records every request."""

    def __init__(self, bind: str, blobs: Callable[[str], bytes], tls: tuple[Path, Path] | None = None) -> None:
        self.blobs = blobs
        self.uploads: dict[str, bytearray] = {}
        self.stored: dict[str, bytes] = {}
        self.tamper = False
        self.challenge = ""
        super().__init__(bind, tls)

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def answer(self, seen: Seen) -> Answer:
        if self.challenge:
            return Answer(401, {"www-authenticate": self.challenge})
        url = urllib.parse.urlsplit(seen.path)
        if seen.method == "GET" and url.path.startswith("/blobs/"):
            data = bytearray(self.blobs(url.path[len("/blobs/") :]))
            if self.tamper:
                data[len(data) // 2] ^= 0xFF
            return Answer(200, {"content-type": "application/octet-stream"}, bytes(data))
        if url.path.startswith("/uploads/") and seen.method in ("PATCH", "PUT"):
            received = self.uploads.setdefault(url.path, bytearray())
            received += seen.body
            if seen.method == "PATCH":
                return Answer(202, {"location": self.url(url.path), "range": f"0-{len(received) - 1}"})
            digest = urllib.parse.parse_qs(url.query).get("digest", [""])[0]
            if sha(bytes(received)) != digest:
                return Answer(400, {}, b'{"errors":[{"code":"DIGEST_INVALID","message":"digest did not match"}]}')
            self.stored[digest] = bytes(received)
            return Answer(201, {"location": self.url(f"/blobs/{digest}"), "docker-content-digest": digest})
        return Answer(404)


def leaked(seen: list[Seen]) -> list[Seen]:
    """Requests that carried credentials in any form (header, path, body)."""
    secrets = (PASSWORD.encode(), BASIC.split()[1].encode())
    return [
        s for s in seen
        if "authorization" in s.headers or any(x in repr(s.headers).encode() + s.path.encode() + s.body for x in secrets)
    ]


def is_blob_get(seen: Seen, digest: str) -> bool:
    return seen.method == "GET" and urllib.parse.urlsplit(seen.path).path.endswith(f"/blobs/{digest}")


def is_manifest_get(seen: Seen, target: str) -> bool:
    return seen.method == "GET" and seen.path.endswith(f"/manifests/{target}")


def flipped(data: bytes, at: int | None = None) -> bytes:
    out = bytearray(data)
    out[len(out) // 2 if at is None else at] ^= 0xFF
    return bytes(out)


# --------------------------------------------------------------------------- the image


@dataclass(frozen=True)
class Pushed:
    repo: str
    """`trust/app`: the repository path, on whichever host."""
    tag: str
    manifest: bytes
    digest: str
    layer: bytes
    config: bytes

    @property
    def layer_digest(self) -> str:
        return sha(self.layer)

    def via(self, host: str, target: str = "") -> str:
        target = target or self.tag
        return f"{host}/{self.repo}{'@' if ':' in target else ':'}{target}"


def tar_layer() -> tuple[bytes, bytes]:
    """(gzip layer, uncompressed tar): one random file, big enough to arrive in many reads."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        payload = os.urandom(400_000)
        info = tarfile.TarInfo("data/payload.bin")
        info.size, info.mode, info.mtime = len(payload), 0o644, 1700000000
        tar.addfile(info, io.BytesIO(payload))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, compresslevel=1, mtime=0), tar_bytes


def push_image(client: RegistryClient, host: str, repo: str, tag: str) -> Pushed:
    layer, tar_bytes = tar_layer()
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
         "rootfs": {"type": "layers", "diff_ids": [sha(tar_bytes)]}}
    ).encode()
    ref = f"{host}/{repo}:{tag}"
    client.push_blob(ref, sha(layer), len(layer), lambda: io.BytesIO(layer))
    client.push_blob(ref, sha(config), len(config), lambda: io.BytesIO(config))
    manifest = Manifest(
        config=Descriptor(mediatypes.OCI_CONFIG, sha(config), len(config)),
        layers=(Descriptor(mediatypes.OCI_LAYER_GZIP, sha(layer), len(layer)),),
    ).to_json()
    digest = client.put_manifest(ref, manifest, mediatypes.OCI_MANIFEST)
    return Pushed(repo, tag, manifest, digest, layer, config)


@pytest.fixture(scope="module")
def image(registry: Registry) -> Pushed:
    with RegistryClient(backoff=0.01) as client:
        return push_image(client, registry.host, "trust/app", "v1")


@pytest.fixture(scope="module")
def private_image(basic_registry: Registry) -> Pushed:
    credentials = StaticCredentials(basic_registry.host, Credential("alice", PASSWORD))
    with RegistryClient(credentials=credentials, backoff=0.01) as client:
        return push_image(client, basic_registry.host, "private/app", "v1")


@pytest.fixture
def proxy(registry: Registry) -> Iterator[TamperingProxy]:
    server = TamperingProxy(registry.host)
    yield server
    server.stop()


@pytest.fixture
def private_proxy(basic_registry: Registry) -> Iterator[TamperingProxy]:
    server = TamperingProxy(basic_registry.host)
    yield server
    server.stop()


@pytest.fixture
def client() -> Iterator[RegistryClient]:
    with RegistryClient(backoff=0.01) as c:
        yield c


def logged_in(host: str, **kwargs: object) -> RegistryClient:
    return RegistryClient(credentials=StaticCredentials(host, Credential("alice", PASSWORD)), backoff=0.01, **kwargs)


def assert_store_clean(store: ContentStore, *absent: str) -> None:
    """Nothing half-written, none of `absent`, and every blob that is there hashes to its name."""
    for digest in absent:
        assert not store.has(digest)
    assert not store.tmp_dir.exists() or not list(store.tmp_dir.iterdir())
    for path in store.blobs_dir.rglob("*"):
        if path.is_file():
            assert sha(path.read_bytes()) == f"{path.parent.name}:{path.name}"


# --------------------------------------------------------------------------- 1. blob bytes swapped


def test_blob_bytes_swapped_in_flight_are_refused_and_nothing_is_stored(
    registry: Registry, proxy: TamperingProxy, image: Pushed, client: RegistryClient, store: ContentStore
) -> None:
    def swap(seen: Seen, forward: Forward) -> Answer:
        answer = forward()
        return replace(answer, body=flipped(answer.body)) if is_blob_get(seen, image.layer_digest) else answer

    proxy.handle = swap
    ref = image.via(proxy.host)
    with pytest.raises(RegistryError) as info:
        client.fetch_blob(ref, image.layer_digest, store, size=len(image.layer))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"blob {image.layer_digest} of {proxy.host}/trust/app from {proxy.host}: digest mismatch")
    assert message.endswith("nothing was stored")
    assert len([s for s in proxy.seen if is_blob_get(s, image.layer_digest)]) == 2  # once more from scratch, then refused
    assert_store_clean(store, image.layer_digest)
    client.fetch_blob(image.via(registry.host), image.layer_digest, store)
    assert store.verify(image.layer_digest)  # the same client, straight from the registry: the real bytes


# --------------------------------------------------------------------------- 2. blob size


@pytest.mark.parametrize("extra", ["one byte", "endless"])
def test_a_blob_longer_than_its_descriptor_is_cut_at_size_plus_one(
    extra: str, proxy: TamperingProxy, image: Pushed, client: RegistryClient, store: ContentStore
) -> None:
    def lengthen(seen: Seen, forward: Forward) -> Answer:
        answer = forward()
        if not is_blob_get(seen, image.layer_digest):
            return answer
        if extra == "endless":
            return replace(answer, endless=True)
        return replace(answer, body=answer.body + b"!")

    proxy.handle = lengthen
    started = time.monotonic()
    with pytest.raises(RegistryError, match=rf"the blob is larger than its descriptor's {len(image.layer)} bytes"):
        client.fetch_blob(image.via(proxy.host), image.layer_digest, store, size=len(image.layer))
    assert time.monotonic() - started < 10
    assert proxy.junk_sent < ENDLESS_CAP // 2  # it stopped reading: it did not drain the terabyte
    assert len([s for s in proxy.seen if is_blob_get(s, image.layer_digest)]) == 1  # no retry of a lying blob
    assert_store_clean(store, image.layer_digest)


def test_a_cut_connection_resumes_with_a_range_and_stores_the_real_blob(
    proxy: TamperingProxy, image: Pushed, client: RegistryClient, store: ContentStore
) -> None:
    def cut_once(seen: Seen, forward: Forward) -> Answer:
        answer = forward()
        first = is_blob_get(seen, image.layer_digest) and "range" not in seen.headers
        return replace(answer, cut_after=len(answer.body) // 3) if first else answer

    proxy.handle = cut_once
    client.fetch_blob(image.via(proxy.host), image.layer_digest, store, size=len(image.layer))
    assert store.verify(image.layer_digest)
    gets = [s for s in proxy.seen if is_blob_get(s, image.layer_digest)]
    assert len(gets) == 2 and gets[1].headers["range"] == f"bytes={len(image.layer) // 3}-"


@pytest.mark.parametrize("how", ["cut every time", "resumed with other bytes", "short but complete"])
def test_a_short_blob_is_never_stored(
    how: str, proxy: TamperingProxy, image: Pushed, client: RegistryClient, store: ContentStore
) -> None:
    def shorten(seen: Seen, forward: Forward) -> Answer:
        answer = forward()
        if not is_blob_get(seen, image.layer_digest):
            return answer
        if how == "cut every time":
            return replace(answer, cut_after=20_000)
        if how == "resumed with other bytes":
            return replace(answer, body=flipped(answer.body, 0)) if "range" in seen.headers else replace(answer, cut_after=50_000)
        return replace(answer, body=answer.body[:-100])

    proxy.handle = shorten
    expected = {
        "cut every time": r"connection lost after 80000 bytes",  # 4 tries of 20,000 bytes: 3 resumes, then refused
        "resumed with other bytes": r"digest mismatch .*; nothing was stored",
        "short but complete": rf"the blob ended after {len(image.layer) - 100} of its descriptor's {len(image.layer)} bytes",
    }[how]
    with pytest.raises(RegistryError, match=expected):
        client.fetch_blob(image.via(proxy.host), image.layer_digest, store, size=len(image.layer))
    assert_store_clean(store, image.layer_digest)


# --------------------------------------------------------------------------- 3. manifests


def test_a_content_type_that_disagrees_with_the_media_type_is_refused(
    proxy: TamperingProxy, image: Pushed, client: RegistryClient
) -> None:
    def relabel(seen: Seen, forward: Forward) -> Answer:
        answer = forward()
        if "/manifests/" in seen.path:
            answer.headers["content-type"] = mediatypes.OCI_INDEX
        return answer

    proxy.handle = relabel
    for target in (image.tag, image.digest):
        with pytest.raises(RegistryError) as info:
            client.resolve(image.via(proxy.host, target))
        assert str(info.value).endswith(f"served as {mediatypes.OCI_INDEX} but the document says {mediatypes.OCI_MANIFEST}")


def ambiguous_documents(image: Pushed) -> list[tuple[str, bytes]]:
    """CVE-2021-41190: one document readable as an image and as an index (the registry refuses to store them)."""
    manifest = json.loads(image.manifest)
    child = {"mediaType": mediatypes.OCI_MANIFEST, "digest": image.digest, "size": len(image.manifest),
             "platform": {"architecture": "amd64", "os": "linux"}}
    as_index = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": [child], "layers": manifest["layers"]}
    as_image = dict(manifest, manifests=[child])
    untyped = {k: v for k, v in as_image.items() if k != "mediaType"}
    return [
        (mediatypes.OCI_INDEX, json.dumps(as_index).encode()),
        (mediatypes.OCI_MANIFEST, json.dumps(as_image).encode()),
        (mediatypes.OCI_INDEX, json.dumps(untyped).encode()),
        (mediatypes.OCI_MANIFEST, json.dumps(untyped).encode()),
    ]


def serve_document(tag: str, document: bytes, content_type: str) -> Handle:
    """Answer the tag and the document's own digest with it, with an honest Docker-Content-Digest."""

    def handle(seen: Seen, forward: Forward) -> Answer:
        if is_manifest_get(seen, tag) or is_manifest_get(seen, sha(document)):
            headers = {"content-type": content_type, "docker-content-digest": sha(document)}
            return Answer(200, headers, document)
        return forward()

    return handle


def test_the_registry_itself_refuses_to_store_an_ambiguous_document(registry: Registry, image: Pushed) -> None:
    """Why the proxy has to serve them: distribution 2.8 has the CVE fix (a tampering
    registry or a man in the middle is what serves them in the wild)."""
    for content_type, document in ambiguous_documents(image):
        connection = http.client.HTTPConnection(registry.host, timeout=10)
        connection.request("PUT", f"/v2/{image.repo}/manifests/{sha(document)}", document, {"Content-Type": content_type})
        assert connection.getresponse().status == 400
        connection.close()


def test_an_ambiguous_manifest_is_refused_under_a_matching_digest(
    proxy: TamperingProxy, image: Pushed, client: RegistryClient, store: ContentStore
) -> None:
    for content_type, document in ambiguous_documents(image):
        proxy.handle = serve_document("ambiguous", document, content_type)
        for target in ("ambiguous", sha(document)):
            ref = image.via(proxy.host, target)
            with pytest.raises(RegistryError, match=r"ambiguous document with both manifests and layers \(refused, CVE-2021-41190\)"):
                client.resolve(ref)
            with pytest.raises(RegistryError, match=r"CVE-2021-41190"):
                client.get_manifest(ref)
    assert not [s for s in proxy.seen if "/blobs/" in s.path]  # refused before anything it names was fetched
    assert_store_clean(store)


def test_manifest_bytes_that_do_not_hash_to_the_digest_are_refused(
    proxy: TamperingProxy, image: Pushed, client: RegistryClient
) -> None:
    def alter(seen: Seen, forward: Forward) -> Answer:
        answer = forward()
        if "/manifests/" in seen.path and answer.status == 200:
            return replace(answer, body=answer.body + b" ")  # still the same JSON: only the digest tells
        return answer

    proxy.handle = alter
    altered = sha(image.manifest + b" ")
    with pytest.raises(RegistryError) as info:
        client.resolve(image.via(proxy.host, image.digest))
    assert str(info.value).endswith(f"digest mismatch: the registry sent {altered}")
    with pytest.raises(RegistryError) as info:
        client.resolve(image.via(proxy.host))
    assert str(info.value).endswith(f"Docker-Content-Digest {image.digest} does not match the body ({altered})")


@pytest.mark.parametrize("algorithm", ["sha512", "sha384"])
def test_an_index_child_named_by_another_algorithm_is_verified_too(
    algorithm: str, proxy: TamperingProxy, image: Pushed, client: RegistryClient
) -> None:
    """The digest algorithm is the index's choice; a child it names by sha512 is still checked."""
    child = sha(image.manifest, algorithm)
    index = Index(
        manifests=(Descriptor(mediatypes.OCI_MANIFEST, child, len(image.manifest), platform=Platform("amd64", "linux")),)
    ).to_json()
    tamper = {"on": False}

    def serve(seen: Seen, forward: Forward) -> Answer:
        if is_manifest_get(seen, "multi"):
            return Answer(200, {"content-type": mediatypes.OCI_INDEX, "docker-content-digest": sha(index)}, index)
        if is_manifest_get(seen, child):  # the registry knows it by sha256 only
            answer = proxy.forward(seen, seen.path.replace(child, image.digest))
            answer.headers.pop("docker-content-digest", None)
            return replace(answer, body=answer.body + b" ") if tamper["on"] else answer
        return forward()

    proxy.handle = serve
    resolved = client.resolve(image.via(proxy.host, "multi"))
    assert (resolved.digest, resolved.root_digest, resolved.data) == (image.digest, sha(index), image.manifest)
    tamper["on"] = True
    with pytest.raises(RegistryError, match=rf"digest mismatch: the registry sent {algorithm}:[0-9a-f]+$"):
        client.resolve(image.via(proxy.host, "multi"))
    with pytest.raises(RegistryError, match="unsupported digest algorithm 'md5'"):
        client.get_manifest(image.via(proxy.host, "md5:" + hashlib.md5(image.manifest).hexdigest()))


def test_a_manifest_whose_encoding_cannot_be_decoded_is_a_clear_error(
    proxy: TamperingProxy, image: Pushed, client: RegistryClient
) -> None:
    def garble(seen: Seen, forward: Forward) -> Answer:
        answer = forward()
        if "/manifests/" in seen.path:
            answer.headers["content-encoding"] = "gzip"
            return replace(answer, body=b"\x1f\x8bnot gzip at all" + answer.body)
        return answer

    proxy.handle = garble
    with pytest.raises(RegistryError, match=rf"fetching manifest {proxy.host}/trust/app:v1: .*from {proxy.host}"):
        client.resolve(image.via(proxy.host))


# --------------------------------------------------------------------------- 4. other origins


@pytest.fixture(params=["127.0.0.1", "127.0.0.2"], ids=["other-port", "other-host"])
def other(request: pytest.FixtureRequest, basic_registry: Registry) -> Iterator[OtherOrigin]:
    server = OtherOrigin(request.param, lambda digest: basic_registry.blob_data(digest).read_bytes())
    yield server
    server.stop()


def redirect_blobs(other: OtherOrigin, status: int = 307) -> Handle:
    """What a registry with S3/CDN storage does: an authenticated blob GET is sent to the storage host."""

    def handle(seen: Seen, forward: Forward) -> Answer:
        if seen.method == "GET" and "/blobs/sha256:" in seen.path and "authorization" in seen.headers:
            digest = seen.path.rsplit("/", 1)[1].split("?")[0]
            return Answer(status, {"location": other.url(f"/blobs/{digest}?X-Amz-Signature=abc")})
        return forward()

    return handle


def test_a_blob_redirected_to_another_origin_gets_no_credentials_and_still_verifies(
    private_proxy: TamperingProxy, other: OtherOrigin, private_image: Pushed, store: ContentStore
) -> None:
    private_proxy.handle = redirect_blobs(other)
    ref = private_image.via(private_proxy.host)
    with logged_in(private_proxy.host) as client:
        resolved = client.resolve(ref)
        client.fetch_blob(ref, private_image.layer_digest, store, size=len(private_image.layer))
        client.fetch_blob(ref, sha(private_image.config), store, size=len(private_image.config))
    assert resolved.digest == private_image.digest
    assert store.verify(private_image.layer_digest) and store.verify(sha(private_image.config))
    redirected = [s for s in private_proxy.seen if "/blobs/" in s.path and s.headers.get("authorization") == BASIC]
    assert len(redirected) == 2  # the registry's origin did get the password (it asked for it) …
    assert [s.method for s in other.seen] == ["GET", "GET"]
    assert leaked(other.seen) == []  # … the storage host never did
    assert other.seen[0].headers["host"] == other.host


def test_tampered_bytes_from_the_redirect_target_are_refused(
    private_proxy: TamperingProxy, other: OtherOrigin, private_image: Pushed, store: ContentStore
) -> None:
    private_proxy.handle = redirect_blobs(other, status=302)
    other.tamper = True
    mismatch = rf"blob {private_image.layer_digest} .* digest mismatch .*nothing was stored"
    with logged_in(private_proxy.host) as client, pytest.raises(RegistryError, match=mismatch):
        client.fetch_blob(private_image.via(private_proxy.host), private_image.layer_digest, store, size=len(private_image.layer))
    assert len(other.seen) == 2 and leaked(other.seen) == []
    assert_store_clean(store, private_image.layer_digest)


def test_a_challenge_from_the_redirect_target_is_not_answered_with_the_registrys_credentials(
    private_proxy: TamperingProxy, other: OtherOrigin, private_image: Pushed, store: ContentStore
) -> None:
    """A storage host that answers 401 with its own token realm must not get the user's password."""
    private_proxy.handle = redirect_blobs(other)
    other.challenge = f'Bearer realm="{other.url("/token")}",service="evil"'
    with logged_in(private_proxy.host) as client:
        client.resolve(private_image.via(private_proxy.host))  # the registry's own Basic challenge, answered
        with pytest.raises(RegistryAuthError, match=rf"401 from {other.host}, not {private_proxy.host}"):
            client.fetch_blob(private_image.via(private_proxy.host), private_image.layer_digest, store)
        client.check_login(private_proxy.host)  # the registry's challenge was not replaced by the stranger's
    assert not [s for s in other.seen if s.path.startswith("/token")]
    assert leaked(other.seen) == []
    assert_store_clean(store, private_image.layer_digest)


def test_a_redirect_loop_is_a_clear_error(proxy: TamperingProxy, image: Pushed, client: RegistryClient, store: ContentStore) -> None:
    def loop(seen: Seen, forward: Forward) -> Answer:
        if is_blob_get(seen, image.layer_digest):
            return Answer(307, {"location": f"http://{proxy.host}{seen.path}"})
        return forward()

    proxy.handle = loop
    with pytest.raises(RegistryError, match=rf"fetching blob {image.layer_digest} of {proxy.host}/trust/app: too many redirects"):
        client.fetch_blob(image.via(proxy.host), image.layer_digest, store, size=len(image.layer))
    assert_store_clean(store, image.layer_digest)


@pytest.mark.parametrize("monolithic_limit", [1 << 20, 64 << 10], ids=["one-put", "chunked"])
def test_an_upload_location_on_another_origin_gets_no_credentials(
    monolithic_limit: int, private_proxy: TamperingProxy, other: OtherOrigin, basic_registry: Registry
) -> None:
    def start_elsewhere(seen: Seen, forward: Forward) -> Answer:
        if seen.method == "POST" and seen.path.split("?")[0].endswith("/blobs/uploads/") and "authorization" in seen.headers:
            return Answer(202, {"location": other.url("/uploads/42?_state=opaque"), "docker-upload-uuid": "42", "range": "0-0"})
        return forward()

    private_proxy.handle = start_elsewhere
    blob = os.urandom(200_000)
    ref = f"{private_proxy.host}/private/uploads:v1"
    with logged_in(private_proxy.host, chunk_size=64 << 10, monolithic_limit=monolithic_limit) as client:
        assert client.push_blob(ref, sha(blob), len(blob), lambda: io.BytesIO(blob)) == "uploaded"
    assert other.stored == {sha(blob): blob}
    posts = [s for s in private_proxy.seen if s.method == "POST"]
    assert posts[-1].headers.get("authorization") == BASIC
    methods = [s.method for s in other.seen]
    assert methods == (["PUT"] if monolithic_limit > len(blob) else ["PATCH"] * 4 + ["PUT"])
    assert leaked(other.seen) == []


def test_a_redirected_upload_is_a_clear_error_and_sends_nothing_elsewhere(
    private_proxy: TamperingProxy, other: OtherOrigin, basic_registry: Registry
) -> None:
    """A 307 on the upload PUT would need the streamed body again: refused in one line."""

    def redirect_put(seen: Seen, forward: Forward) -> Answer:
        if seen.method == "PUT" and "/blobs/uploads/" in seen.path:
            return Answer(307, {"location": other.url("/uploads/elsewhere")})
        return forward()

    private_proxy.handle = redirect_put
    blob = os.urandom(100_000)
    ref = f"{private_proxy.host}/private/redirected:v1"
    with logged_in(private_proxy.host, chunk_size=64 << 10, monolithic_limit=1 << 20) as client:
        with pytest.raises(RegistryError, match="redirected an upload, which cannot be replayed"):
            client.push_blob(ref, sha(blob), len(blob), lambda: io.BytesIO(blob))
    assert leaked(other.seen) == []


def make_cert(workdir: Path) -> tuple[Path, Path]:
    cert, key = workdir / "proxy.crt", workdir / "proxy.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def test_a_redirect_from_https_down_to_http_drops_the_credentials(
    tmp_path: Path, basic_registry: Registry, private_image: Pushed, store: ContentStore
) -> None:
    cert, key = make_cert(tmp_path)
    front = TamperingProxy(basic_registry.host, tls=(cert, key))
    plain = OtherOrigin("127.0.0.1", lambda digest: basic_registry.blob_data(digest).read_bytes())
    try:
        front.handle = redirect_blobs(plain)
        config = parse_config(f'[registry."{front.host}"]\nhttp = false\nca = ["{cert}"]\n')
        with logged_in(front.host, config=config) as client:
            client.fetch_blob(private_image.via(front.host), private_image.layer_digest, store, size=len(private_image.layer))
        assert store.verify(private_image.layer_digest)
        assert [s.headers.get("authorization") for s in front.seen if "/blobs/" in s.path] == [None, BASIC]  # 401, then over TLS
        assert len(plain.seen) == 1 and leaked(plain.seen) == []  # in clear: nothing secret
    finally:
        front.stop()
        plain.stop()


# --------------------------------------------------------------------------- through the CLI


@pytest.fixture
def cli(tmp_path: Path) -> Shipyard:
    """A fresh state root with an empty config and no docker credentials."""
    config = tmp_path / "shipyard.toml"
    config.write_text("")
    return Shipyard(tmp_path / "state", "runc", {"SHIPYARD_CONFIG": str(config), "DOCKER_CONFIG": str(tmp_path / "docker")})


def assert_one_line_error(proc: subprocess.CompletedProcess, starts: str) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and errors[0].startswith(starts), proc.stderr
    return errors[0]


def assert_state_clean(sy: Shipyard, *absent: str) -> None:
    assert json.loads(sy.run("images", "--format", "json").stdout) == []
    store = ContentStore(sy.root / "blobs", sy.root / "tmp", fsync=False)
    assert not list((sy.root / "tmp").glob("blob-*"))
    assert_store_clean(store, *absent)


def test_cli_pull_of_a_swapped_blob_fails_with_one_line_and_stores_nothing(
    proxy: TamperingProxy, image: Pushed, cli: Shipyard
) -> None:
    def swap(seen: Seen, forward: Forward) -> Answer:
        answer = forward()
        return replace(answer, body=flipped(answer.body)) if is_blob_get(seen, image.layer_digest) else answer

    proxy.handle = swap
    proc = cli.run("pull", image.via(proxy.host), check=False)
    line = assert_one_line_error(proc, f"ERROR: blob {image.layer_digest} of {proxy.host}/trust/app")
    assert "digest mismatch" in line and line.endswith("nothing was stored")
    assert_state_clean(cli, image.layer_digest, image.digest)


def test_cli_pull_of_a_blob_longer_than_its_descriptor_fails_and_stores_nothing(
    proxy: TamperingProxy, image: Pushed, cli: Shipyard
) -> None:
    def lengthen(seen: Seen, forward: Forward) -> Answer:
        answer = forward()
        return replace(answer, endless=True) if is_blob_get(seen, image.layer_digest) else answer

    proxy.handle = lengthen
    proc = cli.run("pull", image.via(proxy.host), check=False, timeout=30)
    assert_one_line_error(proc, f"ERROR: fetching blob {image.layer_digest} of {proxy.host}/trust/app: the blob is larger")
    assert_state_clean(cli, image.layer_digest, image.digest)


def test_cli_build_from_an_ambiguous_manifest_fails_with_one_line(
    proxy: TamperingProxy, image: Pushed, cli: Shipyard, tmp_path: Path
) -> None:
    _, document = ambiguous_documents(image)[0]
    proxy.handle = serve_document("v1", document, mediatypes.OCI_INDEX)
    ctx = write(tmp_path / "ctx" / "Dockerfile", f"FROM {image.via(proxy.host)}\nCOPY Dockerfile /\n").parent
    proc, _ = cli.build(ctx, "-t", "victim", check=False)
    line = assert_one_line_error(proc, "ERROR")
    assert f"{proxy.host}/trust/app:v1" in line and "CVE-2021-41190" in line
    assert_state_clean(cli, image.layer_digest, image.digest)


def test_cli_login_and_pull_through_a_cross_origin_redirect(
    private_proxy: TamperingProxy, other: OtherOrigin, private_image: Pushed, cli: Shipyard
) -> None:
    private_proxy.handle = redirect_blobs(other)
    cli.run("login", "-u", "alice", "--password-stdin", private_proxy.host, input=PASSWORD + "\n")
    out = cli.run("pull", private_image.via(private_proxy.host)).stdout
    assert f"Digest: {private_image.digest}" in out
    assert [image["digest"] for image in json.loads(cli.run("images", "--format", "json").stdout)] == [private_image.digest]
    assert sorted(s.path.split("?")[0] for s in other.seen) == sorted(
        f"/blobs/{d}" for d in (private_image.layer_digest, sha(private_image.config))
    )
    assert leaked(other.seen) == []
