"""Ctrl-C and SIGTERM during a RUN (reliability.md §10), with real signals to a real build.

The build is interrupted once its step's container is running; it must exit 130
(SIGINT) or 143 (SIGTERM) promptly, leave no container process, mount, staging
directory or lock behind, and record no cache entry for the step: the next build
runs it again. The step's cache mount tells the second run to finish at once, and
cache mounts are not part of the key, so a cache hit there could only be a record
of the interrupted step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import SHIPYARD, Shipyard, steps, write
from tests.helpers import processes_with
from tests.security.helpers import leftovers

TOKEN = "31337"


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_stops_cleans_up_and_is_not_cached(shipyard: Shipyard, tmp_path: Path, signum: int, status: int) -> None:
    ctx = tmp_path / "ctx"
    write(
        ctx / "Dockerfile",
        "FROM busybox:local\n"
        "RUN --mount=type=cache,id=ctl,target=/ctl sh -c "
        f"'echo step-started; if [ ! -f /ctl/fast ]; then touch /ctl/fast; sleep {TOKEN}; fi; echo done > /result'\n",
    )
    env = dict(os.environ, SHIPYARD_ROOT=str(shipyard.root), SHIPYARD_RUNTIME=shipyard.runtime)
    proc = subprocess.Popen(
        SHIPYARD + ["build", "--progress", "plain", str(ctx)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    deadline = time.monotonic() + 30
    for line in proc.stderr:
        seen.append(line)
        if "step-started" in line and not line.rstrip().endswith("'"):
            break
        assert time.monotonic() < deadline, "".join(seen)
    while not processes_with(TOKEN):  # the sleep itself is running in the container
        assert time.monotonic() < deadline, "".join(seen)
        time.sleep(0.02)
    sent = time.monotonic()
    proc.send_signal(signum)
    rest = proc.stderr.read()
    code = proc.wait(timeout=30)
    elapsed = time.monotonic() - sent
    assert code == status, "".join(seen) + rest
    assert elapsed < 12, f"took {elapsed:.1f}s to stop"
    assert "Traceback" not in rest and "cancelled" in rest.lower() or "interrupted" in rest.lower(), rest
    assert processes_with(TOKEN) == [], "the step's process outlived the build"
    assert leftovers(shipyard.root) == []

    again, meta = shipyard.build(ctx)  # locks are free; the step runs (fast) instead of hitting a record
    assert [cached for name, cached in steps(meta).items() if "RUN" in name] == [False], steps(meta)
