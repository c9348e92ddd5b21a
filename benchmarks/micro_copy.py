"""Micro-benchmark: engine.fs.copy.copy_into vs `cp -a` on the same trees.

Two shapes, the ones a COPY meets most:
  small: 10,000 files of 10 KiB (100 MB) in 100 directories (a source tree);
  large: 100 files of 10 MiB (1 GB) in one directory (build artifacts).
Each run copies into a fresh destination on the same filesystem (all removed at the
end); the page cache is warm for both tools, dirty data is flushed (`sync`) before
every timed run, outside the timing, and the two tools alternate. Prints files/s and MB/s for both
and the ratio (copy_into time / cp -a time; lower is better, 1.0 = as fast as cp),
for the best run (least disturbed by other load) and the median.

    python benchmarks/micro_copy.py [--runs N] [--workdir DIR] [--only small|large]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.fs.copy import CopyOptions, copy_into
from engine.fs.selection import select_sources

SHAPES = {
    "small": (100, 100, 10 * 1024),
    "large": (1, 100, 10 * 1024 * 1024),
}


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


def timed(fn) -> float:
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(work: Path, shape: str, runs: int) -> None:
    dirs, per_dir, size = SHAPES[shape]
    src = work / f"src-{shape}"
    if not src.exists():
        make_tree(src, dirs, per_dir, size)
    nfiles = dirs * per_dir
    mbytes = nfiles * size / 1e6
    # Fresh destinations, removed only at the end: on ext4, creating inodes right
    # after deleting thousands is several times slower (recently_deleted checks),
    # which would measure the previous run's cleanup instead of the copy.
    counter = iter(range(1_000_000))

    def fresh() -> Path:
        path = work / f"dest-{next(counter)}"
        path.mkdir()
        return path

    def ours() -> None:
        dest_root = fresh()
        sources = select_sources(str(src), "/")
        copy_into(str(src), sources, str(dest_root), "/app/", CopyOptions())

    def cp() -> None:
        dest_root = fresh()
        subprocess.run(["cp", "-a", f"{src}/.", str(dest_root / "app")], check=True)

    results: dict[str, list[float]] = {"copy_into": [], "cp -a": []}
    try:
        for i in range(runs):
            order = (("copy_into", ours), ("cp -a", cp))
            for name, fn in order if i % 2 == 0 else reversed(order):
                results[name].append(timed(fn))
    finally:
        for path in work.glob("dest-*"):
            shutil.rmtree(path, ignore_errors=True)
    print(f"{shape}: {nfiles} files, {mbytes:.0f} MB, {runs} runs (best / median)")
    for name, times in results.items():
        best, med = min(times), statistics.median(times)
        print(
            f"  {name:10s} {best:7.3f} s / {med:7.3f} s  {nfiles / best:8.0f} files/s  {mbytes / best:8.1f} MB/s (best)"
        )
    ratio_best = min(results["copy_into"]) / min(results["cp -a"])
    ratio_med = statistics.median(results["copy_into"]) / statistics.median(results["cp -a"])
    print(f"  ratio copy_into / cp -a = {ratio_best:.2f} (best), {ratio_med:.2f} (median)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", default=None, help="where to build the trees (default: a temp dir)")
    parser.add_argument("--only", choices=sorted(SHAPES), default=None)
    args = parser.parse_args()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="micro-copy-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for shape in [args.only] if args.only else ["small", "large"]:
            bench(work, shape, args.runs)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
