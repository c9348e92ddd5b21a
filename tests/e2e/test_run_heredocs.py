"""RUN heredocs built end to end: every form BuildKit accepts, checked by the files they produce."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.e2e.conftest import Shipyard, write

HEREDOCS = """\
FROM busybox:local
ENV GREETING=hi
RUN <<EOF
mkdir -p /out
echo "$GREETING from a script" > /out/script.txt
false
echo "no -e: the script goes on" >> /out/script.txt
EOF
RUN <<-EOF
\techo tabs stripped > /out/tabs.txt
\tEOF
RUN cat <<'EOF' > /out/quoted.txt
$GREETING stays literal
EOF
RUN cat <<EOF > /out/expanded.txt
$GREETING is expanded by the shell
EOF
RUN <<EOF
#!/bin/sh
echo "$0" > /out/shebang.txt
ls -ld "$0" | cut -c1-10 >> /out/shebang.txt
EOF
RUN <<FILE1 cat > /out/file1 && <<FILE2 cat > /out/file2
I am
first
FILE1
I am
second
FILE2
RUN awk '{ print toupper($0) }' <<EOF > /out/stdin.txt
fed as stdin
EOF
RUN 3<<EOF cat /proc/self/fd/3 > /out/fd3.txt
on descriptor three
EOF
"""


def test_heredoc_forms_produce_their_files(shipyard: Shipyard, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    write(ctx / "Dockerfile", HEREDOCS)
    out = tmp_path / "out"
    _, meta = shipyard.build(ctx, "--output", f"type=local,dest={out}")
    files = {p.name: p.read_text() for p in (out / "out").iterdir()}
    assert files == {
        "script.txt": "hi from a script\nno -e: the script goes on\n",
        "tabs.txt": "tabs stripped\n",
        "quoted.txt": "$GREETING stays literal\n",
        "expanded.txt": "hi is expanded by the shell\n",
        "shebang.txt": "/dev/pipes/EOF\n-rwxr-xr-x\n",
        "file1": "I am\nfirst\n",
        "file2": "I am\nsecond\n",
        "stdin.txt": "FED AS STDIN\n",
        "fd3.txt": "on descriptor three\n",
    }
    assert sorted((out / "dev").iterdir()) == []  # /dev/pipes was a mount, not a file of the image
    names = [s["name"] for s in meta["shipyard.steps"]]
    assert "[2/9] RUN <<EOF (mkdir -p /out...)" in names
    assert "[7/9] RUN <<FILE1 cat > /out/file1 && <<FILE2 cat > /out/file2" in names

    config_digest = meta["containerimage.config.digest"].split(":")[1]
    config = json.loads((shipyard.root / "blobs" / "sha256" / config_digest).read_text())
    history = [h["created_by"] for h in config["history"] if "created_by" in h]
    assert "RUN /bin/sh -c /dev/pipes/EOF # buildkit" in history
    assert "RUN /bin/sh -c echo tabs stripped > /out/tabs.txt\n # buildkit" in history
    assert (
        "RUN /bin/sh -c <<FILE1 cat > /out/file1 && <<FILE2 cat > /out/file2\nI am\nfirst\nFILE1\nI am\nsecond\nFILE2 # buildkit"
        in history
    )


def test_heredoc_rebuild_is_cached_and_a_body_edit_is_not(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    write(ctx / "Dockerfile", "FROM busybox:local\nRUN <<EOF\necho one > /v.txt\nEOF\n")
    runc_shipyard.build(ctx)
    _, meta = runc_shipyard.build(ctx)
    assert all(s["cached"] for s in meta["shipyard.steps"])
    write(ctx / "Dockerfile", "FROM busybox:local\nRUN <<EOF\necho two > /v.txt\nEOF\n")
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    _, meta = runc_shipyard.build(ctx, "--output", f"type=local,dest={out}")
    assert not meta["shipyard.steps"][-1]["cached"]
    assert (out / "v.txt").read_text() == "two\n"
