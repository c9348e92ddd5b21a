"""A client for the OCI distribution API (Docker Registry HTTP API v2), over httpx.

Public API — other parts of Shipyard (pull, push, the remote build cache) use only this:

    client = RegistryClient(config, credentials, timeout=60.0)    # or RegistryClient.from_environment()
    with client:                                                  # closes its connections
        resolved = client.resolve(ref, platform="linux/amd64")   # -> ResolvedManifest
        doc = client.get_manifest(ref, "v1" or "sha256:…")        # -> ManifestDocument (index or manifest)
        digest = client.head_manifest(ref, "v1")                  # -> str | None: cheap "did the tag move?"
        client.blob_exists(ref, digest)                           # -> bool
        client.fetch_blob(ref, digest, store, size=None, progress=None)          # into a ContentStore
        client.push_blob(ref, digest, size, open_blob, mount_from=None)          # -> "exists"|"mounted"|"uploaded"
        client.put_manifest(ref, manifest_bytes, media_type)      # -> digest the registry stored

`ref` is an `engine.reference.Reference` or a reference string (`"busybox"`,
`"127.0.0.1:5000/team/app:v1"`, parsed and normalized the way docker does); its domain
picks the registry, its path the repository. `get_manifest` / `head_manifest` without
`digest_or_tag` use the reference's digest, else its tag; the blob calls ignore both.

What each call guarantees:
- `resolve` fetches the manifest the reference names (its digest when it has one,
  else its tag, default `latest`), and when that is an index / manifest list picks
  the entry for `platform` and fetches it. `ResolvedManifest.digest` is the image
  manifest's digest, `root_digest` what the tag pointed to (the index, or the same).
- Pull-side calls (`resolve`, `get_manifest`, `head_manifest`, `fetch_blob`) try the
  registry's configured mirrors in order, then the registry itself; a mirror that
  fails (unreachable, 404, corrupt) falls through to the next. The endpoint that
  last served a repository is tried first for its blobs.
- Push-side calls (`blob_exists`, `push_blob`, `put_manifest`) go to the registry
  itself, never to a mirror.
- Every manifest is checked: at most 4 MiB, its hash equal to the digest asked for
  (sha256, sha384 or sha512 — any other algorithm is refused, never skipped) and its
  sha256 to the `Docker-Content-Digest` header, a known media type that agrees with the
  `Content-Type`, never both `manifests` and `layers` (CVE-2021-41190), no schema 1.
- `fetch_blob` streams into `ContentStore.write_with(…, expected=digest)`: a blob
  whose bytes do not hash to its digest is retried once and then refused, and
  nothing is stored. A connection dropped mid-blob resumes with an HTTP Range
  request. `size` (when known) caps the bytes read: a longer blob is refused at
  size+1. `progress(done_bytes, total_or_None)` is called as bytes arrive.
- `push_blob` asks HEAD first and skips blobs the repository has; with `mount_from`
  (another repository path on the same registry) it asks for a cross-repository
  mount; else it uploads — one PUT for blobs up to `monolithic_limit`, chunked PATCHes
  of `chunk_size` for bigger ones. `open_blob()` must return a fresh stream of the
  blob from its start each time: a failed upload is never resumed blindly, the
  session is restarted from scratch with a new stream.
- `put_manifest` PUTs under the reference's tag (or digest) and checks the digest the
  registry answers with.
- Transient failures (connection errors, 429 honouring Retry-After, 500/502/503/504)
  are retried with exponential backoff on idempotent requests.
- Errors are `RegistryError` (`RegistryNotFoundError` for 404, `RegistryAuthError` for
  401/403): one line naming what was asked, of which registry, and the answer.

Credentials go only to the registry's own origin (scheme, host, port): a redirect
(httpx strips them) or an upload Location elsewhere gets none, and a 401 from another
origin is an error, never a challenge answered with the registry's credentials.

Transport rules: a registry on a loopback address, or marked `http = true` in the
config, is spoken to over plain HTTP; `insecure = true` means HTTPS without
certificate checks, falling back to plain HTTP. Authentication is `engine.registry.auth`.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator, TypeVar

from engine.errors import CacheError
from engine.oci import mediatypes
from engine.reference import Reference
from engine.registry.auth import Authenticator, CredentialSource, repository_scope
from engine.registry.config import DOCKER_HUB, DOCKER_HUB_HOST, RegistryConfig, canonical_registry, is_loopback
from engine.registry.errors import RegistryAuthError, RegistryError, RegistryNotFoundError

if TYPE_CHECKING:
    import httpx

    from cache.content_store import ContentStore

DEFAULT_TIMEOUT = 60.0
MAX_MANIFEST_BYTES = 4 << 20
MONOLITHIC_LIMIT = 16 << 20
CHUNK_SIZE = 16 << 20
READ_CHUNK = 1 << 20
RETRIES = 3
BACKOFF = 0.25
MAX_RETRY_AFTER = 60.0
RETRY_STATUSES = frozenset((429, 500, 502, 503, 504))
MANIFEST_TYPES = mediatypes.MANIFEST_TYPES | mediatypes.INDEX_TYPES
MANIFEST_ACCEPT = ", ".join(
    (mediatypes.OCI_INDEX, mediatypes.DOCKER_MANIFEST_LIST, mediatypes.OCI_MANIFEST, mediatypes.DOCKER_MANIFEST)
)
DIGEST_ALGORITHMS = frozenset(("sha256", "sha384", "sha512"))
"""What a manifest asked for by digest may be named by (the OCI image spec's registered algorithms)."""
_SCHEMA1 = frozenset((mediatypes.DOCKER_MANIFEST_V1, mediatypes.DOCKER_MANIFEST_V1_SIGNED))

Progress = Callable[[int, "int | None"], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    """One place a registry's API is served: the registry itself or one of its mirrors."""

    registry: str
    """The name credentials and config are looked up by (`docker.io`, `127.0.0.1:5000`)."""
    host: str
    scheme: str
    prefix: str = ""
    verify: Any = True
    mirror: bool = False
    http_fallback: bool = False

    def __str__(self) -> str:
        return f"{self.host}{self.prefix}"


@dataclass(frozen=True)
class ManifestDocument:
    """A manifest or index as a registry served it, verified."""

    digest: str
    media_type: str
    data: bytes
    source: str
    """The endpoint that served it (a mirror, or the registry)."""

    @property
    def is_index(self) -> bool:
        return self.media_type in mediatypes.INDEX_TYPES


@dataclass(frozen=True)
class ResolvedManifest:
    ref: Reference
    digest: str
    """The image manifest's digest (for the platform asked for)."""
    media_type: str
    data: bytes
    root_digest: str
    """What the tag (or digest) pointed to: an index's digest, or `digest` itself."""
    root_media_type: str
    platform: str
    source: str


class RegistryClient:
    """Talks to registries for one command or build; thread-safe; close it when done."""

    def __init__(
        self,
        config: RegistryConfig | None = None,
        credentials: CredentialSource | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        chunk_size: int = CHUNK_SIZE,
        monolithic_limit: int = MONOLITHIC_LIMIT,
        retries: int = RETRIES,
        backoff: float = BACKOFF,
    ) -> None:
        import httpx

        self._httpx = httpx
        self.config = config or RegistryConfig()
        self.timeout = timeout
        self.chunk_size = max(1, chunk_size)
        self.monolithic_limit = monolithic_limit
        self.retries = retries
        self.backoff = backoff
        self.auth = Authenticator(credentials, self._send_token_request)
        self._clients: dict[Any, httpx.Client] = {}
        self._lock = threading.Lock()
        self._preferred: dict[tuple[str, str], Endpoint] = {}
        self._plain: set[str] = set()
        """Hosts of `insecure` registries that turned out to speak plain HTTP."""

    @classmethod
    def from_environment(cls, *, timeout: float = DEFAULT_TIMEOUT) -> "RegistryClient":
        """A client with the user's config file and docker credentials."""
        from engine.registry.config import load_config
        from engine.registry.credentials import DockerCredentials

        return cls(load_config(), DockerCredentials(), timeout=timeout)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ endpoints

    def endpoints(self, domain: str, *, pull: bool = True) -> list[Endpoint]:
        """Where to ask for `domain`'s content: its mirrors in order (pulls only), then itself."""
        registry = canonical_registry(domain)
        out = []
        if pull:
            for mirror in self.config.mirrors(registry):
                out.append(self._endpoint(canonical_registry(mirror.host), mirror.host, mirror.prefix, mirror.scheme, True))
        out.append(self._endpoint(registry, DOCKER_HUB_HOST if registry == DOCKER_HUB else registry))
        return out

    def _endpoint(self, registry: str, host: str, prefix: str = "", scheme: str = "", mirror: bool = False) -> Endpoint:
        settings = self.config.host(registry)
        if not scheme:
            if settings.http is True or (settings.http is None and is_loopback(host)):
                scheme = "http"
            else:
                scheme = "https"
        verify: Any = True
        if settings.insecure:
            verify = False
        elif settings.ca or settings.keypairs:
            verify = ("tls", settings.ca, tuple((k.cert, k.key) for k in settings.keypairs))
        fallback = scheme == "https" and settings.insecure and settings.http is None
        return Endpoint(registry, host, scheme, prefix, verify, mirror, fallback)

    def _pull_endpoints(self, ref: Reference) -> list[Endpoint]:
        endpoints = self.endpoints(ref.domain, pull=True)
        preferred = self._preferred.get((canonical_registry(ref.domain), ref.path))
        if preferred is not None and preferred in endpoints:
            endpoints.remove(preferred)
            endpoints.insert(0, preferred)
        return endpoints

    def _origin(self, ref: Reference) -> Endpoint:
        return self.endpoints(ref.domain, pull=False)[-1]

    def _try_endpoints(self, ref: Reference, operation: Callable[[Endpoint], T]) -> T:
        endpoints = self._pull_endpoints(ref)
        failures: list[str] = []
        for i, endpoint in enumerate(endpoints):
            try:
                result = operation(endpoint)
            except RegistryError as exc:
                if i + 1 < len(endpoints):
                    failures.append(f"{'mirror ' if endpoint.mirror else ''}{endpoint}: {exc.message}")
                    continue
                if failures:
                    exc.message = f"{exc.message} (after {'; '.join(failures)})"
                    exc.args = (exc.message,)
                raise
            self._preferred[(canonical_registry(ref.domain), ref.path)] = endpoint
            return result
        raise AssertionError("unreachable: there is always the registry itself")

    # ------------------------------------------------------------------ HTTP

    def _http(self, verify: Any) -> "httpx.Client":
        with self._lock:
            client = self._clients.get(verify)
            if client is None:
                httpx = self._httpx
                client = httpx.Client(
                    verify=_ssl_context(verify),
                    timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 15.0)),
                    follow_redirects=True,
                    limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
                    headers={"User-Agent": "shipyard/0.1"},
                )
                self._clients[verify] = client
            return client

    def _url(self, endpoint: Endpoint, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path  # an upload Location the registry handed us
        scheme = "http" if endpoint.host in self._plain else endpoint.scheme
        base = f"{scheme}://{endpoint.host}{endpoint.prefix}"
        if path.startswith("/"):
            return base + path  # a Location relative to the host
        return f"{base}/v2/{path}"

    def _same_origin(self, url: "httpx.URL", endpoint: Endpoint) -> bool:
        """Whether `url` is served by `endpoint` itself (scheme, host and port)."""
        base = self._httpx.URL(self._url(endpoint, "/"))
        default = {"http": 80, "https": 443}
        return (url.scheme, url.host, url.port or default.get(url.scheme)) == (
            base.scheme,
            base.host,
            base.port or default.get(base.scheme),
        )

    def _send_token_request(self, method: str, url: str, **kwargs: Any) -> "httpx.Response":
        client = self._http(True if url.startswith("https://") else False)
        return self._retrying(lambda: client.request(method, url, **kwargs), f"token request to {url.split('?')[0]}", url)

    def _retrying(self, send: Callable[[], "httpx.Response"], what: str, where: str) -> "httpx.Response":
        """Send with retries on transport errors and retryable statuses (idempotent requests only)."""
        attempt = 0
        while True:
            try:
                response = send()
            except self._httpx.TooManyRedirects:
                raise RegistryError(f"{what}: too many redirects from {where}", host=where) from None
            except self._httpx.TransportError as exc:
                if attempt >= self._retries_for(exc):
                    raise RegistryError(f"{what}: cannot reach {where}: {_reason(exc)}", host=where) from None
                self._sleep(attempt, None)
                attempt += 1
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                retry_after = _retry_after(response)
                response.close()
                self._sleep(attempt, retry_after)
                attempt += 1
                continue
            return response

    def _retries_for(self, exc: Exception) -> int:
        """A refused or unresolvable connection gets one more try; a dropped one gets all of them."""
        return min(1, self.retries) if isinstance(exc, self._httpx.ConnectError) else self.retries

    def _sleep(self, attempt: int, retry_after: float | None) -> None:
        delay = retry_after if retry_after is not None else self.backoff * (2**attempt)
        time.sleep(min(delay, MAX_RETRY_AFTER))

    def _request(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        *,
        what: str,
        scopes: tuple[str, ...],
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        content: bytes | Iterator[bytes] | None = None,
        stream: bool = False,
        retry: bool = True,
    ) -> "httpx.Response":
        """One API request, authenticated (answering one 401 challenge), retried when `retry`."""
        client = self._http(endpoint.verify)
        challenged = False
        attempt = 0
        while True:
            request_headers = dict(headers or {})
            # params are merged into the URL: an upload Location carries its own query (`_state=…`)
            url = self._httpx.URL(self._url(endpoint, path))
            if params:
                url = url.copy_merge_params(params)
            authorization = self.auth.authorization(endpoint.registry, scopes)
            if authorization and self._same_origin(url, endpoint):
                # An upload Location naming another host gets no credentials (containerd's
                # rule: they belong to the registry's origin); httpx strips them from
                # cross-origin redirects the same way.
                request_headers["Authorization"] = authorization
            request = client.build_request(method, url, headers=request_headers, content=content)
            try:
                response = client.send(request, stream=stream)
            except self._httpx.TooManyRedirects:  # not a TransportError: a loop is no reason to retry
                raise RegistryError(f"{what}: too many redirects from {endpoint}", host=str(endpoint)) from None
            except self._httpx.StreamConsumed:  # a redirect of an upload whose body was already sent
                raise RegistryError(f"{what}: {endpoint} redirected an upload, which cannot be replayed", host=str(endpoint)) from None
            except self._httpx.TransportError as exc:
                if endpoint.http_fallback and endpoint.host not in self._plain and _tls_problem(exc):
                    self._plain.add(endpoint.host)
                    continue
                if not retry or attempt >= self._retries_for(exc):
                    raise RegistryError(f"{what}: cannot reach {endpoint}: {_reason(exc)}", host=str(endpoint)) from None
                self._sleep(attempt, None)
                attempt += 1
                continue
            if response.status_code == 401 and not self._same_origin(response.url, endpoint):
                # A redirect target or upload Location on another origin asked for credentials:
                # answering its challenge (a token realm of its choosing) would hand them over.
                response.close()
                raise RegistryAuthError(
                    f"{what}: 401 from {response.url.netloc.decode('ascii')}, not {endpoint} (another origin gets no credentials)",
                    status=401,
                    host=str(endpoint),
                )
            if response.status_code == 401 and not challenged and (content is None or isinstance(content, bytes)):
                header = response.headers.get("www-authenticate", "")
                response.close()
                if not header:
                    raise RegistryAuthError(f"{what}: 401 unauthorized from {endpoint}", status=401, host=str(endpoint))
                self.auth.challenged(endpoint.registry, header, scopes)
                challenged = True
                continue
            if retry and response.status_code in RETRY_STATUSES and attempt < self.retries:
                retry_after = _retry_after(response)
                response.close()
                self._sleep(attempt, retry_after)
                attempt += 1
                continue
            return response

    def _error(self, response: "httpx.Response", what: str, endpoint: Endpoint) -> RegistryError:
        """The one-line error for an unexpected answer (reads and closes the response)."""
        try:
            body = response.read()[:65536]
        except self._httpx.HTTPError:
            body = b""
        finally:
            response.close()
        code, message = _error_detail(body)
        status = response.status_code
        detail = message or response.reason_phrase or "error"
        text = f"{what}: {status} {detail} from {endpoint}"
        cls = RegistryNotFoundError if status == 404 else RegistryAuthError if status in (401, 403) else RegistryError
        return cls(text, status=status, host=str(endpoint), code=code)

    # ------------------------------------------------------------------ manifests

    def resolve(self, ref: Reference | str, platform: str = "linux/amd64") -> ResolvedManifest:
        ref = as_reference(ref)
        target = ref.digest or ref.tag or "latest"

        def operation(endpoint: Endpoint) -> ResolvedManifest:
            root = self._get_manifest_at(endpoint, ref, target)
            document = root
            for _ in range(4):
                if not document.is_index:
                    break
                from engine.oci.image import Index

                child = select_platform(Index.from_json(document.data), platform, f"{ref}")
                document = self._get_manifest_at(endpoint, ref, child.digest)
                if child.media_type in MANIFEST_TYPES and child.media_type != document.media_type:
                    raise RegistryError(
                        f"{ref}: the index says {child.digest} is {child.media_type}, the registry served {document.media_type}",
                        host=str(endpoint),
                    )
            if document.is_index:
                raise RegistryError(f"{ref}: indexes nested too deeply", host=str(endpoint))
            return ResolvedManifest(
                ref, document.digest, document.media_type, document.data, root.digest, root.media_type, platform, document.source
            )

        return self._try_endpoints(ref, operation)

    def get_manifest(self, ref: Reference | str, digest_or_tag: str = "") -> ManifestDocument:
        """The manifest or index stored under a tag or digest (no platform selection)."""
        ref = as_reference(ref)
        digest_or_tag = digest_or_tag or ref.digest or ref.tag or "latest"
        return self._try_endpoints(ref, lambda endpoint: self._get_manifest_at(endpoint, ref, digest_or_tag))

    def head_manifest(self, ref: Reference | str, digest_or_tag: str = "") -> str | None:
        """The digest a tag points to now, by HEAD (GET when the registry gives no digest); None if absent."""
        ref = as_reference(ref)
        digest_or_tag = digest_or_tag or ref.digest or ref.tag or "latest"

        def operation(endpoint: Endpoint) -> str | None:
            what = f"checking {ref.repository}:{digest_or_tag}"
            response = self._request(
                endpoint, "HEAD", f"{ref.path}/manifests/{digest_or_tag}", what=what,
                scopes=(repository_scope(ref.path, "pull"),), headers={"Accept": MANIFEST_ACCEPT},
            )
            response.close()
            if response.status_code == 404 and not endpoint.mirror:
                return None
            if response.status_code != 200:
                raise self._error(response, what, endpoint)
            digest = response.headers.get("docker-content-digest", "")
            if digest.startswith("sha256:") and len(digest) == 71:
                return digest
            return self._get_manifest_at(endpoint, ref, digest_or_tag).digest

        return self._try_endpoints(ref, operation)

    def _get_manifest_at(self, endpoint: Endpoint, ref: Reference, digest_or_tag: str) -> ManifestDocument:
        algorithm, by_digest, _ = digest_or_tag.partition(":")  # a tag never has a colon
        what = f"fetching manifest {ref.repository}{'@' if by_digest else ':'}{digest_or_tag}"
        if by_digest and algorithm not in DIGEST_ALGORITHMS:
            # an index may name a child by any algorithm: one we cannot check must not pass unchecked
            raise RegistryError(f"{what}: unsupported digest algorithm {algorithm!r}", host=str(endpoint))
        response = self._request(
            endpoint, "GET", f"{ref.path}/manifests/{digest_or_tag}", what=what,
            scopes=(repository_scope(ref.path, "pull"),), headers={"Accept": MANIFEST_ACCEPT}, stream=True,
        )
        if response.status_code != 200:
            raise self._error(response, what, endpoint)
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_MANIFEST_BYTES:
                    raise RegistryError(f"{what}: larger than {MAX_MANIFEST_BYTES >> 20} MiB, refused", host=str(endpoint))
        except self._httpx.TransportError as exc:
            raise RegistryError(f"{what}: connection lost: {_reason(exc)}", host=str(endpoint)) from None
        except self._httpx.DecodingError as exc:  # a Content-Encoding whose bytes do not decode
            encoding = response.headers.get("content-encoding", "")
            raise RegistryError(f"{what}: undecodable {encoding} body from {endpoint}: {_reason(exc)}", host=str(endpoint)) from None
        finally:
            response.close()
        data = bytes(body)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if by_digest:
            sent = digest if algorithm == "sha256" else f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest()
            if sent != digest_or_tag:
                raise RegistryError(f"{what}: digest mismatch: the registry sent {sent}", host=str(endpoint))
        header = response.headers.get("docker-content-digest", "")
        if header.startswith("sha256:") and header != digest:
            raise RegistryError(f"{what}: Docker-Content-Digest {header} does not match the body ({digest})", host=str(endpoint))
        media_type = manifest_media_type(data, response.headers.get("content-type", ""), what)
        return ManifestDocument(digest, media_type, data, str(endpoint))

    def put_manifest(self, ref: Reference | str, manifest_bytes: bytes, media_type: str) -> str:
        ref = as_reference(ref)
        digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        if ref.digest and ref.digest != digest:
            raise RegistryError(f"pushing manifest {ref}: its bytes are {digest}, not {ref.digest}")
        target = ref.tag or ref.digest or "latest"
        endpoint = self._origin(ref)
        what = f"pushing manifest {ref.repository}:{target}"
        response = self._request(
            endpoint, "PUT", f"{ref.path}/manifests/{target}", what=what,
            scopes=(repository_scope(ref.path, "pull", "push"),), headers={"Content-Type": media_type},
            content=manifest_bytes,
        )
        if response.status_code not in (200, 201):
            raise self._error(response, what, endpoint)
        response.close()
        answered = response.headers.get("docker-content-digest", "")
        if answered.startswith("sha256:") and answered != digest:
            raise RegistryError(f"{what}: the registry stored {answered}, we sent {digest}", host=str(endpoint))
        return digest

    # ------------------------------------------------------------------ blobs

    def blob_exists(self, ref: Reference | str, digest: str) -> bool:
        ref = as_reference(ref)
        endpoint = self._origin(ref)
        return self._blob_exists(endpoint, ref, digest, (repository_scope(ref.path, "pull"),))

    def _blob_exists(self, endpoint: Endpoint, ref: Reference, digest: str, scopes: tuple[str, ...]) -> bool:
        what = f"checking blob {digest} in {ref.repository}"
        response = self._request(endpoint, "HEAD", f"{ref.path}/blobs/{digest}", what=what, scopes=scopes)
        response.close()
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._error(response, what, endpoint)

    def fetch_blob(
        self,
        ref: Reference | str,
        digest: str,
        store: "ContentStore",
        size: int | None = None,
        progress: Progress | None = None,
    ) -> None:
        ref = as_reference(ref)
        if store.has(digest):
            if progress is not None:
                progress(size or 0, size)
            return
        self._try_endpoints(ref, lambda endpoint: self._download(endpoint, ref, digest, store, size, progress))

    def _download(
        self, endpoint: Endpoint, ref: Reference, digest: str, store: "ContentStore", size: int | None, progress: Progress | None
    ) -> None:
        for attempt in range(3):
            try:
                store.write_with(lambda out: self._stream_blob(endpoint, ref, digest, out, size, progress), expected=digest)
                return
            except _RangeIgnored:
                continue  # the server restarted from byte 0: start a fresh temp file
            except CacheError as exc:
                if "digest mismatch" not in str(exc):
                    raise
                if attempt == 0:
                    continue  # once more from scratch, then refuse
                got = str(exc).rsplit(" ", 1)[-1]
                raise RegistryError(
                    f"blob {digest} of {ref.repository} from {endpoint}: digest mismatch (its bytes are {got}); nothing was stored",
                    host=str(endpoint),
                ) from None
        raise RegistryError(f"blob {digest} of {ref.repository} from {endpoint}: download kept restarting", host=str(endpoint))

    def _stream_blob(
        self, endpoint: Endpoint, ref: Reference, digest: str, out: BinaryIO, size: int | None, progress: Progress | None
    ) -> None:
        what = f"fetching blob {digest} of {ref.repository}"
        scopes = (repository_scope(ref.path, "pull"),)
        received = 0
        drops = 0
        while True:
            headers = {"Accept-Encoding": "identity"}
            if received:
                headers["Range"] = f"bytes={received}-"
            response = self._request(endpoint, "GET", f"{ref.path}/blobs/{digest}", what=what, scopes=scopes, headers=headers, stream=True)
            if response.status_code not in (200, 206):
                raise self._error(response, what, endpoint)
            try:
                if received and response.status_code != 206:
                    raise _RangeIgnored()
                if response.status_code == 206 and not response.headers.get("content-range", "").startswith(f"bytes {received}-"):
                    raise _RangeIgnored()
                for chunk in response.iter_raw():  # as it arrives: a drop loses nothing already received
                    if size is not None and received + len(chunk) > size:
                        raise RegistryError(f"{what}: the blob is larger than its descriptor's {size} bytes", host=str(endpoint))
                    out.write(chunk)
                    received += len(chunk)
                    if progress is not None:
                        progress(received, size)
            except self._httpx.TransportError as exc:
                drops += 1
                if drops > self.retries:
                    raise RegistryError(f"{what}: connection lost after {received} bytes: {_reason(exc)}", host=str(endpoint)) from None
                self._sleep(drops - 1, None)
                continue  # resume where it stopped
            finally:
                response.close()
            if size is not None and received < size:  # a complete response, yet short: not a dropped connection
                raise RegistryError(f"{what}: the blob ended after {received} of its descriptor's {size} bytes", host=str(endpoint))
            return

    def push_blob(
        self,
        ref: Reference | str,
        digest: str,
        size: int,
        open_blob: Callable[[], BinaryIO],
        mount_from: str | None = None,
    ) -> str:
        ref = as_reference(ref)
        endpoint = self._origin(ref)
        scopes = [repository_scope(ref.path, "pull", "push")]
        if mount_from and mount_from != ref.path:
            scopes.append(repository_scope(mount_from, "pull"))
        else:
            mount_from = None
        scope_tuple = tuple(scopes)
        if self._blob_exists(endpoint, ref, digest, scope_tuple):
            return "exists"
        attempt = 0
        while True:
            try:
                return self._upload(endpoint, ref, digest, size, open_blob, mount_from, scope_tuple)
            except RegistryError as exc:
                # 401 once: a token that expired during a long upload is renewed by the next session
                transient = exc.status is None or exc.status in RETRY_STATUSES or (exc.status == 401 and attempt == 0)
                if not transient or attempt >= self.retries:
                    raise
            self._sleep(attempt, None)
            attempt += 1
            if self._blob_exists(endpoint, ref, digest, scope_tuple):
                return "exists"  # the failed attempt got through after all

    def _upload(
        self,
        endpoint: Endpoint,
        ref: Reference,
        digest: str,
        size: int,
        open_blob: Callable[[], BinaryIO],
        mount_from: str | None,
        scopes: tuple[str, ...],
    ) -> str:
        """One upload session, from start to end; any failure abandons it (the caller starts anew)."""
        what = f"pushing blob {digest} to {ref.repository}"
        start = f"{ref.path}/blobs/uploads/"
        params = {"mount": digest, "from": mount_from} if mount_from else None
        response = self._request(endpoint, "POST", start, what=what, scopes=scopes, params=params)
        if mount_from and response.status_code == 201:
            response.close()
            return "mounted"
        if response.status_code != 202:
            raise self._error(response, what, endpoint)
        response.close()
        location = _location(response)
        if size <= self.monolithic_limit:
            with open_blob() as stream:
                response = self._request(
                    endpoint, "PUT", location, what=what, scopes=scopes,
                    params={"digest": digest},
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                    content=_chunks(stream), retry=False,
                )
        else:
            with open_blob() as stream:
                offset = 0
                while True:
                    chunk = _read_exactly(stream, self.chunk_size)
                    if not chunk:
                        break
                    response = self._request(
                        endpoint, "PATCH", location, what=what, scopes=scopes,
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Length": str(len(chunk)),
                            "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                        },
                        content=iter((chunk,)), retry=False,
                    )
                    if response.status_code != 202:
                        raise self._error(response, what, endpoint)
                    response.close()
                    location = _location(response)
                    offset += len(chunk)
            response = self._request(
                endpoint, "PUT", location, what=what, scopes=scopes, params={"digest": digest},
                headers={"Content-Length": "0"}, content=iter(()), retry=False,
            )
        if response.status_code != 201:
            raise self._error(response, what, endpoint)
        response.close()
        answered = response.headers.get("docker-content-digest", "")
        if answered.startswith("sha256:") and answered != digest:
            raise RegistryError(f"{what}: the registry stored {answered}", status=response.status_code, host=str(endpoint))
        return "uploaded"

    # ------------------------------------------------------------------ login

    def check_login(self, registry: str) -> None:
        """Ask the registry's /v2/ with our credentials; raises RegistryAuthError when refused."""
        endpoint = self.endpoints(registry, pull=False)[-1]
        what = f"logging in to {registry}"
        response = self._request(endpoint, "GET", "", what=what, scopes=())
        if response.status_code != 200:
            raise self._error(response, what, endpoint)
        response.close()


def as_reference(ref: Reference | str) -> Reference:
    if isinstance(ref, Reference):
        return ref
    from engine.reference import parse_reference

    return parse_reference(ref)


class _RangeIgnored(Exception):
    """The server answered a Range request with the whole blob: restart the download cleanly."""


def select_platform(index: Any, platform: str, what: str = "") -> Any:
    """The index entry for `os/arch[/variant]` (BuildKit's matcher, simplified)."""
    os_name, arch, variant = _split_platform(platform)
    exact, loose = [], []
    for descriptor in index.manifests:
        p = descriptor.platform
        if p is None:
            if len(index.manifests) == 1:
                loose.append(descriptor)
            continue
        p_os, p_arch, p_variant = _split_platform(f"{p.os}/{p.architecture}/{p.variant}")
        if p_os != os_name or p_arch != arch:
            continue
        if p_variant == variant:
            exact.append(descriptor)
        elif not p_variant or not variant:
            loose.append(descriptor)
    for candidates in (exact, loose):
        if candidates:
            return candidates[0]
    available = sorted({str(d.platform) for d in index.manifests if d.platform is not None and d.platform.os != "unknown"})
    raise RegistryNotFoundError(f"{what}: no image for {platform} (the index has {', '.join(available) or 'none'})")


def _split_platform(text: str) -> tuple[str, str, str]:
    parts = [p for p in text.lower().split("/")]
    os_name = parts[0] if parts else "linux"
    arch = parts[1] if len(parts) > 1 else "amd64"
    variant = parts[2] if len(parts) > 2 else ""
    arch = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm"}.get(arch, arch)
    if arch == "arm64" and variant == "v8":
        variant = ""
    return os_name, arch, variant


def manifest_media_type(data: bytes, content_type: str, what: str) -> str:
    """The media type of a manifest document, refusing anything ambiguous or unsupported."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise RegistryError(f"{what}: the manifest is not JSON") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{what}: the manifest is not a JSON object")
    header_type = content_type.split(";", 1)[0].strip().lower()
    if doc.get("schemaVersion") == 1 or header_type in _SCHEMA1:
        raise RegistryError(f"{what}: Docker schema 1 manifests are not supported (re-push the image with a current client)")
    has_index = "manifests" in doc
    has_image = "layers" in doc or "config" in doc
    if has_index and has_image:
        raise RegistryError(f"{what}: ambiguous document with both manifests and layers (refused, CVE-2021-41190)")
    body_type = doc.get("mediaType") or ""
    if not isinstance(body_type, str):
        raise RegistryError(f"{what}: mediaType is not a string")
    if body_type and header_type in MANIFEST_TYPES and header_type != body_type:
        raise RegistryError(f"{what}: served as {header_type} but the document says {body_type}")
    media_type = body_type or (header_type if header_type in MANIFEST_TYPES else "")
    if not media_type:
        if has_index:
            media_type = mediatypes.OCI_INDEX
        elif has_image:
            config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
            is_docker = config.get("mediaType") == mediatypes.DOCKER_CONFIG
            media_type = mediatypes.DOCKER_MANIFEST if is_docker else mediatypes.OCI_MANIFEST
    if media_type not in MANIFEST_TYPES:
        raise RegistryError(f"{what}: unsupported manifest type {media_type or '(none)'!r}")
    if (media_type in mediatypes.INDEX_TYPES) != has_index:
        raise RegistryError(f"{what}: the document's fields contradict its type {media_type}")
    return media_type


def _ssl_context(verify: Any) -> Any:
    if not isinstance(verify, tuple):
        return verify
    import ssl

    _, cas, pairs = verify
    context = ssl.create_default_context()
    for ca in cas:
        context.load_verify_locations(cafile=ca)
    for cert, key in pairs:
        context.load_cert_chain(cert, key)
    return context


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(READ_CHUNK):
        yield chunk


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    parts = bytearray()
    while len(parts) < size:
        data = stream.read(size - len(parts))
        if not data:
            break
        parts += data
    return bytes(parts)


def _location(response: "httpx.Response") -> str:
    location = response.headers.get("location", "")
    if not location:
        raise RegistryError(f"{response.request.method} {response.request.url.path}: the registry gave no upload Location")
    if location.startswith(("http://", "https://", "/")):
        return location
    return str(response.request.url.join(location))


def _retry_after(response: "httpx.Response") -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_detail(body: bytes) -> tuple[str, str]:
    """(code, message) of the first error in a distribution error body."""
    try:
        doc = json.loads(body)
        first = doc["errors"][0]
        return str(first.get("code", "")), str(first.get("message", "")).strip() or str(first.get("code", "")).lower()
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return "", ""


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _tls_problem(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("ssl", "tls", "certificate", "wrong version number", "handshake"))
