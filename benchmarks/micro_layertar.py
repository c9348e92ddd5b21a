"""Micro-benchmark: write_layer_tar and extract_layer against GNU tar on the same trees.

Two shapes:
  small: 10,000 files of 10 KiB (100 MB) in 100 directories;
  large: 100 files of 10 MiB (1 GB) in one directory.
Page cache warm (each tree is read once before timing). Timed, median of N runs:
  write → file         write_layer_tar into a plain file (sendfile path, page cache)
  write → sha256       write_layer_tar into a hashing sink (how a diff_id is computed)
  tar -c | cat         GNU tar --sort=name --format=pax, piped so it cannot skip reads
  extract              extract_layer(mode="apply") of the layer into a fresh dir
  tar -x               GNU tar -x of the same archive into a fresh dir
Prints MB/s and files/s for each.

    python benchmarks/micro_layertar.py [--runs N] [--workdir DIR] [--only small|large]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.fs.extract import extract_layer  # noqa: E402
from engine.fs.layertar import write_layer_tar  # noqa: E402

SHAPES = {
    "small": (100, 100, 10 * 1024),
    "large": (1, 100, 10 * 1024 * 1024),
}


class HashSink(io.RawIOBase):
    def __init__(self) -> None:
        self.hasher = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[no-untyped-def, override]
        self.hasher.update(data)
        return len(data)


def make_tree(root: Path, dirs: int, files_per_dir: int, size: int) -> None:
    block = os.urandom(min(size, 1 << 20))
    for d in range(dirs):
        sub = root / f"d{d:03d}" if dirs > 1 else root
        sub.mkdir(parents=True, exist_ok=True)
        for f in range(files_per_dir):
            with open(sub / f"f{f:04d}.bin", "wb") as fh:
                left = size
                while left:
                    chunk = block[: min(left, len(block))]
                    fh.write(chunk)
                    left -= len(chunk)


def median_time(fn: Callable[[], None], runs: int, before: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(runs):
        if before:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(work: Path, shape: str, runs: int) -> None:
    dirs, per_dir, size = SHAPES[shape]
    src = work / f"src-{shape}"
    if not src.exists():
        make_tree(src, dirs, per_dir, size)
    nfiles = dirs * per_dir
    mbytes = nfiles * size / 1e6
    archive = work / f"{shape}.tar"
    with open(archive, "wb") as out:
        write_layer_tar(str(src), out)  # also warms the page cache
    counter = iter(range(1_000_000))
    dests: list[Path] = []

    def fresh() -> Path:
        path = work / f"dest-{next(counter)}"
        path.mkdir()
        dests.append(path)
        return path

    def to_file() -> None:
        with open(work / "out.tar", "wb") as out:
            write_layer_tar(str(src), out)

    def to_hash() -> None:
        write_layer_tar(str(src), HashSink())  # type: ignore[arg-type]

    def gnu_tar_create() -> None:
        subprocess.run(
            f"tar --sort=name --format=pax --numeric-owner -C {src} -cf - . | cat > /dev/null", shell=True, check=True
        )

    pending: list[Path] = []

    def prepare_dest() -> None:
        subprocess.run(["sync"], check=True)
        pending.append(fresh())

    def extract() -> None:
        with open(archive, "rb") as stream:
            extract_layer(stream, str(pending.pop()), mode="apply")

    def gnu_tar_extract() -> None:
        subprocess.run(["tar", "-C", str(pending.pop()), "-xf", str(archive)], check=True)

    try:
        results = {
            "write -> file": median_time(to_file, runs),
            "write -> sha256": median_time(to_hash, runs),
            "tar -c | cat": median_time(gnu_tar_create, runs),
            "extract (apply)": median_time(extract, runs, prepare_dest),
            "tar -x": median_time(gnu_tar_extract, runs, prepare_dest),
        }
    finally:
        for path in dests:
            shutil.rmtree(path, ignore_errors=True)
    print(f"{shape}: {nfiles} files, {mbytes:.0f} MB, median of {runs} runs")
    for name, t in results.items():
        print(f"  {name:20s} {t:7.3f} s  {nfiles / t:10.0f} files/s  {mbytes / t:8.1f} MB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where to build the trees (default: a temp dir)")
    parser.add_argument("--only", choices=sorted(SHAPES), default=None)
    args = parser.parse_args()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="micro-layertar-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for shape in [args.only] if args.only else ["small", "large"]:
            bench(work, shape, args.runs)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
