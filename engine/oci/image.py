"""The image config, manifest, index and descriptor, and their exact JSON bytes.

Digests are taken over JSON bytes, so "the same image" means the same bytes. The
JSON written here is what Go's encoding/json writes for BuildKit's structs:

- fields in struct order, `omitempty` fields left out when empty (empty strings,
  slices and maps, false, zero numbers, nil pointers — but never structs, so
  `"config":{}` stays);
- maps with sorted keys; HTML characters escaped (`<` → `\\u003c`), non-ASCII raw;
- no spaces; times in RFC 3339 UTC with nanoseconds, trailing zeros trimmed;
- the image config's top-level keys sorted alphabetically, because BuildKit
  re-marshals it through a map when it patches rootfs and history
  (`exporter/containerimage/writer.go: patchImageConfig`).

Parsing accepts what docker, skopeo and BuildKit write (Docker schema 2 and OCI
types; `null` for empty; Go's case-insensitive key match) and drops keys the model
does not know, as BuildKit's own structs do (Docker's `container_config`,
`docker_version`, `Hostname`, …).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from engine.errors import ShipyardError
from engine.oci import mediatypes

__all__ = [
    "Descriptor",
    "Healthcheck",
    "HistoryEntry",
    "Image",
    "ImageConfig",
    "ImageFormatError",
    "Index",
    "Manifest",
    "Platform",
    "Timestamp",
    "go_json",
    "sha256_digest",
]


class ImageFormatError(ShipyardError):
    """An image config, manifest or index whose JSON does not match the spec."""


# --------------------------------------------------------------------------- JSON


_GO_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def go_json(value: Any) -> bytes:
    """Compact JSON as Go's json.Marshal writes it (key order is the caller's)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # <, >, &, U+2028 and U+2029 can only occur inside strings, so this is safe.
    return text.translate(_GO_ESCAPES).encode("utf-8")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}


def check_digest(digest: str, where: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ImageFormatError(f"{where}: invalid digest {digest!r}")
    algorithm, hexpart = digest.split(":", 1)
    expected = _HEX_LENGTH.get(algorithm)
    if expected is not None and (len(hexpart) != expected or not re.fullmatch(r"[0-9a-f]+", hexpart)):
        raise ImageFormatError(f"{where}: invalid {algorithm} digest {digest!r}")
    return digest


class _Obj:
    """A JSON object read with Go's rules: exact key first, then a case-insensitive match."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ImageFormatError(f"{where}: expected an object, got {type(value).__name__}")
        self.value: dict[str, Any] = value
        self.where = where
        self._folded: dict[str, str] | None = None

    def get(self, key: str) -> Any:
        if key in self.value:
            return self.value[key]
        if self._folded is None:
            self._folded = {k.lower(): k for k in self.value}
        real = self._folded.get(key.lower())
        return None if real is None else self.value[real]

    def _fail(self, key: str, expected: str) -> ImageFormatError:
        return ImageFormatError(f"{self.where}.{key}: expected {expected}")

    def text(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def integer(self, key: str) -> int:
        value = self.get(key)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, "an integer")
        return value

    def flag(self, key: str) -> bool:
        value = self.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def str_list(self, key: str) -> tuple[str, ...]:
        value = self.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "a list of strings")
        return tuple(value)

    def str_set(self, key: str) -> tuple[str, ...]:
        """A Go `map[string]struct{}` (ExposedPorts, Volumes): its keys."""
        value = self.get(key)
        if value is None:
            return ()
        if not isinstance(value, dict):
            raise self._fail(key, "an object")
        return tuple(value)

    def str_map(self, key: str) -> tuple[tuple[str, str], ...]:
        value = self.get(key)
        if value is None:
            return ()
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self._fail(key, "an object of strings")
        return tuple(value.items())

    def obj(self, key: str) -> _Obj | None:
        value = self.get(key)
        return None if value is None else _Obj(value, f"{self.where}.{key}")

    def objs(self, key: str) -> list[_Obj]:
        value = self.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._fail(key, "a list")
        return [_Obj(item, f"{self.where}.{key}[{i}]") for i, item in enumerate(value)]


def _load(data: bytes | str, what: str) -> _Obj:
    try:
        return _Obj(json.loads(data), what)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageFormatError(f"{what}: invalid JSON: {exc}") from None


def _sorted_pairs(pairs: tuple[tuple[str, str], ...] | Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return tuple(sorted(dict(items).items()))


def _sorted_set(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


# --------------------------------------------------------------------------- time


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, order=True)
class Timestamp:
    """A point in time with Go's nanosecond precision (datetime has only microseconds)."""

    unix_nano: int

    @classmethod
    def from_seconds(cls, seconds: int) -> Timestamp:
        return cls(seconds * 1_000_000_000)

    @classmethod
    def now(cls) -> Timestamp:
        import time

        return cls(time.time_ns())

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        """RFC 3339 with any offset and up to nanosecond precision (more digits are truncated)."""
        match = _RFC3339.match(text) if isinstance(text, str) else None
        if not match:
            raise ImageFormatError(f"invalid RFC 3339 time {text!r}")
        year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
        try:
            moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
        except ValueError:
            raise ImageFormatError(f"invalid RFC 3339 time {text!r}") from None
        delta = moment - _EPOCH
        seconds = delta.days * 86400 + delta.seconds
        if match.group(9):
            offset = (int(match.group(10)) * 60 + int(match.group(11))) * 60
            seconds -= offset if match.group(9) == "+" else -offset
        frac = match.group(7) or ""
        nanos = int((frac + "000000000")[:9])
        return cls(seconds * 1_000_000_000 + nanos)

    @property
    def seconds(self) -> int:
        return self.unix_nano // 1_000_000_000

    def format(self) -> str:
        """Go's RFC3339Nano in UTC: `2024-01-02T03:04:05.123456789Z`, trailing zeros trimmed."""
        seconds, nanos = divmod(self.unix_nano, 1_000_000_000)
        try:
            moment = _EPOCH + timedelta(seconds=seconds)
        except OverflowError:
            raise ImageFormatError(f"time {self.unix_nano}ns is outside years 1-9999") from None
        frac = f".{nanos:09d}".rstrip("0") if nanos else ""
        return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}{frac}Z"

    def clamp(self, epoch: Timestamp | None) -> Timestamp:
        """This time, or `epoch` if that is earlier (SOURCE_DATE_EPOCH)."""
        return self if epoch is None or self <= epoch else epoch

    def __str__(self) -> str:
        return self.format()


