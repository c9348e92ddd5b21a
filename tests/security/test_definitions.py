"""Hostile build definitions (reliability.md §11): cycles, thousands of stages, expansion
bombs and YAML alias bombs fail fast, with a clear error and in bounded memory.

Each case goes through the real CLI (`shipyard build`, `shipyard bake`), measured by
peak RSS and wall time, and fails before anything runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Shipyard, write
from tests.security.helpers import run_measured

MAX_RSS_MIB = 200


def _fails_fast(sy: Shipyard, *args: str, message: str, seconds: float = 5.0) -> str:
    started = time.monotonic()
    status, stderr, rss = run_measured(sy, *args)
    elapsed = time.monotonic() - started
    assert status == 1, stderr
    assert message in stderr and "Traceback" not in stderr, stderr
    assert elapsed < seconds, f"took {elapsed:.1f}s"
    assert rss < MAX_RSS_MIB, f"peak RSS {rss} MiB"
    return stderr


def _dockerfile(tmp_path: Path, name: str, text: str) -> Path:
    ctx = tmp_path / name
    write(ctx / "Dockerfile", text)
    return ctx


def test_dockerfile_bombs_fail_fast_in_bounded_memory(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    sy = runc_shipyard
    build = ("build", "--progress", "plain")
    chained = "FROM busybox:local AS s0\n" + "".join(f"FROM s{i - 1} AS s{i}\nRUN echo {i}\n" for i in range(1, 5000))
    _fails_fast(sy, *build, str(_dockerfile(tmp_path, "stages", chained)), message="Dockerfile:2000: more than 1000 build stages")

    # Each ARG doubles the last: 1 KiB → 1 MiB in ten lines, then a thousand 1 MiB values.
    args = "FROM busybox:local\nARG a0=" + "x" * 1024 + "\n"
    args += "".join(f"ARG a{i}=$a{i - 1}$a{i - 1}\n" for i in range(1, 11))
    args += "".join(f"ARG b{i}=$a10\n" for i in range(1000))
    _fails_fast(sy, *build, str(_dockerfile(tmp_path, "args", args)), message="exceeds the limit of 32 MiB in total")

    exponential = "FROM busybox:local\nARG A=" + "x" * 1024 + "\n" + "".join(f"ARG B{n}=$B{n - 1}$B{n - 1}$B{n - 1}$B{n - 1}\n".replace("$B0", "$A") for n in range(1, 31))
    _fails_fast(sy, *build, str(_dockerfile(tmp_path, "exp", exponential)), message="exceeds 1048576 characters")

    labels = "FROM busybox:local\n" + "".join(f"LABEL k{i}=v\n" for i in range(200_000))
    _fails_fast(sy, *build, str(_dockerfile(tmp_path, "labels", labels)), message="more than 10000 instructions")

    keys = "FROM busybox:local\n" + "".join("LABEL " + " ".join(f"k{i}_{j}=v" for j in range(100)) + "\n" for i in range(20))
    _fails_fast(sy, *build, str(_dockerfile(tmp_path, "keys", keys)), message="more than 1000 LABEL keys in one stage")

    huge = "FROM busybox:local\n" + ("RUN " + "y" * 60_000 + "\n") * 300
    _fails_fast(sy, *build, str(_dockerfile(tmp_path, "huge", huge)), message="larger than the limit of 16 MiB")


@pytest.mark.parametrize(
    "text, message",
    [
        ("FROM busybox:local AS a\nCOPY --from=a / /x\n", "Dockerfile:1: circular dependency detected on stage: a -> a"),
        (
            "FROM busybox:local AS a\nCOPY --from=b / /x\nFROM busybox:local AS b\nCOPY --from=a / /x\n",
            "circular dependency detected on stage: b -> a -> b",
        ),
        ("FROM busybox:local AS a\nRUN --mount=from=a,target=/m true\n", "circular dependency detected on stage: a -> a"),
    ],
)
def test_stage_cycles_are_named_with_their_path(runc_shipyard: Shipyard, tmp_path: Path, text: str, message: str) -> None:
    _fails_fast(runc_shipyard, "build", str(_dockerfile(tmp_path, "cycle", text)), message=message)


def test_build_file_bombs_and_cycles_fail_fast(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    sy = runc_shipyard
    laughs = ["x-a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]"]
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        laughs.append(f"x-{level}: &{level} [" + ",".join(f"*{previous}" for _ in range(9)) + "]")
    bomb = write(tmp_path / "bomb" / "build.yaml", "version: 1\n" + "\n".join(laughs) + "\ntargets:\n  t:\n    context: .\n")
    _fails_fast(sy, "bake", "-f", str(bomb), "--print", message="more than 200000 nodes once aliases are expanded", seconds=3.0)
    cycle = write(
        tmp_path / "cycle" / "build.yaml",
        "version: 1\ntargets:\n  a:\n    context: .\n    inherits: [b]\n  b:\n    context: .\n    inherits: [a]\n",
    )
    _fails_fast(sy, "bake", "-f", str(cycle), "--print", message="inherits cycle: ", seconds=3.0)
