"""Image references, normalized the way docker does (`busybox` → `docker.io/library/busybox:latest`)."""

from __future__ import annotations

import re
from typing import NamedTuple

from engine.errors import UsageError

DEFAULT_DOMAIN = "docker.io"
OFFICIAL_PREFIX = "library/"

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_DOMAIN = re.compile(r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$")


class Reference(NamedTuple):
    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        out = self.repository
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out

    def familiar(self) -> str:
        """The short form docker prints (`busybox:latest`, `localhost:5000/x:1`)."""
        repo = self.path
        if self.domain == DEFAULT_DOMAIN:
            if repo.startswith(OFFICIAL_PREFIX) and "/" not in repo[len(OFFICIAL_PREFIX) :]:
                repo = repo[len(OFFICIAL_PREFIX) :]
        else:
            repo = f"{self.domain}/{repo}"
        if self.tag:
            repo += ":" + self.tag
        if self.digest:
            repo += "@" + self.digest
        return repo


def parse_reference(text: str, default_tag: str = "latest") -> Reference:
    """Parse and normalize; a reference without tag or digest gets `default_tag`."""
    original = text
    if not text or text != text.strip():
        raise UsageError(f"invalid reference format: {original!r}")
    digest = ""
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise UsageError(f"invalid reference format: {original!r} (bad digest)")
    tag = ""
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, tag = text.rsplit(":", 1)
        if not _TAG.match(tag):
            raise UsageError(f"invalid reference format: {original!r} (bad tag)")
    parts = text.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost" or parts[0].startswith("[")):
        domain, path_parts = parts[0], parts[1:]
        if not _DOMAIN.match(domain):
            raise UsageError(f"invalid reference format: {original!r} (bad registry)")
    else:
        domain, path_parts = DEFAULT_DOMAIN, parts
    if domain == "index.docker.io":
        domain = DEFAULT_DOMAIN
    if not path_parts or any(not _COMPONENT.match(p) for p in path_parts):
        raise UsageError(f"invalid reference format: {original!r} (repository name must be lowercase)")
    path = "/".join(path_parts)
    if domain == DEFAULT_DOMAIN and len(path_parts) == 1:
        path = OFFICIAL_PREFIX + path
    if not tag and not digest:
        tag = default_tag
    return Reference(domain, path, tag, digest)
