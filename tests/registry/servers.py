"""Real servers for registry tests, all on 127.0.0.1 with free ports.

- `start_registry`: Debian's `docker-registry` (distribution 2.8) with a temp storage
  dir — plain, with htpasswd basic auth, or with token auth.
- `TokenServer`: a bearer-token server (the Docker token protocol) in front of a
  registry configured with `auth.token`: it signs RS256 JWTs with a key and
  self-signed certificate the test makes with `openssl`, which the registry trusts
  through `rootcertbundle`.
- `FaultProxy`: a TCP proxy that reads the HTTP requests going through and can drop
  a connection in the middle of a blob download or upload, answer 429 once, or stall
  an upload (so a test can kill the client half-way).

Importable by any test (`from tests.registry.servers import …`).
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Registry:
    host: str
    root: Path
    log: Path
    proc: subprocess.Popen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def requests(self) -> list[str]:
        """`METHOD PATH STATUS` for every request in the access log so far."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            m = re.search(r'"(GET|HEAD|PUT|PATCH|POST|DELETE) (\S+) HTTP/[\d.]+" (\d+)', line)
            if m:
                out.append(f"{m.group(1)} {m.group(2)} {m.group(3)}")
        return out

    def blob_data(self, digest: str) -> Path:
        hexpart = digest.split(":", 1)[1]
        return self.root / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexpart[:2] / hexpart / "data"


