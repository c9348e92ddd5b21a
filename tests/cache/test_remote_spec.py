"""`--cache-to` / `--cache-from` parsing (buildx's CSV forms)."""

from __future__ import annotations

import pytest

from cache.remote.spec import CacheExport, CacheImport, parse_cache_from, parse_cache_to
from engine.errors import UsageError


def test_cache_to_forms() -> None:
    assert parse_cache_to("type=registry,ref=r.example/x:cache,mode=max") == CacheExport("registry", ref="r.example/x:cache", mode="max")
    assert parse_cache_to("type=local,dest=/c") == CacheExport("local", dest="/c", mode="min", tag="latest")
    assert parse_cache_to("type=local,dest=/c,tag=v2,compression=uncompressed,ignore-error=true") == CacheExport(
        "local", dest="/c", tag="v2", compression="uncompressed", ignore_error=True
    )
    assert parse_cache_to("type=inline") == CacheExport("inline")
    assert parse_cache_to("type=registry,ref=x,image-manifest=true,oci-mediatypes=true").ref == "x"


def test_cache_from_forms() -> None:
    assert parse_cache_from("r.example/x:cache") == CacheImport("registry", ref="r.example/x:cache")
    assert parse_cache_from("type=registry,ref=r.example/x:cache") == CacheImport("registry", ref="r.example/x:cache")
    assert parse_cache_from("type=local,src=/c,tag=v2") == CacheImport("local", src="/c", tag="v2")
    assert parse_cache_from("docker-image://app:1") == CacheImport("image", ref="app:1")
    assert parse_cache_from("type=image,ref=app:1") == CacheImport("image", ref="app:1")


@pytest.mark.parametrize(
    "text, message",
    [
        ("type=inline,mode=max", "mode=max"),
        ("type=registry", "ref="),
        ("type=local", "dest="),
        ("type=local,dest=/c,mode=all", "min or max"),
        ("type=local,dest=/c,compression=lz4", "compression"),
        ("type=registry,ref=x,image-manifest=false", "image-manifest=true"),
        ("type=registry,ref=x,bogus=1", "unknown option 'bogus'"),
        ("type=gha", "type must be"),
        ("type=local,dest", "not key=value"),
    ],
)
def test_cache_to_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_cache_to(text)


@pytest.mark.parametrize(
    "text, message",
    [
        ("type=local", "src="),
        ("type=local,src=/c,tag=a,digest=sha256:x", "not both"),
        ("type=registry,ref=", "ref="),
        ("type=s3,bucket=b", "type must be"),
    ],
)
def test_cache_from_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_cache_from(text)
