"""RUN --mount of every type, --network and --security, built end to end with real containers.

Each test builds a Dockerfile and asserts on what the step saw (files it wrote into
the image or its output) and on the image afterwards: mounts leave nothing in a layer,
cache mounts persist between builds, secrets never reach a layer, the history or a
log, and the cache key follows the content a bind mount shows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.e2e.conftest import SHIPYARD, Shipyard, steps, write


def _config(sy: Shipyard, meta: dict) -> dict:
    digest = meta["containerimage.config.digest"].split(":")[1]
    return json.loads((sy.root / "blobs" / "sha256" / digest).read_text())


def _build(sy: Shipyard, ctx: Path, *args: str, check: bool = True) -> tuple[subprocess.CompletedProcess, dict, Path]:
    out = ctx.parent / f"{ctx.name}-out"
    shutil.rmtree(out, ignore_errors=True)
    proc, meta = sy.build(ctx, "--output", f"type=local,dest={out}", *args, check=check)
    return proc, meta, out


def _step(meta: dict, prefix: str) -> bool:
    """Whether the one step whose name starts with `prefix` was cached."""
    (cached,) = [c for name, c in steps(meta).items() if name.startswith(prefix)]
    return cached


def _files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for current, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(current, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as handle:
                    if needle in handle.read():
                        hits.append(path)
            except OSError:
                continue
    return hits


# --------------------------------------------------------------------------- bind


BIND = """\
FROM busybox:local AS other
RUN mkdir -p /data/sub && echo from-other > /data/sub/o.txt

FROM busybox:local
WORKDIR /work
RUN --mount=type=bind,source=src,target=s cat s/a.txt > /from-context.txt && ls -a s > /listing.txt
RUN --mount=type=bind,from=other,source=/data/sub,target=/o cat /o/o.txt > /from-stage.txt
RUN --mount=type=bind,target=/rw,rw echo scribble > /rw/src/a.txt && touch /rw/new && cat /rw/src/a.txt > /rw-saw.txt
RUN --mount=type=bind,target=/ro sh -c 'touch /ro/x 2>/dev/null && echo writable > /ro-result.txt || echo read-only > /ro-result.txt'
RUN --mount=type=bind,source=src/a.txt,target=/one.txt,rw sh -c 'echo changed > /one.txt; cat /one.txt > /one-saw.txt'
"""


def test_bind_mounts_read_context_and_stages_and_rw_writes_vanish(shipyard: Shipyard, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    write(ctx / "Dockerfile", BIND)
    write(ctx / "src" / "a.txt", "hello from context\n")
    _, _, out = _build(shipyard, ctx)
    assert (out / "from-context.txt").read_text() == "hello from context\n"
    assert (out / "listing.txt").read_text().split() == [".", "..", "a.txt"]
    assert (out / "from-stage.txt").read_text() == "from-other\n"
    assert (out / "rw-saw.txt").read_text() == "scribble\n"
    assert (out / "ro-result.txt").read_text() == "read-only\n"
    assert (out / "one-saw.txt").read_text() == "changed\n"
    # rw writes are discarded: neither the context nor the image has them
    assert (ctx / "src" / "a.txt").read_text() == "hello from context\n"
    assert not (ctx / "new").exists()
    # mountpoints leave no trace in the image (the WORKDIR itself stays)
    for gone in ("rw", "ro", "o", "one.txt", "work/s"):
        assert not (out / gone).exists(), gone
    assert (out / "work").is_dir()
    assert not any(name.startswith("run-") for name in os.listdir(shipyard.root / "mounts"))


def test_bind_mount_content_is_part_of_the_cache_key(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    write(
        ctx / "Dockerfile",
        "FROM busybox:local AS gen\n"
        "ARG V=1\n"
        "RUN mkdir /g && echo same > /g/f && echo $V > /g/v\n"
        "FROM busybox:local\n"
        "RUN --mount=source=app,target=/app cat /app/main.txt > /main.txt\n"
        "RUN --mount=from=gen,source=/g/f,target=/f cat /f > /gen.txt\n",
    )
    write(ctx / "app" / "main.txt", "v1\n")
    write(ctx / "other.txt", "unrelated\n")
    run_app = "[stage-1 2/3] RUN --mount=source=app,target=/app cat /app/main.txt > /main.txt"
    run_gen = "[stage-1 3/3] RUN --mount=from=gen,source=/g/f,target=/f cat /f > /gen.txt"
    _, first, _ = _build(runc_shipyard, ctx)
    assert not steps(first)[run_app]

    (ctx / "other.txt").write_text("edited, but nothing mounts it\n")
    _, meta, _ = _build(runc_shipyard, ctx)
    assert steps(meta)[run_app] and steps(meta)[run_gen]

    (ctx / "app" / "main.txt").write_text("v2\n")
    _, meta, out = _build(runc_shipyard, ctx)
    assert not steps(meta)[run_app]
    assert (out / "main.txt").read_text() == "v2\n"

    # the stage reruns (new ARG) but /g/f, the only file mounted, is unchanged: a hit
    _, meta, _ = _build(runc_shipyard, ctx, "--build-arg", "V=2")
    assert not _step(meta, "[gen 2/2] RUN mkdir /g")
    assert steps(meta)[run_gen]


# --------------------------------------------------------------------------- cache


CACHE = """\
FROM busybox:local AS seed
RUN mkdir -p /data && echo seeded > /data/s.txt