def start_registry(workdir: Path, *, auth: dict | None = None) -> Registry:
    """A distribution registry on a free loopback port (JSON is YAML, so the config is JSON)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    root = workdir / "storage"
    config = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "shipyard-test-secret"},
    }
    if auth:
        config["auth"] = auth
    (workdir / "config.yml").write_text(json.dumps(config))
    log = workdir / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(workdir / "config.yml")], stdout=out, stderr=subprocess.STDOUT)
    registry = Registry(f"127.0.0.1:{port}", root, log, proc)
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return registry
        except OSError:
            time.sleep(0.05)
    registry.stop()
    raise RuntimeError("docker-registry did not start")


def htpasswd_auth(workdir: Path, users: dict[str, str]) -> dict:
    import bcrypt

    path = workdir / "htpasswd"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}" for user, pw in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return {"htpasswd": {"realm": "shipyard-test", "path": str(path)}}


# --------------------------------------------------------------------------- token server


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenServer:
    """Issues registry tokens: users by password (basic auth) or refresh token; anonymous pulls of `public/*`."""

    SERVICE = "shipyard-test-registry"
    ISSUER = "shipyard-test-issuer"

    def __init__(self, workdir: Path, users: dict[str, str], refresh_tokens: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.key = workdir / "token.key"
        self.cert = workdir / "token.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key), "-out", str(self.cert),
             "-days", "2", "-subj", "/CN=shipyard-test-token-issuer"],
            check=True, capture_output=True,
        )
        pem = self.cert.read_text()
        self.x5c = "".join(pem.split("-----")[2].split())
        self.users = users
        self.refresh_tokens = refresh_tokens or {}
        self.requests: list[dict] = []
        self.issued: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                url = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(url.query)
                user = server._basic_user(self.headers.get("Authorization", ""))
                server.requests.append({"method": "GET", "scopes": query.get("scope", []), "user": user})
                if user is False:
                    self._answer(401, {"details": "bad credentials"})
                    return
                self._answer(200, server._grant(user or "", query.get("scope", []), query.get("service", [""])[0]))

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                user = server.refresh_tokens.get(form.get("refresh_token", [""])[0])
                scopes = form.get("scope", [""])[0].split()
                server.requests.append({"method": "POST", "scopes": scopes, "user": user})
                if form.get("grant_type", [""])[0] != "refresh_token" or user is None:
                    self._answer(401, {"error": "invalid_grant"})
                    return
                body = server._grant(user, scopes, form.get("service", [""])[0])
                self._answer(200, {"access_token": body["token"], "expires_in": 300})

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def registry_auth(self) -> dict:
        return {"token": {"realm": self.realm, "service": self.SERVICE, "issuer": self.ISSUER, "rootcertbundle": str(self.cert)}}

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _basic_user(self, header: str) -> str | None | bool:
        """The user name, None for anonymous, False for wrong credentials."""
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if self.users.get(user) == password else False

    def _grant(self, user: str, scopes: list[str], service: str) -> dict:
        access = []
        for scope in scopes:
            for one in scope.split(" "):
                kind, _, rest = one.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind != "repository" or not name:
                    continue
                wanted = actions.split(",")
                allowed = wanted if user else [a for a in wanted if a == "pull" and name.startswith("public/")]
                if allowed:
                    access.append({"type": "repository", "name": name, "actions": allowed})
        now = int(time.time())
        claims = {"iss": self.ISSUER, "sub": user, "aud": service, "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": os.urandom(8).hex(), "access": access}
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(), capture_output=True, check=True
        ).stdout
        token = f"{signing_input}.{_b64url(signature)}"
        self.issued.append(token)
        return {"token": token, "expires_in": 300}


# --------------------------------------------------------------------------- fault proxy


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)


class FaultProxy:
    """A TCP proxy to `upstream` that sees each HTTP request and can break one on purpose.

    Knobs (each fires once): `drop_download_after` bytes of a blob GET response, then
    close; `drop_upload_after` body bytes of an upload PATCH/PUT, then close;
    `answer_429` — answer the first request with 429 and `Retry-After: 1`;
    `stall_upload_after` — stop forwarding an upload after that many body bytes and
    set `stalled` (the connection stays open until the proxy stops).
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.seen: list[SeenRequest] = []
        self.drop_download_after: int | None = None
        self.drop_upload_after: int | None = None
        self.stall_upload_after: int | None = None
        self.answer_429 = False
        self.fired: list[str] = []
        self.stalled = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(32)
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                _close(sock)

    def _fire(self, name: str) -> bool:
        with self._lock:
            if name in self.fired:
                return False
            self.fired.append(name)
            return True

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets += [client, upstream]
            state = {"request": None, "response_bytes": 0}
            threading.Thread(target=self._requests, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._responses, args=(client, upstream, state), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, state: dict) -> None:
        pending = bytearray()
        body_left = 0
        body_done = 0
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                pending += data
                out = bytearray()
                while pending:
                    if body_left:
                        take = min(body_left, len(pending))
                        request = state["request"]
                        upload = request is not None and request.method in ("PATCH", "PUT") and "/blobs/uploads/" in request.path
                        if upload and self.stall_upload_after is not None and body_done + take > self.stall_upload_after and self._fire("stall"):
                            upstream.sendall(bytes(out + pending[: max(0, self.stall_upload_after - body_done)]))
                            self.stalled.set()
                            self._stop.wait()
                            return
                        if upload and self.drop_upload_after is not None and body_done + take > self.drop_upload_after and self._fire("drop_upload"):
                            upstream.sendall(bytes(out + pending[: max(0, self.drop_upload_after - body_done)]))
                            return
                        out += pending[:take]
                        del pending[:take]
                        body_left -= take
                        body_done += take
                        continue
                    end = pending.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    head = bytes(pending[: end + 4])
                    lines = head.decode("latin-1").split("\r\n")
                    method, path, _ = (lines[0].split(" ") + ["", "", ""])[:3]
                    headers = {}
                    for line in lines[1:]:
                        if ":" in line:
                            k, v = line.split(":", 1)
                            headers[k.strip().lower()] = v.strip()
                    request = SeenRequest(method, path, headers)
                    self.seen.append(request)
                    if self.answer_429 and self._fire("429"):
                        client.sendall(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        return
                    state["request"] = request
                    state["response_bytes"] = 0
                    body_left = int(headers.get("content-length", "0") or 0)
                    body_done = 0
                    out += head
                    del pending[: end + 4]
                if out:
                    upstream.sendall(bytes(out))
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)

    def _responses(self, client: socket.socket, upstream: socket.socket, state: dict) -> None:
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                request = state["request"]
                blob_get = request is not None and request.method == "GET" and "/blobs/sha256:" in request.path
                limit = self.drop_download_after
                if blob_get and limit is not None and state["response_bytes"] + len(data) > limit and "drop_download" not in self.fired:
                    if self._fire("drop_download"):
                        client.sendall(data[: max(0, limit - state["response_bytes"])])
                        return
                state["response_bytes"] += len(data)
                client.sendall(data)
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
