"""What the user hands to one build besides the graph: secrets, SSH agents, entitlements.

Like BuildKit's session: values that steps may use but that never enter a cache key
or a layer. Filled from `--secret`, `--ssh` and `--allow`.

Entitlements are buildx's: `RUN --network=host` needs `network.host` and
`RUN --security=insecure` needs `security.insecure`, granted on the command line.
`check_entitlements` refuses a graph that needs one not granted before anything runs
(even a step the cache would skip, as BuildKit validates the whole definition), and
the RUN executor checks again at the one place that starts containers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from engine.errors import ShipyardError

if TYPE_CHECKING:
    from engine.graph.ops import ExecOp, VertexMeta
    from engine.graph.vertex import Vertex

ENTITLEMENTS = ("network.host", "security.insecure")


@dataclass(frozen=True)
class SecretSource:
    """Where a secret's value comes from: a file on the host or an environment variable."""

    id: str
    path: str = ""
    env: str = ""
    explicit: bool = True
    """False when the path was only defaulted from the id (`--secret id=x`, no file, no
    variable): a missing file then means "not provided" rather than an error."""


@dataclass(frozen=True)
class BuildSession:
    secrets: dict[str, SecretSource] = field(default_factory=dict)
    ssh: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """ssh id → agent socket paths (or key files) given with `--ssh id=PATH[,PATH]`."""
    entitlements: frozenset[str] = frozenset()
    """What `--allow` granted: `network.host`, `security.insecure`."""

    def secret_value(self, secret_id: str) -> bytes | None:
        """The secret's bytes, read now (never stored); None when the build has no such secret."""
        import os

        from engine.errors import UsageError

        source = self.secrets.get(secret_id)
        if source is None:
            return None
        if source.env:
            value = os.environ.get(source.env)
            if value is None:
                return None
            return value.encode()
        try:
            with open(source.path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            if not source.explicit:
                return None
            raise UsageError(f"secret {secret_id!r}: {source.path} does not exist") from None
        except OSError as exc:
            raise UsageError(f"secret {secret_id!r}: cannot read {source.path}: {exc.strerror}") from None


class EntitlementError(ShipyardError):
    """A step that needs an entitlement the command line did not grant."""


def parse_allow_flags(values: Sequence[str]) -> frozenset[str]:
    """`--allow network.host --allow security.insecure` (also comma-separated, as buildx takes)."""
    from engine.errors import UsageError

    out: set[str] = set()
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            if item not in ENTITLEMENTS:
                raise UsageError(f"--allow {item!r}: unknown entitlement (want {' or '.join(ENTITLEMENTS)})")
            out.add(item)
    return frozenset(out)


def needed_entitlements(op: "ExecOp") -> list[tuple[str, str]]:
    """(entitlement, the flag that needs it) for one RUN."""
    needed = []
    if op.network == "host":
        needed.append(("network.host", "--network=host"))
    if op.security == "insecure":
        needed.append(("security.insecure", "--security=insecure"))
    return needed


def entitlement_error(entitlement: str, flag: str, location: str = "") -> EntitlementError:
    where = f"{location}: " if location else ""
    return EntitlementError(
        f'{where}RUN {flag} needs the "{entitlement}" entitlement, which this build does not allow '
        f"(pass --allow {entitlement})"
    )


def check_entitlements(
    vertices: Iterable["Vertex"], meta: Mapping[str, Sequence["VertexMeta"]], allowed: frozenset[str]
) -> None:
    """Refuse a graph with a RUN that needs an entitlement not in `allowed`, naming its line."""
    from engine.graph.ops import ExecOp

    for vertex in vertices:
        if not isinstance(vertex.op, ExecOp):
            continue
        for entitlement, flag in needed_entitlements(vertex.op):
            if entitlement not in allowed:
                metas = meta.get(vertex.digest) or ()
                raise entitlement_error(entitlement, flag, metas[0].location if metas else "")


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
    explicit = True
    if not path and not env:
        import os

        explicit = False
        if secret_id in os.environ:
            env = secret_id
        else:
            path = secret_id
    return SecretSource(secret_id, path=path, env=env, explicit=explicit)


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