FROM busybox:local
ARG RUN_ID
RUN --mount=type=cache,id=seeded,from=seed,source=/data,target=/s sh -c 'cat /s/s.txt > /seeded.txt; echo "$RUN_ID" >> /s/s.txt'
RUN --mount=type=cache,target=/var/cache/app sh -c 'echo "$RUN_ID" >> /var/cache/app/log; cat /var/cache/app/log > /seen.txt'
RUN --mount=type=cache,id=owned,target=/owned,uid=1000,gid=1001,mode=0750 stat -c '%u:%g:%a' /owned > /owned.txt
RUN --mount=type=cache,target=/c2,sharing=private,id=p sh -c 'ls /c2 > /private.txt; touch /c2/mark'
RUN --mount=type=cache,id=twice,target=/a,sharing=locked --mount=type=cache,id=twice,target=/b sh -c 'touch /a/x; ls /b > /twice.txt'
"""


def test_cache_mount_persists_across_builds_and_stays_out_of_the_image(shipyard: Shipyard, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    write(ctx / "Dockerfile", CACHE)
    _, _, out = _build(shipyard, ctx, "--build-arg", "RUN_ID=first")
    assert (out / "seen.txt").read_text() == "first\n"
    assert (out / "seeded.txt").read_text() == "seeded\n"
    assert (out / "owned.txt").read_text() == "1000:1001:750\n"
    assert (out / "private.txt").read_text() == ""
    assert (out / "twice.txt").read_text() == "x\n"  # one cache mounted twice in one step: one directory
    _, meta, out = _build(shipyard, ctx, "--build-arg", "RUN_ID=second")
    assert (out / "seen.txt").read_text() == "first\nsecond\n"
    assert (out / "seeded.txt").read_text() == "seeded\nfirst\n"  # seeded once, then kept
    assert not (out / "s").exists()
    assert (out / "private.txt").read_text() == "mark\n"  # one user at a time: the same instance again
    assert not (out / "var" / "cache" / "app").exists()
    assert not (out / "owned").exists()
    # cache content is not part of the key: an identical rebuild is all cached
    _, meta, _ = _build(shipyard, ctx, "--build-arg", "RUN_ID=second")
    assert all(steps(meta).values())


def test_cache_mount_sharing_locked_serializes_concurrent_builds(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    write(
        ctx / "Dockerfile",
        "FROM busybox:local\n"
        "ARG N\n"
        "RUN --mount=type=cache,id=shared-lock,target=/c,sharing=locked sh -c '"
        'echo "start $N" >> /c/log; sleep 1; echo "end $N" >> /c/log\'\n'
        "RUN --mount=type=cache,id=shared-lock,target=/c cat /c/log > /log.txt\n",
    )
    _build(runc_shipyard, ctx, "--build-arg", "N=0")  # the runtime probe, done once before the race
    env = dict(os.environ, SHIPYARD_ROOT=str(runc_shipyard.root), SHIPYARD_RUNTIME="runc")
    procs = [
        subprocess.Popen(
            [*SHIPYARD, "build", "--progress", "plain", "--build-arg", f"N={n}", str(ctx)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for n in (1, 2)
    ]  # fmt: skip
    started = time.monotonic()
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert time.monotonic() - started >= 2.0, "the two locked steps overlapped"
    _, _, out = _build(runc_shipyard, ctx, "--build-arg", "N=3")
    lines = (out / "log.txt").read_text().splitlines()
    assert len(lines) == 8
    for first, second in zip(lines[0::2], lines[1::2]):  # strictly start/end pairs, never interleaved
        assert first.startswith("start ") and second == "end " + first.split()[1], lines


def test_cache_mount_source_symlink_stays_inside_the_cache(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    """CVE-2024-23651 shape: a subpath a step turned into a symlink to a host path."""
    host = tmp_path / "host"
    write(host / "secret.txt", "host file\n")
    ctx = tmp_path / "ctx"
    write(
        ctx / "Dockerfile",
        "FROM busybox:local AS prep\n"
        f"RUN --mount=type=cache,id=evil,target=/c sh -c 'rm -rf /c/sub; ln -s {host} /c/sub; ln -s / /c/root'\n"
        "FROM busybox:local\n"
        "COPY --from=prep /etc/passwd /dep\n"
        "RUN --mount=type=cache,id=evil,source=sub,target=/x ls -a /x > /sub.txt\n"
        "RUN --mount=type=cache,id=evil,source=root,target=/y ls -a /y > /root.txt\n",
    )
    _, _, out = _build(runc_shipyard, ctx)
    assert "secret.txt" not in (out / "sub.txt").read_text()
    root_listing = (out / "root.txt").read_text().split()
    assert "sub" in root_listing and "bin" not in root_listing  # "/" means the cache's own root
    assert (host / "secret.txt").read_text() == "host file\n"


# --------------------------------------------------------------------------- tmpfs


def test_tmpfs_mount_is_empty_sized_and_not_persisted(shipyard: Shipyard, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    write(
        ctx / "Dockerfile",
        "FROM busybox:local\n"
        "RUN mkdir -p /t && echo underneath > /t/below\n"
        "RUN --mount=type=tmpfs,target=/t,size=2m sh -c "
        "'ls -A /t > /listing.txt; df -k /t | tail -1 > /df.txt; echo x > /t/new'\n",
    )
    _, _, out = _build(shipyard, ctx)
    assert (out / "listing.txt").read_text() == ""
    fields = (out / "df.txt").read_text().split()
    assert fields[0] == "tmpfs" and fields[1] == "2048"
    assert sorted(os.listdir(out / "t")) == ["below"]


# --------------------------------------------------------------------------- secrets


SECRETS = """\
FROM busybox:local
RUN --mount=type=secret,id=token sh -c 'cat /run/secrets/token | wc -c > /len.txt; stat -c %a /run/secrets/token > /mode.txt'
RUN --mount=type=secret,id=token,env=TOKEN,target=/s/tok,mode=0440,uid=7 sh -c '[ "$TOKEN" = "$(cat /s/tok)" ] && stat -c %u:%a /s/tok > /env.txt'
RUN --mount=type=secret,id=absent sh -c 'ls /run/secrets/absent > /absent.txt 2>&1; true'
"""


def test_secret_mounts_never_reach_layers_history_or_cache_keys(shipyard: Shipyard, tmp_path: Path) -> None:
    value = "s3cr3t-" + os.urandom(6).hex()
    secret = tmp_path / "token.txt"
    secret.write_text(value)
    ctx = tmp_path / "ctx"
    write(ctx / "Dockerfile", SECRETS)
    _, meta, out = _build(shipyard, ctx, "--secret", f"id=token,src={secret}")
    assert (out / "len.txt").read_text().strip() == str(len(value))
    assert (out / "mode.txt").read_text() == "400\n"
    assert (out / "env.txt").read_text() == "7:440\n"
    assert "No such file" in (out / "absent.txt").read_text()  # not required: simply not mounted
    assert not (out / "run").exists() and not (out / "s").exists()
    assert _files_containing(out, value.encode()) == []
    assert _files_containing(shipyard.root, value.encode()) == []  # layers, blobs, index, logs
    assert value not in json.dumps(_config(shipyard, meta))

    secret.write_text("a different value")
    _, meta, _ = _build(shipyard, ctx, "--secret", f"id=token,src={secret}")
    assert all(steps(meta).values()), "a secret's value must not be part of a cache key"


def test_required_secret_missing_fails_with_its_id_and_line(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    write(ctx / "Dockerfile", "FROM busybox:local\nRUN echo ok\nRUN --mount=type=secret,id=apikey,required true\n")
    proc, _, _ = _build(runc_shipyard, ctx, check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR: Dockerfile:3:") and '"apikey"' in last and "required" in last, last
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- ssh


def test_ssh_mount_forwards_a_real_agent(shipyard: Shipyard, tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not sock.exists():
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.01)
        ctx = tmp_path / "ctx"
        write(
            ctx / "Dockerfile",
            "FROM busybox:local\n"
            "RUN --mount=type=ssh sh -c '[ -S \"$SSH_AUTH_SOCK\" ] && echo \"$SSH_AUTH_SOCK\" > /sock.txt'\n"
            "RUN --mount=type=ssh,id=deploy,target=/agent,uid=1000,mode=0660 stat -c '%F %u %a' /agent > /agent.txt\n",
        )
        _, _, out = _build(shipyard, ctx, "--ssh", f"default={sock}", "--ssh", f"deploy={sock}")
        assert (out / "sock.txt").read_text() == "/run/buildkit/ssh_agent.0\n"
        assert (out / "agent.txt").read_text() == "socket 1000 660\n"
        assert not (out / "agent").exists() and not (out / "run").exists()

        write(ctx / "Dockerfile", "FROM busybox:local\nRUN --mount=type=ssh,id=nothere,required true\n")
        proc, _, _ = _build(shipyard, ctx, "--ssh", f"default={sock}", check=False)
        assert proc.returncode != 0
        assert 'Dockerfile:2:' in proc.stderr and '"nothere"' in proc.stderr
    finally:
        agent.terminate()
        agent.wait()


# --------------------------------------------------------------------------- network, security


ENTITLED = """\
FROM busybox:local
RUN --network=none sh -c 'ls /sys/class/net > /none.txt'
RUN --network=host sh -c 'ls /sys/class/net > /host.txt'
RUN --security=insecure sh -c 'grep CapEff /proc/self/status > /insecure.txt'
RUN grep CapEff /proc/self/status > /sandbox.txt
"""


def test_network_and_security_need_entitlements(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    write(ctx / "Dockerfile", ENTITLED)
    proc, _, out = _build(runc_shipyard, ctx, check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR: Dockerfile:3:") and '"network.host"' in last and "--allow network.host" in last
    assert "[2/5]" not in proc.stderr, "nothing may run before the entitlement check"

    proc, _, _ = _build(runc_shipyard, ctx, "--allow", "network.host", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("ERROR: Dockerfile:4:")
    assert "security.insecure" in proc.stderr

    _, _, out = _build(runc_shipyard, ctx, "--allow", "network.host", "--allow", "security.insecure")
    assert (out / "none.txt").read_text().split() == ["lo"]
    assert sorted((out / "host.txt").read_text().split()) == sorted(os.listdir("/sys/class/net"))
    insecure = int((out / "insecure.txt").read_text().split()[1], 16)
    sandbox = int((out / "sandbox.txt").read_text().split()[1], 16)
    assert insecure & ~sandbox and sandbox & ~insecure == 0  # strictly more capabilities
    sys_admin = 1 << 21
    assert insecure & sys_admin and not sandbox & sys_admin

    # a cached step still needs its entitlement (BuildKit checks the whole definition),
    # also when the whole-build memo of an allowed build could answer
    runc_shipyard.build(ctx, "--allow", "network.host", "--allow", "security.insecure")
    proc, _ = runc_shipyard.build(ctx, "--allow", "security.insecure", check=False)
    assert proc.returncode != 0 and "network.host" in proc.stderr


# --------------------------------------------------------------------------- mountpoint cleanup


def test_mountpoint_cleanup_never_follows_a_swapped_parent(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    """CVE-2024-23652 shape: the step turns the stub's parent into a symlink to a host dir."""
    host = tmp_path / "host"
    write(host / "b" / "stub", "")  # an empty file, exactly what a stub looks like
    write(host / "keep.txt", "keep\n")
    ctx = tmp_path / "ctx"
    write(
        ctx / "Dockerfile",
        "FROM busybox:local\n"
        f"RUN --mount=type=tmpfs,target=/a/b/stub sh -c 'mv /a /a.moved && ln -s {host} /a'\n",
    )
    _, _, out = _build(runc_shipyard, ctx)
    assert (host / "b" / "stub").exists(), "the cleanup deleted a host file"
    assert (host / "keep.txt").read_text() == "keep\n"
    assert os.path.islink(out / "a")
