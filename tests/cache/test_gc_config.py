"""The `[gc]` config section and the size/duration syntax prune flags share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cache.gcconfig import (
    GcConfigError,
    load_gc_config,
    parse_duration,
    parse_gc_config,
    parse_size,
    parse_until,
)


def test_sizes() -> None:
    assert parse_size("512") == 512
    assert parse_size("10KB") == 10 * 1024
    assert parse_size("1.5g") == int(1.5 * (1 << 30))
    assert parse_size("2MiB") == 2 << 20
    assert parse_size(4096) == 4096
    for bad in ("ten", "-1", "5 parsecs", ""):
        with pytest.raises(GcConfigError):
            parse_size(bad)


def test_durations_and_until() -> None:
    assert parse_duration("90m") == 5400
    assert parse_duration("1h30m") == 5400
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("45") == 45
    with pytest.raises(GcConfigError):
        parse_duration("3 fortnights")
    assert parse_until("24h") == 86400
    assert parse_until("2024-01-01T00:00:00Z", now=1704067200 + 60) == 60
    with pytest.raises(GcConfigError):
        parse_until("yesterday")


def test_gc_section() -> None:
    config = parse_gc_config('[gc]\nkeep-bytes = "2GB"\nkeep-duration = "48h"\n[registry."docker.io"]\nmirrors = ["m"]\n')
    assert config.keep_bytes == 2 << 30 and config.keep_duration == 48 * 3600 and config.enabled
    assert parse_gc_config("[gc]\nenabled = false\n").enabled is False
    percent = parse_gc_config('[gc]\nkeep-bytes = "25%"\n')
    assert percent.keep_bytes is None and percent.keep_percent == 25
    default = parse_gc_config("")
    assert default.keep_percent == 10 and default.keep_duration is None
    st = os.statvfs("/")
    assert default.limit_bytes("/") == int(st.f_blocks * st.f_frsize / 10)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[gc]\nkeep-byte = 1\n", "unknown key"),
        ("[gc]\nenabled = 'yes'\n", "expected true or false"),
        ('[gc]\nkeep-bytes = "lots"\n', "invalid size"),
        ('[gc]\nkeep-bytes = "150%"\n', "between 0% and 100%"),
        ("gc = 3\n", "expected a table"),
        ("[gc\n", "invalid TOML"),
    ],
)
def test_bad_sections_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(GcConfigError, match=message):
        parse_gc_config(text)


def test_the_file_is_the_registry_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[gc]\nkeep-bytes = "1MB"\n')
    monkeypatch.setenv("SHIPYARD_CONFIG", str(path))
    assert load_gc_config().keep_bytes == 1 << 20
    monkeypatch.setenv("SHIPYARD_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(GcConfigError, match="does not exist"):
        load_gc_config()
