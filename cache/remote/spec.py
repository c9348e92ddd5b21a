"""`--cache-to` / `--cache-from` values, parsed buildx's way: CSV of key=value.

    --cache-to   type=registry,ref=REF[,mode=min|max][,compression=gzip|uncompressed][,ignore-error=true]
    --cache-to   type=local,dest=DIR[,tag=TAG][,mode=min|max][,compression=…][,ignore-error=true]
    --cache-to   type=inline
    --cache-from type=registry,ref=REF   (a cache manifest, or an image with inline cache)
    --cache-from type=local,src=DIR[,tag=TAG|,digest=sha256:…]
    --cache-from type=image,ref=NAME     (an image in the local store, with inline cache)
    --cache-from REF                     (same as type=registry,ref=REF, as in buildx)
    --cache-from docker-image://NAME     (same as type=image,ref=NAME)
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Literal

from engine.errors import UsageError

ExportType = Literal["registry", "local", "inline"]
ImportType = Literal["registry", "local", "image"]
Mode = Literal["min", "max"]

_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


@dataclass(frozen=True)
class CacheExport:
    """Where to write this build's cache records, and which ones (mode)."""

    type: ExportType
    ref: str = ""
    dest: str = ""
    tag: str = "latest"
    mode: Mode = "min"
    compression: str = "gzip"
    ignore_error: bool = False

    def describe(self) -> str:
        return {"registry": f"registry:{self.ref}", "local": f"local:{self.dest}", "inline": "inline"}[self.type]


@dataclass(frozen=True)
class CacheImport:
    """A cache to consult on local misses."""

    type: ImportType
    ref: str = ""
    src: str = ""
    tag: str = ""
    digest: str = ""

    def describe(self) -> str:
        return {"registry": f"registry:{self.ref}", "local": f"local:{self.src}", "image": f"image:{self.ref}"}[self.type]


def _fields(flag: str, text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in next(csv.reader([text])):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} {text!r}: {item!r} is not key=value")
        fields[key.strip().lower()] = value.strip()
    return fields


def _flag(flag: str, text: str, name: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise UsageError(f"{flag} {text!r}: {name}={value!r} is not a boolean")


def _reject_unknown(flag: str, text: str, fields: dict[str, str], known: tuple[str, ...]) -> None:
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise UsageError(f"{flag} {text!r}: unknown option {unknown[0]!r} (known: {', '.join(known)})")


def parse_cache_to(text: str) -> CacheExport:
    flag = "--cache-to"
    fields = _fields(flag, text)
    kind = fields.pop("type", "")
    mode = fields.pop("mode", "min")
    if mode not in ("min", "max"):
        raise UsageError(f"{flag} {text!r}: mode must be min or max")
    compression = fields.pop("compression", "gzip")
    if compression not in ("gzip", "uncompressed"):
        raise UsageError(f"{flag} {text!r}: compression must be gzip or uncompressed")
    ignore_error = _flag(flag, text, "ignore-error", fields.pop("ignore-error", "false"))
    for name in ("image-manifest", "oci-mediatypes"):  # always the OCI image-manifest form
        if name in fields and not _flag(flag, text, name, fields.pop(name)):
            raise UsageError(f"{flag} {text!r}: only {name}=true is supported (OCI image manifest, which every registry accepts)")
    if kind == "registry":
        ref = fields.pop("ref", "")
        _reject_unknown(flag, text, fields, ("ref",))
        if not ref:
            raise UsageError(f"{flag} {text!r}: type=registry needs ref=")
        return CacheExport("registry", ref=ref, mode=mode, compression=compression, ignore_error=ignore_error)  # type: ignore[arg-type]
    if kind == "local":
        dest = fields.pop("dest", "")
        tag = fields.pop("tag", "latest") or "latest"
        _reject_unknown(flag, text, fields, ("dest", "tag"))
        if not dest:
            raise UsageError(f"{flag} {text!r}: type=local needs dest=")
        return CacheExport("local", dest=dest, tag=tag, mode=mode, compression=compression, ignore_error=ignore_error)  # type: ignore[arg-type]
    if kind == "inline":
        _reject_unknown(flag, text, fields, ())
        if mode == "max":
            raise UsageError(
                f"{flag} {text!r}: inline cache holds only the image's own layers (mode=min); "
                "use type=registry or type=local for mode=max"
            )
        return CacheExport("inline", ignore_error=ignore_error)
    raise UsageError(f"{flag} {text!r}: type must be registry, local or inline")


def parse_cache_from(text: str) -> CacheImport:
    flag = "--cache-from"
    if text.startswith("docker-image://"):
        return CacheImport("image", ref=text[len("docker-image://") :])
    if "=" not in text:
        return CacheImport("registry", ref=text)
    fields = _fields(flag, text)
    kind = fields.pop("type", "")
    if kind == "registry":
        ref = fields.pop("ref", "")
        _reject_unknown(flag, text, fields, ("ref",))
        if not ref:
            raise UsageError(f"{flag} {text!r}: type=registry needs ref=")
        return CacheImport("registry", ref=ref)
    if kind == "local":
        src = fields.pop("src", "")
        tag = fields.pop("tag", "")
        digest = fields.pop("digest", "")
        _reject_unknown(flag, text, fields, ("src", "tag", "digest"))
        if not src:
            raise UsageError(f"{flag} {text!r}: type=local needs src=")
        if tag and digest:
            raise UsageError(f"{flag} {text!r}: give tag= or digest=, not both")
        return CacheImport("local", src=src, tag=tag, digest=digest)
    if kind == "image":
        ref = fields.pop("ref", "")
        _reject_unknown(flag, text, fields, ("ref",))
        if not ref:
            raise UsageError(f"{flag} {text!r}: type=image needs ref=")
        return CacheImport("image", ref=ref)
    raise UsageError(f"{flag} {text!r}: type must be registry, local or image")
