"""Networking of `shipyard run` on both backends: published ports reachable from 127.0.0.1 and
closed after stop, -P with EXPOSE, ports in use refused, and the bridge/none/host modes."""

from __future__ import annotations

import shutil
import socket
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import Shipyard
from tests.e2e.runhelpers import ps, remove_containers_after, wait_for  # noqa: F401

IMAGE = "busybox:local"


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return response.read().decode()


def _reachable(port: int) -> str | None:
    try:
        return _get(port)
    except OSError:
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_published_ports_reach_the_container_until_stop(shipyard: Shipyard, tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello from the container\n")
    fixed = _free_port()
    container_id = shipyard.run(
        "run", "-d", "--name", "web",
        "-p", f"127.0.0.1:{fixed}:8080", "-p", "127.0.0.1::8080",
        "-v", f"{www}:/www:ro",
        IMAGE, "httpd", "-f", "-p", "8080", "-h", "/www",
    ).stdout.strip()  # fmt: skip
    assert len(container_id) == 64
    ports = shipyard.run("port", "web", "8080").stdout.split()
    assert f"127.0.0.1:{fixed}" in ports and len(ports) == 2
    dynamic = int(next(p for p in ports if p != f"127.0.0.1:{fixed}").rsplit(":", 1)[1])
    listed = ps(shipyard)[0]
    assert sorted(listed["Ports"]) == sorted([f"127.0.0.1:{fixed}->8080/tcp", f"127.0.0.1:{dynamic}->8080/tcp"])
    assert wait_for(lambda: _reachable(fixed), 5) == "hello from the container\n"
    assert _get(dynamic) == "hello from the container\n"

    shipyard.run("stop", "-t", "1", "web")
    for port in (fixed, dynamic):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert ps(shipyard, "-a")[0]["State"] == "exited"
    shipyard.run("rm", "web")


def test_publish_all_and_port_in_use(runc_shipyard: Shipyard, busybox_tar: Path) -> None:
    sy = runc_shipyard
    sy.run("import", str(busybox_tar), "-t", "exposing:1", "-c", "EXPOSE 7000")
    sy.run("run", "-d", "-P", "--name", "exposed", "exposing:1", "sleep", "60")
    (mapping,) = ps(sy)[0]["Ports"]
    assert mapping.startswith("0.0.0.0:") and mapping.endswith("->7000/tcp")
    sy.run("rm", "-f", "exposed")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        busy = sy.run("run", "--rm", "-p", f"127.0.0.1:{port}:80", IMAGE, "true", check=False)
    assert busy.returncode == 125
    assert "port is already allocated" in busy.stderr
    assert ps(sy, "-a") == [], "--rm removes a container that could not start"
    with_none = sy.run("run", "--rm", "--network", "none", "-p", "80", IMAGE, "true", check=False)
    assert with_none.returncode == 125


def test_network_modes(shipyard: Shipyard) -> None:
    bridge = shipyard.run(
        "run", "--rm", IMAGE, "sh", "-c", "hostname; cat /etc/hostname; grep -c $(hostname) /etc/hosts; ls /sys/class/net"
    ).stdout.split()  # fmt: skip
    hostname = bridge[0]
    assert len(hostname) == 12 and bridge[1] == hostname and bridge[2] == "1"
    interfaces = set(bridge[3:])
    # With slirp4netns installed the container gets a tap device for outbound traffic; otherwise loopback only.
    assert interfaces == ({"lo", "tap0"} if shutil.which("slirp4netns") else {"lo"})

    none = shipyard.run("run", "--rm", "--network", "none", "--hostname", "isolated", IMAGE, "sh", "-c", "hostname; ls /sys/class/net")
    assert none.stdout.split() == ["isolated", "lo"]

    host = shipyard.run("run", "--rm", "--network", "host", IMAGE, "cat", "/proc/net/dev").stdout
    with open("/proc/net/dev") as handle:
        host_interfaces = {line.split(":")[0].strip() for line in handle.read().splitlines()[2:]}
    assert {line.split(":")[0].strip() for line in host.splitlines()[2:]} == host_interfaces
