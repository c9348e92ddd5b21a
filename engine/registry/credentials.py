"""Registry credentials, read and written exactly where and how the docker CLI keeps them.

The file is `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`), so a
`docker login` is seen by Shipyard and a `shipyard login` by docker, skopeo and
buildx. Lookup order, as in docker: a `credHelpers` entry for the registry, else the
`credsStore` helper, else the `auths` entry (`auth` = base64 "user:password", or
`username`/`password`, plus an optional `identitytoken`). Helpers are the
`docker-credential-NAME` programs on PATH, spoken to over their stdin/stdout protocol
(`get`/`store`/`erase`).

`shipyard login` stores through the helper when one applies, else into `auths` of
config.json (mode 0600, written atomically, every other key preserved).
Docker Hub's key is docker's historical `https://index.docker.io/v1/`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.registry.config import DOCKER_HUB, canonical_registry
from engine.registry.errors import RegistryConfigError

DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
HELPER_TIMEOUT = 30.0
_TOKEN_USER = "<token>"


@dataclass(frozen=True)
class Credential:
    username: str = ""
    password: str = ""
    identity_token: str = ""
    """An OAuth2 refresh token (docker's `identitytoken`): traded for access tokens by POST."""

    def __repr__(self) -> str:  # never print secrets, even in a traceback
        return f"Credential(username={self.username!r}, password={'***' if self.password else ''!r})"


def server_address(registry: str) -> str:
    """The key docker uses for a registry in config.json and with helpers."""
    name = canonical_registry(registry)
    return DOCKER_HUB_SERVER if name == DOCKER_HUB else name


class DockerCredentials:
    """Credentials from (and for) one docker config directory."""

    def __init__(self, config_dir: Path | str | None = None) -> None:
        if config_dir is None:
            config_dir = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
        self.config_dir = Path(config_dir)

    @property
    def path(self) -> Path:
        return self.config_dir / "config.json"

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes() or b"{}")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RegistryConfigError(f"{self.path}: cannot read docker config ({exc})") from None
        if not isinstance(data, dict):
            raise RegistryConfigError(f"{self.path}: expected a JSON object")
        return data

    def _helper_for(self, doc: dict[str, Any], registry: str) -> str:
        helpers = doc.get("credHelpers") or {}
        if isinstance(helpers, dict):
            for key, name in helpers.items():
                if canonical_registry(key) == canonical_registry(registry) and isinstance(name, str) and name:
                    return name
        store = doc.get("credsStore")
        return store if isinstance(store, str) else ""

    # ------------------------------------------------------------------ reading

    def get(self, registry: str) -> Credential | None:
        """The credential for a registry (a host, `docker.io`, or docker's URL form), or None."""
        doc = self._load()
        helper = self._helper_for(doc, registry)
        if helper:
            found = self._helper_get(helper, registry)
            if found is not None:
                return found
        return _from_auths(doc, registry, self.path)

    def _helper_get(self, helper: str, registry: str) -> Credential | None:
        program = shutil.which(f"docker-credential-{helper}")
        if program is None:
            return None  # like a config.json copied from a desktop: fall back to auths/anonymous
        proc = _run_helper(program, helper, "get", server_address(registry))
        if proc.returncode != 0:
            if "credentials not found" in (proc.stdout + proc.stderr).lower():
                return None
            raise RegistryConfigError(f"docker-credential-{helper} get {server_address(registry)}: {_first_line(proc)}")
        try:
            data = json.loads(proc.stdout)
            username, secret = str(data.get("Username", "")), str(data.get("Secret", ""))
        except (ValueError, AttributeError):
            raise RegistryConfigError(f"docker-credential-{helper} get: answered something that is not JSON") from None
        if not secret:
            return None
        if username == _TOKEN_USER:
            return Credential(identity_token=secret)
        return Credential(username, secret)

    # ------------------------------------------------------------------ login / logout

    def store(self, registry: str, credential: Credential) -> str:
        """Save a credential (login); returns where it went (a helper name or the file path)."""
        doc = self._load()
        helper = self._helper_for(doc, registry)
        server = server_address(registry)
        if helper:
            program = shutil.which(f"docker-credential-{helper}")
            if program is None:
                raise RegistryConfigError(f"{self.path} names the credential helper {helper!r}, but docker-credential-{helper} is not on PATH")
            username = _TOKEN_USER if credential.identity_token else credential.username
            secret = credential.identity_token or credential.password
            payload = json.dumps({"ServerURL": server, "Username": username, "Secret": secret})
            proc = _run_helper(program, helper, "store", payload)
            if proc.returncode != 0:
                raise RegistryConfigError(f"docker-credential-{helper} store {server}: {_first_line(proc)}")
            return f"docker-credential-{helper}"
        auths = doc.setdefault("auths", {})
        if not isinstance(auths, dict):
            raise RegistryConfigError(f"{self.path}: auths: expected an object")
        for key in [k for k in auths if canonical_registry(k) == canonical_registry(registry)]:
            del auths[key]
        entry: dict[str, str] = {}
        if credential.username or credential.password:
            entry["auth"] = base64.b64encode(f"{credential.username}:{credential.password}".encode()).decode("ascii")
        if credential.identity_token:
            entry["identitytoken"] = credential.identity_token
        auths[server] = entry
        self._save(doc)
        return str(self.path)

    def erase(self, registry: str) -> bool:
        """Forget a registry's credential (logout); False when there was none."""
        doc = self._load()
        helper = self._helper_for(doc, registry)
        removed = False
        if helper:
            program = shutil.which(f"docker-credential-{helper}")
            if program is not None:
                proc = _run_helper(program, helper, "erase", server_address(registry))
                removed = proc.returncode == 0
        auths = doc.get("auths")
        if isinstance(auths, dict):
            keys = [k for k in auths if canonical_registry(k) == canonical_registry(registry)]
            for key in keys:
                del auths[key]
            if keys:
                self._save(doc)
                removed = True
        return removed

    def _save(self, doc: dict[str, Any]) -> None:
        self.config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.config_dir, prefix=".config.json.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent="\t")
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def _from_auths(doc: dict[str, Any], registry: str, path: Path) -> Credential | None:
    auths = doc.get("auths") or {}
    if not isinstance(auths, dict):
        return None
    wanted = canonical_registry(registry)
    for key, entry in auths.items():
        if canonical_registry(key) != wanted or not isinstance(entry, dict):
            continue
        username, password = str(entry.get("username") or ""), str(entry.get("password") or "")
        encoded = entry.get("auth")
        if isinstance(encoded, str) and encoded:
            try:
                decoded = base64.b64decode(encoded, validate=False).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise RegistryConfigError(f"{path}: auths.{key}.auth is not base64 of user:password") from None
            username, sep, password = decoded.partition(":")
            if not sep:
                raise RegistryConfigError(f"{path}: auths.{key}.auth is not base64 of user:password")
        token = str(entry.get("identitytoken") or "")
        if username or password or token:
            return Credential(username, password, token)
    return None


def _run_helper(program: str, helper: str, action: str, stdin: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [program, action], input=stdin, capture_output=True, text=True, timeout=HELPER_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise RegistryConfigError(f"docker-credential-{helper} {action}: no answer after {HELPER_TIMEOUT:.0f}s") from None
    except OSError as exc:
        raise RegistryConfigError(f"docker-credential-{helper} {action}: {exc.strerror}") from None


def _first_line(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}").splitlines()
    return text[0] if text else f"exit status {proc.returncode}"


class StaticCredentials:
    """One credential for one registry (login checks a password before storing it)."""

    def __init__(self, registry: str, credential: Credential) -> None:
        self.registry = canonical_registry(registry)
        self.credential = credential

    def get(self, registry: str) -> Credential | None:
        return self.credential if canonical_registry(registry) == self.registry else None
