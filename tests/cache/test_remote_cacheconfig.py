"""The cache config format: round trip, chains, and refusal of malformed documents."""

from __future__ import annotations

import json

import pytest

from cache.remote.cacheconfig import (
    CacheConfig,
    CacheConfigError,
    CacheEntry,
    CacheLayer,
)

D = ["sha256:" + c * 64 for c in "0123456789abcdef"]


def _config() -> CacheConfig:
    return CacheConfig(
        layers=(
            CacheLayer(D[0], 0.0, -1, D[1], 10, "application/vnd.oci.image.layer.v1.tar+gzip"),
            CacheLayer(D[2], 1712345678.123456, 0, D[3], 20, "application/vnd.oci.image.layer.v1.tar+gzip"),
            CacheLayer(D[4], 1712345679.5, 0, D[5], 30, "application/vnd.oci.image.layer.v1.tar+gzip"),
        ),
        records=(CacheEntry("sha256:k1", 1), CacheEntry("sha256:k2", 2), CacheEntry("sha256:empty")),
    )


def test_round_trip_is_exact() -> None:
    config = _config()
    data = config.to_json()
    again = CacheConfig.from_json(data)
    assert again == config
    assert again.to_json() == data
    assert again.layers[1].created == 1712345678.123456  # floats survive exactly: history times depend on them


def test_chain_follows_parents_bottom_first() -> None:
    config = _config()
    assert [layer.diff_id for layer in config.chain(2)] == [D[0], D[4]]
    assert config.chain(-1) == []
    assert "layer" not in config.to_dict()["records"][2]  # the empty filesystem


def test_inline_form_has_no_blobs() -> None:
    value = {"layers": [{"diffID": D[0], "parent": -1, "created": 1.5}], "records": [{"key": "k", "layer": 0}]}
    config = CacheConfig.from_value(value, inline=True)
    assert config.layers[0].blob == "" and config.chain(0)[0].diff_id == D[0]
    with pytest.raises(CacheConfigError):
        CacheConfig.from_value(value)  # a non-inline config must name its blobs


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda v: v["layers"][1].update(parent=1), "parent"),  # a cycle
        (lambda v: v["layers"][1].update(parent=5), "parent"),
        (lambda v: v["layers"][0].update(diffID="sha256:xyz"), "digest"),
        (lambda v: v["layers"][0].update(blob="md5:abc"), "digest"),
        (lambda v: v["layers"][0].update(size=-1), "size"),
        (lambda v: v["layers"][0].update(created="yesterday"), "created"),
        (lambda v: v["records"][0].update(layer=3), "not in the config"),
        (lambda v: v["records"].append({"layer": 0}), "key"),
        (lambda v: v.update(layers={}), "lists"),
    ],
)
def test_malformed_documents_are_refused(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    value = json.loads(_config().to_json())
    mutate(value)
    with pytest.raises(CacheConfigError, match=message):
        CacheConfig.from_json(json.dumps(value).encode())


def test_not_json_is_refused() -> None:
    with pytest.raises(CacheConfigError, match="invalid JSON"):
        CacheConfig.from_json(b"{nope")
