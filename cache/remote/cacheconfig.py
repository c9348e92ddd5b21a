"""The cache config: which cache keys have which layer chains, as one small JSON document.

Modelled on BuildKit's `application/vnd.buildkit.cacheconfig.v0`, simplified because
Shipyard's cache keys are plain hashes (BuildKit's are graph nodes linked by inputs):

    {
      "layers": [
        {"blob": "sha256:…", "diffID": "sha256:…", "mediaType": "…tar+gzip",
         "size": 1234, "parent": -1, "created": 1712345678.123456},
        …
      ],
      "records": [
        {"key": "sha256:…", "layer": 3},   # result = layer 3 on its parents
        {"key": "sha256:…"}                # result = the empty filesystem
      ]
    }

A layer entry is one snapshot: a layer blob on top of the entry `parent` (an index
into `layers`, always smaller than its own, -1 for none), so a record names only its
top layer and the chain follows the parents, as in BuildKit. `created` is the
snapshot's creation time in Unix seconds (a JSON float, so it survives the round
trip exactly): image history times come from it, which is what makes an image built
from an imported cache the very same image, digest for digest.

Inline cache (`type=inline`) is the same document without `blob`, `size` and
`mediaType`: layer i is the image's own layer i, found in its manifest.

The whole document is metadata only; a build reads it before solving and fetches
blobs only for the records it actually uses.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from engine.errors import ShipyardError

CACHE_CONFIG_MEDIA_TYPE = "application/vnd.shipyard.cacheconfig.v0+json"
INLINE_CONFIG_KEY = "shipyard.cache.v0"
"""The image-config key holding inline cache (BuildKit uses `moby.buildkit.cache.v0`
for its own, differently shaped records: a different key keeps either tool from
misreading the other's)."""
ANNOTATION_UNCOMPRESSED = "containerd.io/uncompressed"
MAX_CONFIG_BYTES = 32 << 20


class CacheConfigError(ShipyardError):
    """A cache config that is not valid JSON of the expected shape."""


@dataclass(frozen=True)
class CacheLayer:
    """One snapshot of a chain: a layer (by diff_id, and blob when not inline) on a parent entry."""

    diff_id: str
    created: float
    parent: int = -1
    blob: str = ""
    size: int = 0
    media_type: str = ""


@dataclass(frozen=True)
class CacheEntry:
    """A cache key and the top layer entry of its result (-1: the empty filesystem)."""

    key: str
    layer: int = -1


@dataclass(frozen=True)
class CacheConfig:
    layers: tuple[CacheLayer, ...]
    records: tuple[CacheEntry, ...]

    def path(self, top: int) -> list[int]:
        """The indices of a result's layer entries, bottom first."""
        out: list[int] = []
        while top >= 0:
            out.append(top)
            top = self.layers[top].parent
        out.reverse()
        return out

    def chain(self, top: int) -> list[CacheLayer]:
        """The layer entries of a result, bottom first."""
        return [self.layers[i] for i in self.path(top)]

    def to_dict(self) -> dict[str, Any]:
        layers = []
        for layer in self.layers:
            item: dict[str, Any] = {}
            if layer.blob:
                item["blob"] = layer.blob
            item["diffID"] = layer.diff_id
            if layer.media_type:
                item["mediaType"] = layer.media_type
            if layer.blob:
                item["size"] = layer.size
            item["parent"] = layer.parent
            item["created"] = layer.created
            layers.append(item)
        records = [{"key": r.key, **({"layer": r.layer} if r.layer >= 0 else {})} for r in self.records]
        return {"layers": layers, "records": records}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_json(cls, data: bytes, *, inline: bool = False, where: str = "cache config") -> CacheConfig:
        if len(data) > MAX_CONFIG_BYTES:
            raise CacheConfigError(f"{where}: larger than {MAX_CONFIG_BYTES >> 20} MiB")
        try:
            value = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CacheConfigError(f"{where}: invalid JSON: {exc}") from None
        return cls.from_value(value, inline=inline, where=where)

    @classmethod
    def from_value(cls, value: object, *, inline: bool = False, where: str = "cache config") -> CacheConfig:
        """Parse and check: digests well formed, parents before children, records in range."""
        from engine.oci.image import ImageFormatError, check_digest

        if not isinstance(value, dict):
            raise CacheConfigError(f"{where}: expected an object")
        raw_layers = value.get("layers")
        raw_records = value.get("records")
        raw_layers = [] if raw_layers is None else raw_layers
        raw_records = [] if raw_records is None else raw_records
        if not isinstance(raw_layers, list) or not isinstance(raw_records, list):
            raise CacheConfigError(f"{where}: layers and records must be lists")
        layers: list[CacheLayer] = []
        try:
            for i, item in enumerate(raw_layers):
                at = f"{where}: layers[{i}]"
                if not isinstance(item, dict):
                    raise CacheConfigError(f"{at}: expected an object")
                diff_id = _sha256(check_digest(item.get("diffID"), at + ".diffID"), at + ".diffID")
                parent = _int(item.get("parent", -1), at + ".parent")
                if not -1 <= parent < i:
                    raise CacheConfigError(f"{at}: parent {parent} does not come before the layer")
                created = item.get("created", 0.0)
                if isinstance(created, bool) or not isinstance(created, (int, float)) or not math.isfinite(created):
                    raise CacheConfigError(f"{at}.created: expected a number of seconds")
                blob, size, media_type = "", 0, ""
                if not inline:
                    blob = _sha256(check_digest(item.get("blob"), at + ".blob"), at + ".blob")
                    size = _int(item.get("size"), at + ".size")
                    media_type = item.get("mediaType") or ""
                    if size < 0 or not isinstance(media_type, str):
                        raise CacheConfigError(f"{at}: invalid size or mediaType")
                layers.append(CacheLayer(diff_id, float(created), parent, blob, size, media_type))
        except ImageFormatError as exc:
            raise CacheConfigError(str(exc)) from None
        records: list[CacheEntry] = []
        for i, item in enumerate(raw_records):
            at = f"{where}: records[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not item["key"]:
                raise CacheConfigError(f"{at}: expected an object with a key")
            layer = _int(item.get("layer", -1), at + ".layer")
            if not -1 <= layer < len(layers):
                raise CacheConfigError(f"{at}: layer {layer} is not in the config")
            records.append(CacheEntry(item["key"], layer))
        return cls(tuple(layers), tuple(records))


def _sha256(digest: str, where: str) -> str:
    """Blobs live in sha256-addressed stores: any other algorithm cannot be fetched or checked here."""
    if not digest.startswith("sha256:"):
        raise CacheConfigError(f"{where}: only sha256 digests are supported, not {digest!r}")
    return digest


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CacheConfigError(f"{where}: expected an integer")
    return value