def _time(obj: _Obj, key: str) -> Timestamp | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ImageFormatError(f"{obj.where}.{key}: expected an RFC 3339 time string")
    try:
        return Timestamp.parse(value)
    except ImageFormatError as exc:
        raise ImageFormatError(f"{obj.where}.{key}: {exc}") from None


# --------------------------------------------------------------------------- image config


@dataclass(frozen=True)
class Healthcheck:
    """HEALTHCHECK; durations in nanoseconds (Go's time.Duration), zero means inherit."""

    test: tuple[str, ...] = ()
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.test:
            out["Test"] = list(self.test)
        for key, value in (
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
            ("Retries", self.retries),
        ):
            if value:
                out[key] = value
        return out

    @classmethod
    def from_obj(cls, obj: _Obj) -> Healthcheck:
        return cls(
            test=obj.str_list("Test"),
            interval=obj.integer("Interval"),
            timeout=obj.integer("Timeout"),
            start_period=obj.integer("StartPeriod"),
            start_interval=obj.integer("StartInterval"),
            retries=obj.integer("Retries"),
        )


@dataclass(frozen=True)
class ImageConfig:
    """The `config` object: how a container from this image runs.

    Sets (ports, volumes) and maps (labels) are kept sorted, so equal configs compare
    equal whatever order they were built in.
    """

    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    working_dir: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    stop_signal: str = ""
    args_escaped: bool = False
    healthcheck: Healthcheck | None = None
    on_build: tuple[str, ...] = ()
    shell: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "exposed_ports", _sorted_set(tuple(self.exposed_ports)))
        object.__setattr__(self, "volumes", _sorted_set(tuple(self.volumes)))
        object.__setattr__(self, "labels", _sorted_pairs(self.labels))
        for name in ("env", "entrypoint", "cmd", "on_build", "shell"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {port: {} for port in self.exposed_ports}
        if self.env:
            out["Env"] = list(self.env)
        if self.entrypoint:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            out["Cmd"] = list(self.cmd)
        if self.volumes:
            out["Volumes"] = {volume: {} for volume in self.volumes}
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        if self.args_escaped:
            out["ArgsEscaped"] = True
        if self.healthcheck is not None:
            out["Healthcheck"] = self.healthcheck.to_dict()
        if self.on_build:
            out["OnBuild"] = list(self.on_build)
        if self.shell:
            out["Shell"] = list(self.shell)
        return out

    @classmethod
    def from_obj(cls, obj: _Obj) -> ImageConfig:
        health = obj.obj("Healthcheck")
        return cls(
            user=obj.text("User"),
            exposed_ports=obj.str_set("ExposedPorts"),
            env=obj.str_list("Env"),
            entrypoint=obj.str_list("Entrypoint"),
            cmd=obj.str_list("Cmd"),
            volumes=obj.str_set("Volumes"),
            working_dir=obj.text("WorkingDir"),
            labels=obj.str_map("Labels"),
            stop_signal=obj.text("StopSignal"),
            args_escaped=obj.flag("ArgsEscaped"),
            healthcheck=Healthcheck.from_obj(health) if health is not None else None,
            on_build=obj.str_list("OnBuild"),
            shell=obj.str_list("Shell"),
        )

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)

    def to_json(self) -> bytes:
        return go_json(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> ImageConfig:
        """Parse a bare config object (e.g. `docker inspect`'s `Config`)."""
        return cls.from_obj(_load(data, "config"))


@dataclass(frozen=True)
class HistoryEntry:
    """One step of the image's history; `empty_layer` steps made no layer."""

    created: Timestamp | None = None
    created_by: str = ""
    comment: str = ""
    empty_layer: bool = False
    author: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.created is not None:
            out["created"] = self.created.format()
        if self.created_by:
            out["created_by"] = self.created_by
        if self.author:
            out["author"] = self.author
        if self.comment:
            out["comment"] = self.comment
        if self.empty_layer:
            out["empty_layer"] = True
        return out

    @classmethod
    def from_obj(cls, obj: _Obj) -> HistoryEntry:
        return cls(
            created=_time(obj, "created"),
            created_by=obj.text("created_by"),
            comment=obj.text("comment"),
            empty_layer=obj.flag("empty_layer"),
            author=obj.text("author"),
        )


@dataclass(frozen=True)
class Image:
    """The image config blob (`application/vnd.oci.image.config.v1+json` or Docker's)."""

    architecture: str = "amd64"
    os: str = "linux"
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()
    created: Timestamp | None = None
    author: str = ""
    config: ImageConfig = field(default_factory=ImageConfig)
    diff_ids: tuple[str, ...] = ()
    history: tuple[HistoryEntry, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "diff_ids", tuple(self.diff_ids))
        object.__setattr__(self, "history", tuple(self.history))
        object.__setattr__(self, "os_features", tuple(self.os_features))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture}
        if self.author:
            out["author"] = self.author
        out["config"] = self.config.to_dict()
        if self.created is not None:
            out["created"] = self.created.format()
        if self.history:
            out["history"] = [entry.to_dict() for entry in self.history]
        out["os"] = self.os
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.os_version:
            out["os.version"] = self.os_version
        out["rootfs"] = {"type": "layers", "diff_ids": list(self.diff_ids)}
        if self.variant:
            out["variant"] = self.variant
        return out  # keys already in sorted order, as BuildKit writes them

    def to_json(self) -> bytes:
        return go_json(self.to_dict())

    def digest(self) -> str:
        return sha256_digest(self.to_json())

    @classmethod
    def from_json(cls, data: bytes | str) -> Image:
        obj = _load(data, "image config")
        rootfs = obj.obj("rootfs")
        diff_ids: tuple[str, ...] = ()
        if rootfs is not None:
            kind = rootfs.text("type")
            if kind and kind != "layers":
                raise ImageFormatError(f"image config.rootfs.type: expected \"layers\", got {kind!r}")
            diff_ids = rootfs.str_list("diff_ids")
            for i, digest in enumerate(diff_ids):
                check_digest(digest, f"image config.rootfs.diff_ids[{i}]")
        config = obj.obj("config")
        return cls(
            architecture=obj.text("architecture"),
            os=obj.text("os"),
            variant=obj.text("variant"),
            os_version=obj.text("os.version"),
            os_features=obj.str_list("os.features"),
            created=_time(obj, "created"),
            author=obj.text("author"),
            config=ImageConfig.from_obj(config) if config is not None else ImageConfig(),
            diff_ids=diff_ids,
            history=tuple(HistoryEntry.from_obj(h) for h in obj.objs("history")),
        )

    @property
    def platform(self) -> Platform:
        return Platform(self.architecture, self.os, self.os_version, self.os_features, self.variant)


