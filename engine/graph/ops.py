"""The operations of the build graph, modelled on BuildKit's LLB.

Each op is a frozen dataclass: a value, hashable, with a canonical serialization.
Ops refer to their inputs by index into the owning vertex's `inputs`; the vertex
(`engine.graph.vertex`) gives the op its place in the graph and its digest.

What is *not* here: display names, source locations and other metadata, which live
in `VertexMeta` so that two identical operations from different Dockerfile lines are
one vertex and run once (BuildKit's `OpMetadata`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal, Union

NetworkMode = Literal["default", "none", "host"]
SecurityMode = Literal["sandbox", "insecure"]
MountType = Literal["bind", "cache", "tmpfs", "secret", "ssh"]
CacheSharing = Literal["shared", "private", "locked"]

SCRATCH = -1
"""Input index meaning "an empty directory" (BuildKit's -1 input)."""


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class ScratchSource:
    """The empty filesystem (`FROM scratch`)."""


@dataclass(frozen=True)
class LocalSource:
    """A directory on the host: the build context or a named context.

    `follow_paths` lists the only paths the build reads (BuildKit's `local.followpaths`),
    `exclude_patterns` come from `.dockerignore`. The path is part of the digest, but
    never of a cache key: everything downstream keys on the content it selects.
    """

    name: str
    path: str
    exclude_patterns: tuple[str, ...] = ()
    follow_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageSource:
    """An image: `ref` as written, `manifest_digest` as resolved (the cache identity)."""

    ref: str
    manifest_digest: str
    platform: str = "linux/amd64"


@dataclass(frozen=True)
class HttpSource:
    """One file fetched over HTTP(S) (`ADD <url>`): a snapshot holding `/<filename>`.

    `checksum` is the `--checksum` pin as written (`sha256:…`). `digest` (the content's
    digest) and `last_modified` (the response's `Last-Modified`) are what the
    frontend's resolver found, so the op changes exactly when the content does: like
    BuildKit, the cache key is the content, the file name and its mode, never the URL.
    """

    url: str
    filename: str
    checksum: str = ""
    digest: str = ""
    last_modified: str = ""
    perm: int = 0o600


@dataclass(frozen=True)
class GitSource:
    """A checkout of a git repository (`ADD <git url>`): the tree of `commit`, or of `subdir`.

    `ref` is the branch, tag or commit as written; `commit` is what it resolved to (the
    cache identity, with `subdir` and `keep_git_dir`; the remote is not part of it).
    `checksum` is a `--checksum` / `?checksum=` pin the commit must start with.
    """

    remote: str
    ref: str = ""
    commit: str = ""
    subdir: str = ""
    keep_git_dir: bool = False
    checksum: str = ""


# --------------------------------------------------------------------------- exec


@dataclass(frozen=True)
class Mount:
    """A mount of an `Exec`: the root (`target="/"`) or an extra one.

    `input` is an index into the vertex's inputs or `SCRATCH`. Only the root mount
    produces an output snapshot; extra bind mounts are read-only unless `readonly` is
    false, in which case their writes are discarded (Docker's `RUN --mount,rw`).
    """

    target: str
    input: int = SCRATCH
    selector: str = "/"
    readonly: bool = False
    type: MountType = "bind"
    cache_id: str = ""
    sharing: CacheSharing = "shared"
    tmpfs_size: int = 0
    secret_id: str = ""
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    required: bool = False
    env: str = ""
    """For a secret: the environment variable that receives its value (`env=`); the
    value itself is never part of the op."""
    ssh_id: str = ""
    """For an ssh mount: which `--ssh` agent (`default` unless the mount names one)."""


@dataclass(frozen=True)
class ExecOp:
    """Run a process on top of the root mount's input; the output is the new rootfs."""

    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: str = ""
    mounts: tuple[Mount, ...] = (Mount(target="/", input=0),)
    network: NetworkMode = "default"
    security: SecurityMode = "sandbox"
    hostname: str = ""
    proxy_env: tuple[str, ...] = ()
    """HTTP_PROXY and friends: given to the process, never part of a cache key."""

    def root_mount(self) -> Mount:
        for mount in self.mounts:
            if mount.target == "/":
                return mount
        raise ValueError("exec op without a root mount")


# --------------------------------------------------------------------------- file


@dataclass(frozen=True)
class Owner:
    """A `--chown` value: numeric ids, or names resolved in the destination's /etc files."""

    user: str
    group: str = ""


@dataclass(frozen=True)
class CopyAction:
    """Copy `src` paths of input `source` to `dest` with Docker's COPY semantics."""

    source: int
    src: tuple[str, ...]
    dest: str
    owner: Owner | None = None
    mode: int | None = None
    mode_str: str = ""
    follow_symlinks: bool = True
    dir_contents_only: bool = True
    allow_wildcard: bool = True
    allow_empty_wildcard: bool = True
    create_dest_path: bool = True
    attempt_unpack: bool = False
    include_patterns: tuple[str, ...] = ()
    exclude_patterns: tuple[str, ...] = ()
    parents: bool = False


@dataclass(frozen=True)
class MkdirAction:
    path: str
    mode: int = 0o755
    make_parents: bool = True
    owner: Owner | None = None


@dataclass(frozen=True)
class MkfileAction:
    path: str
    data: bytes
    mode: int = 0o644
    owner: Owner | None = None


@dataclass(frozen=True)
class RmAction:
    path: str
    allow_not_found: bool = True
    allow_wildcard: bool = False


FileAction = Union[CopyAction, MkdirAction, MkfileAction, RmAction]


@dataclass(frozen=True)
class FileOp:
    """Apply `actions` in order on top of input `base` (or scratch); one output snapshot."""

    actions: tuple[FileAction, ...]
    base: int = 0


# --------------------------------------------------------------------------- merge


@dataclass(frozen=True)
class MergeOp:
    """Stack the inputs' layers in order, later ones on top (BuildKit's MergeOp)."""


Op = Union[ScratchSource, LocalSource, ImageSource, HttpSource, GitSource, ExecOp, FileOp, MergeOp]
SOURCE_OPS = (ScratchSource, LocalSource, ImageSource, HttpSource, GitSource)


def canonical(value: object) -> object:
    """A JSON-ready form of an op: tagged with its type, fields in declaration order.

    Declaration order (not alphabetical) is deliberate: adding a field at the end of a
    dataclass keeps the serialization of old ops readable, and bytes are hex.
    """
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, (tuple, list)):
        return [canonical(item) for item in value]
    if hasattr(value, "__dataclass_fields__"):
        out: dict[str, object] = {"$type": type(value).__name__}
        for f in fields(value):  # type: ignore[arg-type]
            out[f.name] = canonical(getattr(value, f.name))
        return out
    return value


@dataclass(frozen=True)
class VertexMeta:
    """What the frontend says about a vertex, outside its identity: name, source lines."""

    name: str
    location: str = ""
    stage: str = ""
    extra: tuple[tuple[str, str], ...] = field(default=())
