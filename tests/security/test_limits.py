"""Decompression bombs and oversized layers stop at the configured limit (reliability.md §5).

The limit comes from the `[limits]` table of the config file (`$SHIPYARD_CONFIG`);
each entry point that unpacks untrusted archives — `ADD`, `import`, `load` — is held
to it with a clear error naming the limit, in bounded memory, leaving nothing behind.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile
import zlib
from pathlib import Path

import pytest

from engine.limits import Limits, LimitsConfigError, load_limits, parse_limits, parse_size
from engine.oci.compress import CompressionError, DecompressionLimitError, decompress_stream
from tests.e2e.conftest import Shipyard, write
from tests.security.helpers import file, leftovers, oci_layout, run_measured, tar_bytes, tar_directory

LIMIT = 4 << 20
BOMB_SIZE = 48 << 20


def _bomb_tar() -> bytes:
    """A tar with one file of BOMB_SIZE zeros, built without holding it twice."""
    info = tarfile.TarInfo("zeros")
    info.size = BOMB_SIZE
    info.mtime = 1_650_000_000
    header = info.tobuf(tarfile.PAX_FORMAT)
    return header + bytes(BOMB_SIZE) + bytes(1024)


def _compress(kind: str, data: bytes) -> bytes:
    if kind == "gzip":
        return gzip.compress(data, compresslevel=1, mtime=0)
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=1).compress(data)
    if kind == "xz":
        return lzma.compress(data, preset=0)
    return bz2.compress(data, 1)


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    plain = _bomb_tar()
    return {kind: _compress(kind, plain) for kind in ("gzip", "zstd", "xz", "bzip2")}


@pytest.fixture
def limited(tmp_path: Path) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f'[registry."127.0.0.1:5000"]\nhttp = true\n\n[limits]\nlayer-size = "{LIMIT >> 20}MiB"\nlayer-entries = 1000\narchive-size = "{LIMIT >> 20}MiB"\n')
    return config


# --------------------------------------------------------------------------- config


def test_limits_come_from_the_config_file(tmp_path: Path, limited: Path) -> None:
    limits = load_limits(limited)
    assert (limits.layer_bytes, limits.layer_entries, limits.archive_bytes) == (LIMIT, 1000, LIMIT)
    assert limits.source == str(limited)
    assert parse_limits({}) == Limits()
    assert [parse_size(v, "x") for v in (10, "10", "2k", "3MiB", "1 GB", "1g")] == [10, 10, 2048, 3 << 20, 1 << 30, 1 << 30]
    for bad, message in [
        ({"limits": {"layer-szie": 1}}, "limits.layer-szie: unknown key"),
        ({"limits": {"layer-size": "lots"}}, "invalid size 'lots'"),
        ({"limits": {"layer-size": 0}}, "must be positive"),
        ({"limits": {"layer-entries": "10"}}, "positive integer"),
        ({"limits": 3}, "expected a table"),
    ]:
        with pytest.raises(LimitsConfigError, match=message):
            parse_limits(bad, "c.toml")
    with pytest.raises(LimitsConfigError, match="does not exist"):
        load_limits(tmp_path / "missing.toml")


# --------------------------------------------------------------------------- the decoders


@pytest.mark.parametrize("kind", ["gzip", "zstd", "xz", "bzip2"])
def test_every_decoder_stops_at_the_limit(bombs: dict[str, bytes], kind: str) -> None:
    stream = decompress_stream(io.BytesIO(bombs[kind]), max_bytes=LIMIT)
    read = 0
    with pytest.raises(DecompressionLimitError, match=f"exceeds the limit of {LIMIT} bytes"):
        while chunk := stream.read(1 << 20):
            read += len(chunk)
    assert read <= LIMIT + (1 << 20)
    stream.close()


def test_decoders_refuse_huge_windows_instead_of_allocating_them() -> None:
    import zstandard

    # A zstd frame whose header asks for a 2 GiB window, and an xz stream whose
    # dictionary is 1.5 GiB: decoders bound their memory instead of allocating that.
    params = zstandard.ZstdCompressionParameters.from_level(1, window_log=31, write_content_size=False)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(out, closefd=False) as writer:
        writer.write(b"x" * 1000)
    zstd_frame = out.getvalue()
    xz_stream = bytearray(lzma.compress(b"x" * 1000, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20}]))
    header = xz_stream[12 : 12 + (xz_stream[12] + 1) * 4]  # the block header, CRC32 last
    header[header.index(b"\x21\x01") + 2] = 39  # LZMA2 dictionary size: 3 GiB
    header[-4:] = zlib.crc32(bytes(header[:-4])).to_bytes(4, "little")
    xz_stream[12 : 12 + len(header)] = header
    assert lzma.decompress(bytes(xz_stream)) == b"x" * 1000  # valid: an unlimited decoder reads it
    for data in (zstd_frame, xz_stream):
        with pytest.raises(CompressionError, match="(?i)memory"):
            decompress_stream(io.BytesIO(bytes(data))).read()


# --------------------------------------------------------------------------- ADD, import, load




def _state_bytes(root: Path) -> int:
    total = 0
    for current, _, files in os.walk(root):
        for name in files:
            total += os.lstat(os.path.join(current, name)).st_size
    return total


def test_add_bombs_stop_at_the_configured_limit(runc_shipyard: Shipyard, tmp_path: Path, limited: Path, bombs: dict[str, bytes]) -> None:
    sy = runc_shipyard
    sy.env = {"SHIPYARD_CONFIG": str(limited)}
    before = _state_bytes(sy.root)
    for kind in ("gzip", "zstd", "xz"):
        ctx = tmp_path / f"ctx-{kind}"
        ctx.mkdir()
        (ctx / "bomb.tar.x").write_bytes(bombs[kind])
        write(ctx / "Dockerfile", "FROM busybox:local\nADD bomb.tar.x /b/\nRUN echo never\n")
        status, stderr, rss = run_measured(sy, "build", "--progress", "plain", str(ctx))
        assert status == 1, stderr
        assert "Dockerfile:2" in stderr and "ADD bomb.tar.x: " in stderr and f"limit of {LIMIT} bytes" in stderr, stderr
        assert f"raise it in the [limits] table of {limited}" in stderr and "Traceback" not in stderr
        assert "never" not in stderr.split("ERROR")[0].replace("RUN echo never", "")
        assert rss < 250, f"{kind}: peak RSS {rss} MiB"
    assert _state_bytes(sy.root) - before < LIMIT  # the partial extraction was discarded
    assert leftovers(sy.root) == []


def test_import_and_load_stop_at_the_configured_limit(runc_shipyard: Shipyard, tmp_path: Path, limited: Path, bombs: dict[str, bytes]) -> None:
    sy = runc_shipyard
    sy.env = {"SHIPYARD_CONFIG": str(limited)}
    bomb = tmp_path / "bomb.tar.zst"
    bomb.write_bytes(bombs["zstd"])
    status, stderr, rss = run_measured(sy, "import", str(bomb), "bomb:1")
    assert status == 1 and f"import {bomb}: " in stderr and f"limit of {LIMIT} bytes" in stderr, stderr
    assert rss < 250

    many = tmp_path / "many.tar"
    many.write_bytes(tar_bytes([file(f"f{i}") for i in range(1500)]))
    proc = sy.run("import", str(many), "many:1", check=False)
    assert proc.returncode == 1 and "more than 1000 entries" in proc.stderr, proc.stderr

    # load: an OCI archive holding a bomb layer (gzip, as images ship them), and a
    # compressed archive that is itself a bomb.
    plain = _bomb_tar()
    layout = oci_layout(tmp_path / "layout", [plain], compress="gzip", name="bomb:2")
    archive = tar_directory(layout, tmp_path / "layout.tar")
    (tmp_path / "big.toml").write_text('[limits]\nlayer-size = "4MiB"\n')  # the archive itself may be large
    sy.env = {"SHIPYARD_CONFIG": str(tmp_path / "big.toml")}
    status, stderr, rss = run_measured(sy, "load", "-i", str(archive))
    assert status == 1 and "exceeds the limit of 4194304 bytes" in stderr and "layer sha256:" in stderr, stderr
    sy.env = {"SHIPYARD_CONFIG": str(limited)}
    compressed = tmp_path / "layout.tar.gz"
    compressed.write_bytes(gzip.compress(archive.read_bytes(), compresslevel=1))
    status, stderr, rss = run_measured(sy, "load", "-i", str(compressed))
    assert status == 1 and "exceeds the limit" in stderr and "[limits]" in stderr, stderr
    assert len(sy.run("images", "-q").stdout.split()) == 1  # busybox only
    assert list((sy.root / "tmp").iterdir()) == []
    assert leftovers(sy.root) == []