# --------------------------------------------------------------------------- descriptors


@dataclass(frozen=True)
class Platform:
    architecture: str
    os: str
    os_version: str = ""
    os_features: tuple[str, ...] = ()
    variant: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def from_obj(cls, obj: _Obj) -> Platform:
        return cls(
            architecture=obj.text("architecture"),
            os=obj.text("os"),
            os_version=obj.text("os.version"),
            os_features=obj.str_list("os.features"),
            variant=obj.text("variant"),
        )

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


@dataclass(frozen=True)
class Descriptor:
    """A pointer to a blob: what it is, its digest and size (OCI field order on output)."""

    media_type: str
    digest: str
    size: int
    annotations: tuple[tuple[str, str], ...] = ()
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str = ""
    data: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "annotations", _sorted_pairs(self.annotations))
        object.__setattr__(self, "urls", tuple(self.urls))

    @classmethod
    def of(cls, media_type: str, blob: bytes, **kwargs: Any) -> Descriptor:
        """The descriptor of an in-memory blob (a config or a manifest)."""
        return cls(media_type, sha256_digest(blob), len(blob), **kwargs)

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.data:
            import base64

            out["data"] = base64.b64encode(self.data).decode("ascii")
        if self.platform is not None:
            out["platform"] = self.platform.to_dict()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @classmethod
    def from_obj(cls, obj: _Obj) -> Descriptor:
        size = obj.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ImageFormatError(f"{obj.where}.size: expected a non-negative integer")
        digest = obj.get("digest")
        check_digest(digest, f"{obj.where}.digest")
        platform = obj.obj("platform")
        raw_data = obj.get("data")
        data = None
        if raw_data is not None:
            import base64
            import binascii

            try:
                data = base64.b64decode(raw_data, validate=True)
            except (binascii.Error, TypeError):
                raise ImageFormatError(f"{obj.where}.data: invalid base64") from None
        return cls(
            media_type=obj.text("mediaType"),
            digest=digest,
            size=size,
            annotations=obj.str_map("annotations"),
            platform=Platform.from_obj(platform) if platform is not None else None,
            urls=obj.str_list("urls"),
            artifact_type=obj.text("artifactType"),
            data=data,
        )


