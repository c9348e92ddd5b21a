"""Checks and inspection from the command line: `build --check`, `--call=outline|targets`,
`dockerfile parse --json`, warnings in the metadata file, and `check=error=true`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Shipyard, write

LINTED = """\
# app is the application image
FROM example.invalid/no-such-image:1 AS App
# VERSION picks the release
ARG VERSION=2
COPY $SRCDIR /app
CMD run --fast
"""


@pytest.fixture
def bare(tmp_path: Path) -> Shipyard:
    """A state root with no image in it: --call never needs the base image."""
    return Shipyard(tmp_path / "state")


@pytest.fixture
def linted(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    write(ctx / "Dockerfile", LINTED)
    return ctx


def _no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


def test_check_reports_warnings_and_exits_1(bare: Shipyard, linted: Path) -> None:
    proc = bare.run("build", "--check", str(linted), check=False)
    _no_traceback(proc)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("Check complete, 3 warnings have been found!\n")
    assert "WARNING: StageNameCasing - https://docs.docker.com/go/dockerfile/rule/stage-name-casing/" in proc.stdout
    assert "Usage of undefined variable '$SRCDIR'" in proc.stdout
    assert "   5 | >>> COPY $SRCDIR /app" in proc.stdout
    assert "JSONArgsRecommended" in proc.stdout

    same = bare.run("build", "--call=check", str(linted), check=False)
    assert (same.returncode, same.stdout) == (1, proc.stdout)

    write(linted / "Dockerfile", 'FROM example.invalid/x AS app\nCMD ["run"]\n')
    clean = bare.run("build", "--check", str(linted))
    assert clean.stdout == "Check complete, no warnings found.\n"


def test_check_options_from_build_arg_and_error_true(bare: Shipyard, linted: Path) -> None:
    skip = bare.run(
        "build", "--check", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all", str(linted), check=False
    )
    assert (skip.returncode, skip.stdout) == (0, "Check complete, no warnings found.\n")

    write(linted / "Dockerfile", "# check=error=true;skip=StageNameCasing,JSONArgsRecommended\n" + LINTED)
    failed = bare.run("build", "--check", str(linted), check=False)
    _no_traceback(failed)
    assert failed.returncode == 1
    assert failed.stdout.startswith("Check complete, 1 warning has been found!\n")
    assert failed.stderr.strip() == "ERROR: lint violation found for rules: UndefinedVar"

    write(linted / "Dockerfile", "# check=bogus\nFROM scratch\n")
    bad = bare.run("build", "--check", str(linted), check=False)
    _no_traceback(bad)
    assert bad.returncode == 1
    assert bad.stderr.strip() == 'ERROR: Dockerfile: failed to parse check options: invalid check option "bogus"'


def test_copy_ignored_file_reads_the_dockerignore(bare: Shipyard, tmp_path: Path) -> None:
    ctx = tmp_path / "ignored"
    write(ctx / ".dockerignore", "secrets/\n*.log\n")
    write(ctx / "Dockerfile", "# check=experimental=CopyIgnoredFile\nFROM scratch\nCOPY secrets/key app.log ok.txt /\n")
    proc = bare.run("build", "--check", str(ctx), check=False)
    assert proc.returncode == 1, proc.stderr
    assert 'Attempting to Copy file "secrets/key" that is excluded by .dockerignore' in proc.stdout
    assert 'Attempting to Copy file "app.log" that is excluded by .dockerignore' in proc.stdout
    assert '"ok.txt"' not in proc.stdout
    # a Dockerfile-specific ignore file wins over .dockerignore
    write(ctx / "Dockerfile.dockerignore", "ok.txt\n")
    proc = bare.run("build", "--check", str(ctx), check=False)
    assert '"ok.txt"' in proc.stdout and '"app.log"' not in proc.stdout


def test_outline_and_targets_without_the_base_image(bare: Shipyard, linted: Path) -> None:
    outline = bare.run("build", "--call=outline", str(linted))
    assert outline.stdout == (
        "TARGET:      app\n"
        "DESCRIPTION: is the application image\n"
        "\n"
        "BUILD ARG   VALUE   DESCRIPTION\n"
        "VERSION     2       picks the release\n"
        "\n"
    )
    targets = bare.run("build", "--call=targets", str(linted))
    assert targets.stdout == "TARGET          DESCRIPTION\napp (default)   is the application image\n"


def test_dockerfile_parse_json_from_a_file_and_stdin(bare: Shipyard, linted: Path) -> None:
    from_file = json.loads(bare.run("dockerfile", "parse", "--json", str(linted / "Dockerfile")).stdout)
    assert [(i["keyword"], i["start_line"]) for i in from_file["instructions"]] == [
        ("FROM", 2),
        ("ARG", 4),
        ("COPY", 5),
        ("CMD", 6),
    ]
    assert from_file["stages"][0]["name"] == "app"
    from_stdin = bare.run("dockerfile", "parse", "--json", "-", input=LINTED)
    assert json.loads(from_stdin.stdout)["instructions"] == from_file["instructions"]

    plain = bare.run("dockerfile", "parse", str(linted / "Dockerfile"))
    assert "  5        COPY $SRCDIR /app" in plain.stdout

    bad = bare.run("dockerfile", "parse", "-", input="FROM scratch\nCOPPY a b\n", check=False)
    _no_traceback(bad)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "ERROR: Dockerfile:2: unknown instruction: COPPY (did you mean COPY?)"


def test_build_warnings_reach_progress_and_metadata(runc_shipyard: Shipyard, tmp_path: Path, busybox_tar: Path) -> None:
    # an image whose config defines ENV FROMIMAGE: using it is not an undefined variable
    runc_shipyard.run("import", str(busybox_tar), "-t", "busybox:withenv", "-c", "ENV FROMIMAGE=/seed.txt")
    ctx = tmp_path / "build"
    write(ctx / "seed.txt", "seed\n")
    write(ctx / "Dockerfile", "FROM busybox:withenv\nCOPY $FROMIMAGE /seed.txt\nWORKDIR app\nMAINTAINER me\n")
    proc, meta = runc_shipyard.build(ctx)
    assert "WARN: WorkdirRelativePath: Relative workdir \"app\" can have unexpected results" in proc.stderr
    assert [(w["rule"], w["location"]) for w in meta["shipyard.warnings"]] == [
        ("WorkdirRelativePath", "Dockerfile:3"),
        ("MaintainerDeprecated", "Dockerfile:4"),
    ]
    assert meta["shipyard.warnings"][1]["url"] == "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/"

    write(ctx / "Dockerfile", "# check=error=true\nFROM busybox:withenv\nCOPY $MISSING /x\n")
    failed, meta = runc_shipyard.build(ctx, check=False)
    _no_traceback(failed)
    assert failed.returncode == 1
    assert "WARN: UndefinedVar: Usage of undefined variable '$MISSING' (line 3)" in failed.stderr
    assert failed.stderr.rstrip().endswith("ERROR: lint violation found for rules: UndefinedVar")
    assert meta == {}
