"""Registry authentication: WWW-Authenticate challenges, bearer tokens per scope, basic auth.

The distribution protocol's dance: a request answered 401 names a scheme. `Basic`
means resend with the user's password. `Bearer realm=…,service=…,scope=…` means ask
the token server at `realm` for a token covering the scopes (with the user's
password as basic auth, or by trading an identity token, or anonymously), then
resend with `Authorization: Bearer <token>`. Tokens are cached per (registry,
scope set) until shortly before they expire, and once a registry has challenged
us, later requests fetch their token up front instead of taking another 401.

Tokens and passwords are never logged and never put into error messages.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Protocol

from engine.registry.credentials import Credential
from engine.registry.errors import RegistryAuthError, RegistryError

if TYPE_CHECKING:
    import httpx

EXPIRY_MARGIN = 10.0
DEFAULT_TOKEN_LIFETIME = 60.0
CLIENT_ID = "shipyard"


class CredentialSource(Protocol):
    def get(self, registry: str) -> Credential | None: ...


@dataclass(frozen=True)
class Challenge:
    scheme: str
    """Lower-cased: `bearer` or `basic` (others are reported as unsupported)."""
    params: tuple[tuple[str, str], ...] = ()

    def param(self, key: str) -> str:
        for name, value in self.params:
            if name == key:
                return value
        return ""


def parse_www_authenticate(header: str) -> list[Challenge]:
    """All challenges in a WWW-Authenticate value (RFC 7235: `Scheme k=v, k="v", Scheme2 …`)."""
    challenges: list[Challenge] = []
    scheme = ""
    params: list[tuple[str, str]] = []
    i, n = 0, len(header)

    def skip(chars: str) -> None:
        nonlocal i
        while i < n and header[i] in chars:
            i += 1

    while i < n:
        skip(" \t,")
        start = i
        while i < n and header[i] not in " \t,=":
            i += 1
        token = header[start:i]
        if not token:
            break
        skip(" \t")
        if i < n and header[i] == "=" and scheme:
            i += 1
            skip(" \t")
            if i < n and header[i] == '"':
                i += 1
                value = []
                while i < n and header[i] != '"':
                    if header[i] == "\\" and i + 1 < n:
                        i += 1
                    value.append(header[i])
                    i += 1
                i += 1
                params.append((token.lower(), "".join(value)))
            else:
                start = i
                while i < n and header[i] not in " \t,":
                    i += 1
                params.append((token.lower(), header[start:i]))
        else:
            if scheme:
                challenges.append(Challenge(scheme, tuple(params)))
            scheme, params = token.lower(), []
    if scheme:
        challenges.append(Challenge(scheme, tuple(params)))
    return challenges


@dataclass(frozen=True)
class _Token:
    value: str
    expires: float


Send = Callable[..., "httpx.Response"]
"""`send(method, url, headers=…, params=…, data=…)`: how the client performs a token request."""


class Authenticator:
    """Authorization headers for registry requests, shared by every thread of one client."""

    def __init__(self, credentials: CredentialSource | None, send: Send) -> None:
        self._credentials = credentials
        self._send = send
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, frozenset[str]], _Token] = {}
        self._creds: dict[str, Credential | None] = {}
        self.token_requests = 0
        """How many tokens were fetched (tests check the cache with it)."""

    def credential(self, registry: str) -> Credential | None:
        with self._lock:
            if registry in self._creds:
                return self._creds[registry]
        found = self._credentials.get(registry) if self._credentials is not None else None
        with self._lock:
            self._creds[registry] = found
        return found

    def authorization(self, registry: str, scopes: Iterable[str]) -> str | None:
        """The header for a request, if this registry is known to want one (else None: try anonymously)."""
        with self._lock:
            challenge = self._challenges.get(registry)
        if challenge is None:
            return None
        return self._answer(registry, challenge, frozenset(scopes))

    def challenged(self, registry: str, header: str, scopes: Iterable[str]) -> str:
        """A 401 arrived with `header`: remember the challenge and return the header to retry with."""
        chosen = None
        for challenge in parse_www_authenticate(header):
            if challenge.scheme in ("bearer", "basic"):
                chosen = challenge
                break
        if chosen is None:
            raise RegistryAuthError(
                f"{registry} asks for unsupported authentication {header.split(' ', 1)[0]!r}", status=401, host=registry
            )
        asked = frozenset(scopes)
        wanted = set(asked)
        if chosen.scheme == "bearer" and chosen.param("scope"):
            wanted.update(chosen.param("scope").split(" "))
        with self._lock:
            self._challenges[registry] = chosen
            for key in ((registry, asked), (registry, frozenset(wanted))):
                self._tokens.pop(key, None)  # a token we sent was just refused
        header = self._answer(registry, chosen, frozenset(wanted))
        if chosen.scheme == "bearer":
            with self._lock:  # the same request's scopes find this token next time
                self._tokens[(registry, asked)] = self._tokens[(registry, frozenset(wanted))]
        return header

    def _answer(self, registry: str, challenge: Challenge, scopes: frozenset[str]) -> str:
        if challenge.scheme == "basic":
            credential = self.credential(registry)
            if credential is None or not (credential.username or credential.password):
                raise RegistryAuthError(
                    f"{registry} requires a login (run `shipyard login {registry}`)", status=401, host=registry
                )
            raw = f"{credential.username}:{credential.password}".encode()
            return "Basic " + base64.b64encode(raw).decode("ascii")
        key = (registry, scopes)
        with self._lock:
            token = self._tokens.get(key)
        if token is not None and token.expires > time.time():
            return "Bearer " + token.value
        with self._fetch_lock:
            with self._lock:
                token = self._tokens.get(key)
            if token is None or token.expires <= time.time():
                token = self._fetch_token(registry, challenge, scopes)
                with self._lock:
                    self._tokens[key] = token
        return "Bearer " + token.value

    def fetch_token(self, registry: str, challenge: Challenge, scopes: Iterable[str] = ()) -> str:
        """A fresh token (used by login to check a password against the token server)."""
        return self._fetch_token(registry, challenge, frozenset(scopes)).value

    def _fetch_token(self, registry: str, challenge: Challenge, scopes: frozenset[str]) -> _Token:
        realm = challenge.param("realm")
        if not realm.startswith(("https://", "http://")):
            raise RegistryAuthError(f"{registry}: bearer challenge without a usable realm", status=401, host=registry)
        service = challenge.param("service")
        credential = self.credential(registry)
        ordered = sorted(scopes)
        self.token_requests += 1
        if credential is not None and credential.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": credential.identity_token, "client_id": CLIENT_ID}
            if service:
                form["service"] = service
            if ordered:
                form["scope"] = " ".join(ordered)
            response = self._send("POST", realm, data=form)
        else:
            params: list[tuple[str, str]] = []
            if service:
                params.append(("service", service))
            params.extend(("scope", scope) for scope in ordered)
            headers = {}
            if credential is not None and (credential.username or credential.password):
                raw = f"{credential.username}:{credential.password}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
                params.append(("account", credential.username))
            response = self._send("GET", realm, params=params, headers=headers)
        if response.status_code in (401, 403):
            who = "the stored credentials" if credential is not None else "anonymous access"
            raise RegistryAuthError(
                f"token server {_host(realm)} refused {who} for {registry} ({response.status_code})",
                status=response.status_code,
                host=registry,
            )
        if response.status_code != 200:
            raise RegistryError(
                f"token server {_host(realm)} answered {response.status_code} for {registry}",
                status=response.status_code,
                host=registry,
            )
        try:
            body = response.json()
            value = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            value, lifetime = None, 0.0
        if not isinstance(value, str) or not value:
            raise RegistryError(f"token server {_host(realm)} sent no token for {registry}", status=200, host=registry)
        lifetime = max(lifetime, DEFAULT_TOKEN_LIFETIME)
        return _Token(value, time.time() + lifetime - EXPIRY_MARGIN)


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def repository_scope(repository: str, *actions: str) -> str:
    """`repository:library/busybox:pull` — the scope a request on a repository needs."""
    return f"repository:{repository}:{','.join(actions or ('pull',))}"