def _check_schema(obj: _Obj) -> None:
    version = obj.get("schemaVersion")
    if version != 2:
        raise ImageFormatError(f"{obj.where}: unsupported schemaVersion {version!r} (expected 2)")


@dataclass(frozen=True)
class Manifest:
    """An image manifest, OCI or Docker schema 2 (the same shape, other media types)."""

    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str = mediatypes.OCI_MANIFEST
    annotations: tuple[tuple[str, str], ...] = ()
    artifact_type: str = ""
    subject: Descriptor | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "annotations", _sorted_pairs(self.annotations))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2}
        if self.media_type:
            out["mediaType"] = self.media_type
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out["config"] = self.config.to_dict()
        out["layers"] = [layer.to_dict() for layer in self.layers]
        if self.subject is not None:
            out["subject"] = self.subject.to_dict()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_json(self) -> bytes:
        return go_json(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        obj = _load(data, "manifest")
        _check_schema(obj)
        media_type = obj.text("mediaType")
        if media_type and not mediatypes.is_manifest(media_type):
            raise ImageFormatError(f"manifest: unsupported mediaType {media_type!r}")
        if obj.get("manifests") is not None and obj.get("config") is None:
            raise ImageFormatError("manifest: this is an index (manifest list), not an image manifest")
        config = obj.obj("config")
        if config is None:
            raise ImageFormatError("manifest: missing config descriptor")
        subject = obj.obj("subject")
        return cls(
            config=Descriptor.from_obj(config),
            layers=tuple(Descriptor.from_obj(layer) for layer in obj.objs("layers")),
            media_type=media_type,
            annotations=obj.str_map("annotations"),
            artifact_type=obj.text("artifactType"),
            subject=Descriptor.from_obj(subject) if subject is not None else None,
        )

    @property
    def effective_media_type(self) -> str:
        """The manifest's type, inferred from its config's type when the field is absent."""
        if self.media_type:
            return self.media_type
        return mediatypes.DOCKER_MANIFEST if self.config.media_type == mediatypes.DOCKER_CONFIG else mediatypes.OCI_MANIFEST


@dataclass(frozen=True)
class Index:
    """An OCI image index or a Docker manifest list."""

    manifests: tuple[Descriptor, ...]
    media_type: str = mediatypes.OCI_INDEX
    annotations: tuple[tuple[str, str], ...] = ()
    artifact_type: str = ""
    subject: Descriptor | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "manifests", tuple(self.manifests))
        object.__setattr__(self, "annotations", _sorted_pairs(self.annotations))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2}
        if self.media_type:
            out["mediaType"] = self.media_type
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out["manifests"] = [m.to_dict() for m in self.manifests]
        if self.subject is not None:
            out["subject"] = self.subject.to_dict()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_json(self) -> bytes:
        return go_json(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> Index:
        obj = _load(data, "index")
        _check_schema(obj)
        media_type = obj.text("mediaType")
        if media_type and not mediatypes.is_index(media_type):
            raise ImageFormatError(f"index: unsupported mediaType {media_type!r}")
        subject = obj.obj("subject")
        return cls(
            manifests=tuple(Descriptor.from_obj(m) for m in obj.objs("manifests")),
            media_type=media_type,
            annotations=obj.str_map("annotations"),
            artifact_type=obj.text("artifactType"),
            subject=Descriptor.from_obj(subject) if subject is not None else None,
        )
