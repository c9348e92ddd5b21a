"""Registry settings from Shipyard's TOML config file, in BuildKit's buildkitd.toml form.

    [registry."docker.io"]
    mirrors = ["127.0.0.1:5000", "mirror.example.com/prefix"]

    [registry."127.0.0.1:5000"]
    http = true              # plain HTTP
    insecure = true          # HTTPS without certificate checks (falls back to HTTP)
    ca = ["/etc/certs/ca.pem"]
    [[registry."registry.example.com".keypair]]
    key = "/etc/certs/client.key"
    cert = "/etc/certs/client.crt"

The file is `$SHIPYARD_CONFIG` when set, else `/etc/shipyard/config.toml` for root and
`$XDG_CONFIG_HOME/shipyard/config.toml` (default `~/.config/…`) for anyone else. A
missing default file is an empty config; a missing `$SHIPYARD_CONFIG` is an error
(the user named it). Only the `registry` table is read: a whole buildkitd.toml can be
pointed at, its other sections are ignored. Unknown keys inside a registry entry are
errors, so a typo (`mirror = …`) never silently does nothing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.configfile import parse_toml, read_config
from engine.registry.errors import RegistryConfigError

DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = frozenset(("docker.io", "index.docker.io", "registry-1.docker.io"))
DOCKER_HUB_HOST = "registry-1.docker.io"
"""Where docker.io's API is actually served."""

_HOST_KEYS = frozenset(("mirrors", "http", "insecure", "ca", "keypair"))


def canonical_registry(name: str) -> str:
    """`https://index.docker.io/v1/` → `docker.io`; `HOST:PORT/` → `host:port` (the key configs use)."""
    name = name.strip()
    for scheme in ("https://", "http://"):
        if name.startswith(scheme):
            name = name[len(scheme) :]
    name = name.split("/", 1)[0].lower()
    return DOCKER_HUB if name in DOCKER_HUB_ALIASES else name


def is_loopback(host: str) -> bool:
    """`localhost`, `127.x.y.z`, `[::1]` (with or without a port): plain HTTP is allowed there."""
    name = host
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class KeyPair:
    key: str
    cert: str


@dataclass(frozen=True)
class Mirror:
    """One mirror entry: `host[:port][/prefix]`, optionally with an explicit `http(s)://`."""

    host: str
    prefix: str = ""
    scheme: str = ""
    """"" means: decided by the mirror host's own settings (http/insecure/loopback)."""

    @classmethod
    def parse(cls, text: str, where: str) -> "Mirror":
        value = text.strip()
        scheme = ""
        for candidate in ("https", "http"):
            if value.startswith(candidate + "://"):
                scheme, value = candidate, value[len(candidate) + 3 :]
        host, _, prefix = value.partition("/")
        if not host or any(c.isspace() for c in value):
            raise RegistryConfigError(f"{where}: invalid mirror {text!r} (want HOST[:PORT][/PREFIX])")
        prefix = prefix.strip("/")
        return cls(host.lower(), "/" + prefix if prefix else "", scheme)

    def __str__(self) -> str:
        return f"{self.scheme + '://' if self.scheme else ''}{self.host}{self.prefix}"


@dataclass(frozen=True)
class HostConfig:
    """The settings for one registry host (an origin registry or a mirror)."""

    mirrors: tuple[Mirror, ...] = ()
    http: bool | None = None
    """True: plain HTTP. False: HTTPS even on loopback. None: HTTPS, except loopback → HTTP."""
    insecure: bool = False
    """HTTPS without certificate verification, falling back to plain HTTP (docker's insecure-registries)."""
    ca: tuple[str, ...] = ()
    keypairs: tuple[KeyPair, ...] = ()


@dataclass(frozen=True)
class RegistryConfig:
    hosts: dict[str, HostConfig] = field(default_factory=dict)
    source: str = ""
    """The file this came from ("" when none was found)."""

    def host(self, registry: str) -> HostConfig:
        return self.hosts.get(canonical_registry(registry), HostConfig())

    def mirrors(self, registry: str) -> tuple[Mirror, ...]:
        return self.host(registry).mirrors


def load_config(path: Path | str | None = None) -> RegistryConfig:
    """The registry config from `path` (default: see the module docstring)."""
    data, source = read_config(path, RegistryConfigError)
    return RegistryConfig() if data is None else parse_config(data, source)


def parse_config(data: bytes | str, source: str = "config.toml") -> RegistryConfig:
    doc = parse_toml(data, source, RegistryConfigError)
    registries = doc.get("registry", {})
    if not isinstance(registries, dict):
        raise RegistryConfigError(f"{source}: registry: expected a table of registries")
    hosts: dict[str, HostConfig] = {}
    for name, table in registries.items():
        where = f"{source}: registry.{_quote(name)}"
        if not isinstance(table, dict):
            raise RegistryConfigError(f"{where}: expected a table")
        key = canonical_registry(name)
        if not key:
            raise RegistryConfigError(f"{where}: empty registry name")
        hosts[key] = _host_config(table, where)
    return RegistryConfig(hosts, source)


def _quote(name: str) -> str:
    return f'"{name}"' if any(c in name for c in ".:/") else name


def _host_config(table: dict[str, Any], where: str) -> HostConfig:
    unknown = sorted(set(table) - _HOST_KEYS)
    if unknown:
        raise RegistryConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(_HOST_KEYS))})")
    mirrors = tuple(Mirror.parse(m, f"{where}.mirrors") for m in _str_list(table, "mirrors", where))
    http = table.get("http")
    if http is not None and not isinstance(http, bool):
        raise RegistryConfigError(f"{where}.http: expected true or false")
    insecure = table.get("insecure", False)
    if not isinstance(insecure, bool):
        raise RegistryConfigError(f"{where}.insecure: expected true or false")
    keypairs = []
    raw_pairs = table.get("keypair", [])
    if isinstance(raw_pairs, dict):
        raw_pairs = [raw_pairs]
    if not isinstance(raw_pairs, list):
        raise RegistryConfigError(f"{where}.keypair: expected [[keypair]] tables with key and cert")
    for i, pair in enumerate(raw_pairs):
        if not isinstance(pair, dict) or not isinstance(pair.get("key"), str) or not isinstance(pair.get("cert"), str):
            raise RegistryConfigError(f"{where}.keypair[{i}]: expected key = \"PATH\" and cert = \"PATH\"")
        keypairs.append(KeyPair(pair["key"], pair["cert"]))
    return HostConfig(mirrors, http, insecure, _str_list(table, "ca", where), tuple(keypairs))


def _str_list(table: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RegistryConfigError(f"{where}.{key}: expected a list of strings")
    return tuple(value)
