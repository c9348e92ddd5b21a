"""docker run's option syntax: ports, volumes, env, sizes, CPUs, signals; and the log format."""

from __future__ import annotations

import io
import signal
from pathlib import Path

import pytest

from engine.containers import options
from engine.containers.logs import LogWriter, read_from
from engine.containers.model import ContainerPlan, LiveState, PortMapping, VolumeMount
from engine.errors import UsageError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80", [PortMapping(80, "tcp", "", 0)]),
        (":80", [PortMapping(80, "tcp", "", 0)]),
        ("8080:80", [PortMapping(80, "tcp", "", 8080)]),
        ("127.0.0.1:8080:80/udp", [PortMapping(80, "udp", "127.0.0.1", 8080)]),
        ("127.0.0.1::80", [PortMapping(80, "tcp", "127.0.0.1", 0)]),
        ("[::1]:8080:80", [PortMapping(80, "tcp", "::1", 8080)]),
        ("8000-8001:90-91", [PortMapping(90, "tcp", "", 8000), PortMapping(91, "tcp", "", 8001)]),
    ],
)
def test_publish_forms(spec: str, expected: list[PortMapping]) -> None:
    assert options.parse_publish(spec) == expected


@pytest.mark.parametrize("spec", ["", "0", "70000", "a:80", "1.2.3:80:80", "80/sctp", "8000-8002:80-81", "1:2:3:4"])
def test_publish_errors(spec: str) -> None:
    with pytest.raises(UsageError):
        options.parse_publish(spec)


def test_port_description() -> None:
    assert PortMapping(80, "tcp", "", 32768).describe() == "0.0.0.0:32768->80/tcp"
    assert PortMapping(53, "udp", "::1", 5353).describe() == "[::1]:5353->53/udp"


def test_volume_forms(tmp_path: Path) -> None:
    missing = tmp_path / "made" / "here"
    assert options.parse_volume(f"{tmp_path}:/data") == VolumeMount(str(tmp_path), "/data", False)
    assert options.parse_volume(f"{tmp_path}:/data:ro") == VolumeMount(str(tmp_path), "/data", True)
    assert options.parse_volume(f"{missing}:/x:rw").source == str(missing)
    assert missing.is_dir(), "a missing host directory is created, as docker does"
    for bad in ("named:/data", f"{tmp_path}:relative", f"{tmp_path}:/", f"{tmp_path}:/d:bogus", "/only"):
        with pytest.raises(UsageError):
            options.parse_volume(bad)


def test_env_and_env_file(tmp_path: Path) -> None:
    assert options.parse_env(["A=1", "B", "C"], {"B": "from-host"}) == ["A=1", "B=from-host"]
    env_file = tmp_path / "env"
    env_file.write_text("# comment\n\nX=1\nY=two words\n")
    assert options.read_env_file(str(env_file)) == ["X=1", "Y=two words"]
    merged = options.merge_env(("PATH=/bin", "X=0", "KEEP=1"), ["X=1", "NEW=2", "PATH=/usr/bin"])
    assert merged == ("PATH=/usr/bin", "X=1", "KEEP=1", "NEW=2")


def test_sizes_cpus_and_signals() -> None:
    assert options.parse_memory("512m") == 512 << 20
    assert options.parse_memory("1g") == 1 << 30
    assert options.parse_memory("1.5GB") == int(1.5 * (1 << 30))
    assert options.parse_memory_swap("-1") == -1
    with pytest.raises(UsageError):
        options.parse_memory("1m")  # below docker's 6MB minimum
    with pytest.raises(UsageError):
        options.parse_memory("lots")
    assert options.parse_cpus("0.5") == (50000, 100000)
    with pytest.raises(UsageError):
        options.parse_cpus("0")
    assert options.parse_signal("SIGUSR1") == signal.SIGUSR1
    assert options.parse_signal("usr1") == signal.SIGUSR1
    assert options.parse_signal("9") == signal.SIGKILL
    with pytest.raises(UsageError):
        options.parse_signal("SIGNOPE")


def test_names() -> None:
    assert options.check_name("web-1.a_b") == "web-1.a_b"
    for bad in ("-x", "a", "has space", "a/b"):
        with pytest.raises(UsageError):
            options.check_name(bad)


def test_plan_and_live_state_round_trip() -> None:
    plan = ContainerPlan(
        id="a" * 64,
        name="n",
        image_id="sha256:" + "b" * 64,
        image_name="img",
        args=("sh", "-c", "x"),
        ports=(PortMapping(80, "tcp", "127.0.0.1", 8080),),
        volumes=(VolumeMount("/h", "/c", True),),
        console_size=(24, 80),
    )
    assert ContainerPlan.from_json(plan.to_json()) == plan
    live = LiveState(runtime="runc", pid=5, pid_start=7, ports=plan.ports)
    assert LiveState.from_json(live.to_json()) == live


def test_log_records_keep_lines_partials_and_raw_bytes(tmp_path: Path) -> None:
    path = tmp_path / "log"
    writer = LogWriter(str(path))
    writer.write(1, b"one\ntwo\npart")
    writer.write(2, b"\xff\xfe not utf-8\n")
    writer.close()
    with open(path, "rb") as handle:
        records = list(read_from(handle))
    assert [(r.stream, r.data) for r in records] == [
        (1, b"one\n"),
        (1, b"two\n"),
        (1, b"part"),
        (2, b"\xff\xfe not utf-8\n"),
    ]
    half = io.BytesIO(path.read_bytes() + b'{"log": "unfinished')
    assert len(list(read_from(half))) == 4, "a record still being written is not read"
