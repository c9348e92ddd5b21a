"""`shipyard run` in the foreground on both backends: exit codes, streams, stdin, tty, signals,
volumes, read-only roots, the image's ENTRYPOINT/CMD/ENV/WORKDIR/USER, and `--rm` leaving nothing."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

from tests.e2e.conftest import SHIPYARD, Shipyard
from tests.e2e.runhelpers import assert_nothing_left, ps, remove_containers_after  # noqa: F401

IMAGE = "busybox:local"


def _env(sy: Shipyard) -> dict[str, str]:
    return dict(os.environ, SHIPYARD_ROOT=str(sy.root), SHIPYARD_RUNTIME=sy.runtime)


def test_exit_code_streams_and_rm_leaves_nothing(shipyard: Shipyard) -> None:
    proc = shipyard.run(
        "run", "--rm", IMAGE, "sh", "-c", "echo out; echo err >&2; readlink /proc/self/ns/net >&2; exit 3", check=False
    )
    assert proc.returncode == 3
    assert proc.stdout == "out\n"
    err_lines = proc.stderr.splitlines()
    assert err_lines[0] == "err" and err_lines[1].startswith("net:[")
    # Nothing of any container is left: no row, directory, supervisor, mount, runtime state or netns.
    assert_nothing_left(shipyard, netns=err_lines[1])


def test_start_failures_exit_like_docker(shipyard: Shipyard) -> None:
    missing = shipyard.run("run", "--rm", IMAGE, "no-such-command", check=False)
    assert missing.returncode == 127
    assert 'exec: "no-such-command": executable file not found in $PATH' in missing.stderr
    not_executable = shipyard.run("run", "--rm", IMAGE, "/etc/passwd", check=False)
    assert not_executable.returncode == 126
    no_image = shipyard.run("run", "--rm", "no-such-image:1", "true", check=False)
    assert no_image.returncode == 125 and "no-such-image" in no_image.stderr
    bad_user = shipyard.run("run", "--rm", "-u", "nobody-here", IMAGE, "true", check=False)
    assert bad_user.returncode == 125 and "nobody-here" in bad_user.stderr
    assert ps(shipyard, "-a") == []


def test_volumes_and_read_only_root(shipyard: Shipyard, tmp_path: Path) -> None:
    data, config = tmp_path / "data", tmp_path / "config"
    data.mkdir()
    config.mkdir()
    (data / "in.txt").write_text("from the host\n")
    (config / "app.conf").write_text("setting=1\n")
    script = (
        "cat /data/in.txt; echo from-container > /data/out.txt; cat /config/app.conf; "
        "touch /config/nope 2>/dev/null && echo config-writable; "
        "touch /etc/nope 2>/dev/null && echo root-writable; echo done"
    )
    proc = shipyard.run(
        "run", "--rm", "--read-only", "-v", f"{data}:/data", "-v", f"{config}:/config:ro", IMAGE, "sh", "-c", script
    )
    assert proc.stdout == "from the host\nsetting=1\ndone\n"
    assert (data / "out.txt").read_text() == "from-container\n"
    assert not (config / "nope").exists()
    writable = shipyard.run("run", "--rm", IMAGE, "sh", "-c", "touch /etc/yes && echo root-writable")
    assert writable.stdout == "root-writable\n"


def test_stdin_with_i(shipyard: Shipyard) -> None:
    proc = shipyard.run("run", "--rm", "-i", IMAGE, "sh", "-c", "cat; echo end", input="line 1\nline 2\n")
    assert proc.stdout == "line 1\nline 2\nend\n"
    without = shipyard.run("run", "--rm", IMAGE, "sh", "-c", "cat; echo end", input="ignored\n")
    assert without.stdout == "end\n", "without -i the container's stdin is empty"


def test_tty_with_it(shipyard: Shipyard) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        SHIPYARD + ["run", "--rm", "-it", IMAGE, "sh"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=_env(shipyard),
        start_new_session=True,
    )
    os.close(slave)
    try:
        os.write(master, b"tty; echo TERM=$TERM; exit 4\n")
        seen = b""
        deadline = time.monotonic() + 20
        while b"TERM=xterm" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
        assert proc.wait(timeout=20) == 4
        assert b"/dev/pts/0" in seen and b"TERM=xterm" in seen
    finally:
        os.close(master)


def test_sigterm_reaches_the_container(shipyard: Shipyard) -> None:
    proc = subprocess.Popen(
        SHIPYARD
        + ["run", "--rm", IMAGE, "sh", "-c", "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.1; done"],
        stdout=subprocess.PIPE,
        env=_env(shipyard),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.read() == b"got-term\n"
    assert proc.wait(timeout=20) == 42


def test_image_config_applies_as_docker_applies_it(runc_shipyard: Shipyard, busybox_tar: Path, tmp_path: Path) -> None:
    sy = runc_shipyard
    sy.run(
        "import", str(busybox_tar), "-t", "app:1",
        "-c", "ENV GREETING=hello",
        "-c", "WORKDIR /srv/app",
        "-c", "USER app",
        "-c", 'ENTRYPOINT ["sh", "-c", "echo $GREETING $(id -un) $(pwd) $HOME \\"$@\\"", "entry"]',
        "-c", 'CMD ["default-arg"]',
    )  # fmt: skip
    assert sy.run("run", "--rm", "app:1").stdout == "hello app /srv/app /home/app default-arg\n"
    assert sy.run("run", "--rm", "app:1", "a", "b").stdout == "hello app /srv/app /home/app a b\n"
    env_file = tmp_path / "env"
    env_file.write_text("GREETING=from-file\n")
    assert sy.run("run", "--rm", "--env-file", str(env_file), "app:1").stdout.startswith("from-file ")
    assert sy.run("run", "--rm", "-e", "GREETING=hi", "-u", "root", "-w", "/", "app:1").stdout == "hi root / /root default-arg\n"
    # --entrypoint replaces the ENTRYPOINT and drops the image's CMD.
    assert sy.run("run", "--rm", "--entrypoint", "echo", "app:1", "x", "y").stdout == "x y\n"
    assert sy.run("run", "--rm", "--entrypoint", "pwd", "app:1").stdout == "/srv/app\n"
    env = sy.run("run", "--rm", "--entrypoint", "env", "--hostname", "box", "app:1").stdout.splitlines()
    assert "HOSTNAME=box" in env and "GREETING=hello" in env and any(e.startswith("PATH=") for e in env)
