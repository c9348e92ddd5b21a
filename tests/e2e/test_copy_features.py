"""COPY/ADD heredocs and `--link`, checked on the built filesystem, image history and cache behaviour."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.e2e.conftest import Shipyard, steps, write
from tests.helpers import require_root


@pytest.fixture
def sy(tmp_path: Path) -> Shipyard:
    """A state root without images: these builds start FROM scratch and run nothing."""
    require_root()
    return Shipyard(tmp_path / "state", "runc")


def _build(sy: Shipyard, ctx: Path, dockerfile: str, out: Path, *args: str, check: bool = True):
    write(ctx / "Dockerfile", dockerfile)
    return sy.build(ctx, "--output", f"type=local,dest={out}", *args, check=check)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _history(sy: Shipyard, meta: dict) -> list[str]:
    digest = meta["containerimage.config.digest"].split(":")[1]
    config = json.loads((sy.root / "blobs" / "sha256" / digest).read_text())
    return [h.get("created_by", "") for h in config["history"]]


def test_heredocs_become_files(sy: Shipyard, tmp_path: Path) -> None:
    ctx, out = tmp_path / "ctx", tmp_path / "out"
    write(ctx / "plain.txt", "plain\n")
    _, meta = _build(
        sy,
        ctx,
        "FROM scratch\n"
        "ARG NAME=world\n"
        "WORKDIR /w\n"
        "COPY <<EOF greeting\n"
        "hello ${NAME} \"quoted\" 'single'\n"
        "EOF\n"
        "COPY <<one <<'two' /dir/\n"
        "first $NAME\n"
        "one\n"
        "second $NAME\n"
        "two\n"
        "COPY --chmod=755 --chown=7:8 <<-EOT /bin/tool\n"
        "\t#!/bin/sh\n"
        "\techo tabs stripped\n"
        "\tEOT\n"
        "ADD plain.txt <<add /mixed/\n"
        "from add\n"
        "add\n",
        out,
    )
    assert (out / "w" / "greeting").read_text() == "hello world \"quoted\" 'single'\n"
    assert _mode(out / "w" / "greeting") == 0o644
    assert (out / "dir" / "one").read_text() == "first world\n"
    assert (out / "dir" / "two").read_text() == "second $NAME\n"  # quoted delimiter: no expansion
    tool = out / "bin" / "tool"
    assert tool.read_text() == "#!/bin/sh\necho tabs stripped\n"
    assert _mode(tool) == 0o755 and (tool.stat().st_uid, tool.stat().st_gid) == (7, 8)
    assert (out / "mixed" / "plain.txt").read_text() == "plain\n"
    assert (out / "mixed" / "add").read_text() == "from add\n"
    history = _history(sy, meta)
    assert "COPY <<EOF greeting # buildkit" in history
    assert "COPY --chown=7:8 --chmod=755 <<EOT /bin/tool # buildkit" in history
    assert "ADD plain.txt <<add /mixed/ # buildkit" in history

    proc, _ = _build(sy, ctx, "FROM scratch\nCOPY plain.txt <<EOF /not-a-dir\nx\nEOF\n", out, check=False)
    assert proc.returncode != 0 and "Dockerfile:2" in proc.stderr and "must be a directory" in proc.stderr


def test_copy_link_is_rebased_not_rerun(sy: Shipyard, tmp_path: Path) -> None:
    ctx, out = tmp_path / "ctx", tmp_path / "out"
    write(ctx / "base.txt", "base v1\n")
    write(ctx / "app" / "main.txt", "app\n")
    dockerfile = "FROM scratch\nCOPY base.txt /base.txt\nCOPY --link app/ /opt/app/\nCOPY --link --chmod=600 app/main.txt /plain\n"
    _, meta = _build(sy, ctx, dockerfile, out)
    names = list(steps(meta))
    assert names[2] == "[3/4] COPY --link app/ /opt/app/" and names[3] == "[3/4] LINK COPY --link app/ /opt/app/"
    assert not any("LINK COPY --link --chmod" in n for n in names)  # --link with --chmod is a plain copy (BuildKit)
    assert (out / "opt" / "app" / "main.txt").read_text() == "app\n" and _mode(out / "plain") == 0o600

    write(ctx / "base.txt", "base v2\n")
    _, meta = _build(sy, ctx, dockerfile, out)
    cached = steps(meta)
    assert cached["[2/4] COPY base.txt /base.txt"] is False
    assert cached["[3/4] COPY --link app/ /opt/app/"] is True  # its key does not depend on the layers below
    assert cached["[3/4] LINK COPY --link app/ /opt/app/"] is False  # only rebased
    assert (out / "base.txt").read_text() == "base v2\n"
    assert (out / "opt" / "app" / "main.txt").read_text() == "app\n"
    assert _history(sy, meta)[-2] == "COPY app/ /opt/app/ # buildkit"
