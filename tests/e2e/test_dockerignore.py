""".dockerignore end to end: what COPY/ADD can see, which file applies, and what the cache keys on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Shipyard, steps, write
from tests.helpers import require_root


@pytest.fixture
def sy(tmp_path: Path) -> Shipyard:
    """A state root without images: these builds start FROM scratch and run nothing."""
    require_root()
    return Shipyard(tmp_path / "state", "runc")


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    for rel in ("a.txt", "notes.md", "README.md", "debug.log", "src/main.txt", "src/tmp/x.tmp",
                "build/out.bin", "build/keep/important.txt", "docs/deep/y.tmp", "rootonly", "sub/rootonly"):
        write(ctx / rel, rel + "\n")
    write(ctx / ".dockerignore", "# comment\n*.log\n*.md\n!README.md\nbuild\n!build/keep\n**/*.tmp\n/rootonly\nDockerfile\n.dockerignore\n")
    return ctx


def test_excluded_files_are_invisible(sy: Shipyard, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    out = tmp_path / "out"
    write(ctx / "Dockerfile", "FROM scratch\nCOPY . /all/\nCOPY *.md /md/\nCOPY build /b/\n")
    sy.build(ctx, "--output", f"type=local,dest={out}")
    assert _files(out / "all") == [
        "README.md", "a.txt", "build", "build/keep", "build/keep/important.txt",
        "docs", "docs/deep", "src", "src/main.txt", "src/tmp", "sub", "sub/rootonly",
    ]  # Dockerfile and .dockerignore excluded themselves, and the build still read them
    assert _files(out / "md") == ["README.md"]
    assert _files(out / "b") == ["keep", "keep/important.txt"]


def test_excluded_source_is_not_found_and_names_the_file(sy: Shipyard, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    write(ctx / "Dockerfile", "FROM scratch\nCOPY a.txt /\nCOPY debug.log /\n")
    proc, _ = sy.build(ctx, check=False)
    assert proc.returncode != 0
    assert 'Dockerfile:3' in proc.stderr and '"/debug.log": not found (excluded by .dockerignore)' in proc.stderr

    write(ctx / "Dockerfile.dockerignore", "a.txt\n")  # beside the Dockerfile: takes precedence
    proc, _ = sy.build(ctx, check=False)
    assert '"/a.txt": not found (excluded by Dockerfile.dockerignore)' in proc.stderr

    write(tmp_path / "df" / "app.Dockerfile", "FROM scratch\nCOPY debug.log notes.md /x/\n")
    write(tmp_path / "df" / "app.Dockerfile.dockerignore", "notes.md\n")
    out = tmp_path / "out"
    proc, _ = sy.build(ctx, "-f", str(tmp_path / "df" / "app.Dockerfile"), check=False)
    assert '"/notes.md": not found (excluded by app.Dockerfile.dockerignore)' in proc.stderr
    write(tmp_path / "df" / "app.Dockerfile", "FROM scratch\nCOPY debug.log a.txt /x/\n")
    sy.build(ctx, "-f", str(tmp_path / "df" / "app.Dockerfile"), "--output", f"type=local,dest={out}")
    assert _files(out / "x") == ["a.txt", "debug.log"]  # the context's .dockerignore does not apply


def test_ignored_files_are_not_part_of_the_cache_key(sy: Shipyard, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    write(ctx / "Dockerfile", "FROM scratch\nCOPY src /src/\nCOPY . /all/\n")
    sy.build(ctx)
    for rel in ("debug.log", "src/tmp/x.tmp", "build/out.bin", "Dockerfile.bak.log"):
        write(ctx / rel, "edited\n")
    _, meta = sy.build(ctx)
    assert all(steps(meta).values())
    write(ctx / "build" / "keep" / "important.txt", "edited\n")  # re-included: it counts
    _, meta = sy.build(ctx)
    assert steps(meta)["[2/3] COPY src /src/"] and not steps(meta)["[3/3] COPY . /all/"]
    write(ctx / ".dockerignore", "*.log\n")  # new rules: everything it no longer hides appears
    _, meta = sy.build(ctx)
    assert not steps(meta)["[2/3] COPY src /src/"]  # src/tmp/x.tmp appeared
