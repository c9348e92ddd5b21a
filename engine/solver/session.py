"""What the user hands to one build besides the graph: secrets and SSH agents.

Like BuildKit's session: values that steps may use but that never enter a cache key
or a layer. Filled from `--secret` and `--ssh`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SecretSource:
    """Where a secret's value comes from: a file on the host or an environment variable."""

    id: str
    path: str = ""
    env: str = ""


@dataclass(frozen=True)
class BuildSession:
    secrets: dict[str, SecretSource] = field(default_factory=dict)
    ssh: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """ssh id → agent socket paths (or key files) given with `--ssh id=PATH[,PATH]`."""


EMPTY_SESSION = BuildSession()


def parse_secret_flag(text: str) -> SecretSource:
    """`id=ID[,src=PATH|source=PATH][,env=VAR][,type=file|env]`, as buildx reads `--secret`.

    With only an id, the value comes from the environment variable of that name when it
    is set, else from a file of that name (buildx's rule).
    """
    from engine.errors import UsageError

    fields: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--secret {text!r}: {item!r} is not key=value")
        fields[key.strip().lower()] = value
    secret_id = fields.pop("id", "")
    if not secret_id:
        raise UsageError(f"--secret {text!r}: id= is required")
    path = fields.pop("src", "") or fields.pop("source", "")
    env = fields.pop("env", "")
    kind = fields.pop("type", "")
    if fields:
        raise UsageError(f"--secret {text!r}: unknown field {sorted(fields)[0]!r}")
    if kind == "env" and not env:
        env, path = path or secret_id, ""
    if not path and not env:
        import os

        if secret_id in os.environ:
            env = secret_id
        else:
            path = secret_id
    return SecretSource(secret_id, path=path, env=env)


def parse_ssh_flag(text: str) -> tuple[str, tuple[str, ...]]:
    """`default`, `default=$SSH_AUTH_SOCK`, `id=/path/key1,/path/key2`."""
    import os

    from engine.errors import UsageError

    ssh_id, sep, paths = text.partition("=")
    if not ssh_id:
        raise UsageError(f"--ssh {text!r}: empty id")
    if not sep:
        sock = os.environ.get("SSH_AUTH_SOCK", "")
        if not sock:
            raise UsageError(f"--ssh {text}: no path given and SSH_AUTH_SOCK is not set")
        return ssh_id, (sock,)
    return ssh_id, tuple(p for p in paths.split(",") if p)
