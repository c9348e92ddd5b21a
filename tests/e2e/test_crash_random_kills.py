"""`kill -9` at random moments: the state directory stays consistent and the next build reuses it.

Real kills, not injected exits: each trial starts a real build (COPY and RUN steps
in runc containers, an image written, on some trials an OCI export that writes
compressed blobs) or a `prune --all`, and SIGKILLs it after a random delay drawn from
a seeded generator, so every run of the suite kills at the same spread of moments
and a failure can be replayed by its seed and trial number. The delays span the
whole build — interpreter start, key computation, container runs, layer commits,
diff_id hashing, blob writes, index transactions — so over the trials the kills land
in every phase (the aggregate assertions below prove that some landed mid-build).
Windows too narrow for a timer (between a blob's rename and its index row) are
covered by the same invariants, checked on states built by hand in
tests/cache/test_fsck_check.py and test_gc_policy.py.

After every kill: `system check` finds no error (only leftovers a prune removes),
and the same build succeeds and reports as cached every step whose record the killed
process had committed. At the end, `--repair` leaves nothing to report and no mount
of the state directory is left behind.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import SHIPYARD, Shipyard, write

SEED = 20240607
"""Kill delays are drawn from this seed, as fractions of a calibrated build's duration."""
TRIALS = 32

DOCKERFILE = """\
FROM busybox:local
COPY a.txt /a.txt
RUN cat /a.txt > /b.txt && echo {n} >> /b.txt
COPY dir /dir
RUN ls -R /dir > /listing && echo {m} > /m
RUN echo {k} > /k && cat /listing > /dev/null
"""


def _keys(root: Path) -> set[str]:
    db = sqlite3.connect(f"file:{root / 'index.db'}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT key FROM cache_keys")}
    finally:
        db.close()


def _project(base: Path, trial: int) -> Path:
    ctx = base / f"ctx{trial % 4}"
    write(ctx / "Dockerfile", DOCKERFILE.format(n=trial // 2, m=trial % 3, k=trial % 5))
    write(ctx / "a.txt", f"a {trial // 3}\n")
    for i in range(3):
        write(ctx / "dir" / f"f{i}.txt", f"file {i} {trial // 4}\n" * 50)
    return ctx


def _start(sy: Shipyard, *args: str) -> subprocess.Popen:
    env = dict(os.environ, SHIPYARD_ROOT=str(sy.root), SHIPYARD_RUNTIME=sy.runtime)
    return subprocess.Popen(
        SHIPYARD + list(args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


def _kill_after(proc: subprocess.Popen, delay: float) -> bool:
    """SIGKILL the shipyard process after `delay` (then anything it left in its group); whether it was still running."""
    try:
        proc.wait(delay)
        return False
    except subprocess.TimeoutExpired:
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # container processes the killed build had started
    except ProcessLookupError:
        pass
    return True


def _check_clean_of_errors(sy: Shipyard, context: str) -> None:
    proc = sy.run("system", "check", check=False)
    assert proc.returncode == 0 and "error:" not in proc.stdout, f"{context}:\n{proc.stdout}\n{proc.stderr}"


def test_random_kills_leave_a_consistent_state_that_the_next_build_reuses(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    sy = runc_shipyard
    rng = random.Random(SEED)
    killed_mid_build = partial_reuse = 0
    # How long an uninterrupted build of this shape takes here: the kills are spread over it.
    started = time.monotonic()
    sy.build(_project(tmp_path / "calibrate", 99), "--output", f"type=oci,dest={tmp_path / 'calibrate.tar'}")
    span = time.monotonic() - started
    for trial in range(TRIALS):
        ctx = _project(tmp_path, trial)
        out = tmp_path / "out.tar"
        build = ["build", "--progress", "plain", "-t", f"crash:{trial % 3}", str(ctx)]
        if trial % 3 == 1:
            build[1:1] = ["--output", f"type=oci,dest={out}"]
        if trial % 8 == 7:
            # kill a prune --all instead, right after a build put records there to remove
            sy.run(*build)
            victim = _start(sy, "prune", "--all")
            _kill_after(victim, rng.uniform(0.05, 0.35) * span)
            _check_clean_of_errors(sy, f"trial {trial} (seed {SEED}): after killing prune")
            sy.build(ctx, "-t", f"crash:{trial % 3}")
            continue
        victim = _start(sy, *build)
        delay = rng.uniform(0.03, 0.9) * span
        was_running = _kill_after(victim, delay)
        _check_clean_of_errors(sy, f"trial {trial} (seed {SEED}, killed after {delay:.3f}s)")
        committed = _keys(sy.root)
        _, meta = sy.build(ctx, "-t", f"crash:{trial % 3}")
        steps = [s for s in meta["shipyard.steps"] if not s["name"].startswith("[1/")]
        for step in steps:
            if step["cache_key"] in committed:
                assert step["cached"], f"trial {trial}: {step['name']} was committed but ran again"
        if was_running:
            killed_mid_build += 1
            if any(s["cached"] for s in steps) and not all(s["cached"] for s in steps):
                partial_reuse += 1
    print(f"killed mid-build: {killed_mid_build}, partial reuse: {partial_reuse}, build span {span:.2f}s")
    # The kills reached the middle of builds, and rebuilds reused the part already committed.
    assert killed_mid_build >= TRIALS // 3
    assert partial_reuse >= 3

    repaired = sy.run("system", "check", "--repair", check=False)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    final = sy.run("system", "check")
    assert final.stdout.strip().splitlines()[-1].endswith("0 errors, 0 kinds of leftovers"), final.stdout
    with open("/proc/self/mountinfo") as f:
        assert str(sy.root) not in f.read()
    assert not list((sy.root / "tmp").iterdir())


@pytest.mark.parametrize("delay", [0.15, 0.3])
def test_a_killed_build_frees_its_step_locks_and_leases(runc_shipyard: Shipyard, tmp_path: Path, delay: float) -> None:
    """A build killed while it holds a step lock and a lease blocks nobody afterwards."""
    sy = runc_shipyard
    ctx = tmp_path / "ctx"
    write(ctx / "Dockerfile", "FROM busybox:local\nRUN sleep 2 && echo slow > /slow\n")
    victim = _start(sy, "build", "-t", "slow", str(ctx))
    time.sleep(delay + 0.3)  # inside the RUN: its step lock and lease are held
    assert _kill_after(victim, 0)
    started = time.monotonic()
    _, meta = sy.build(ctx, "-t", "slow")
    assert time.monotonic() - started < 10
    assert not meta["shipyard.steps"][-1]["cached"]
    prune = sy.run("prune", "--all")
    assert "Total reclaimed space" in prune.stdout
    assert not [p for p in (sy.root / "leases").iterdir() if p.suffix == ".lease"]
