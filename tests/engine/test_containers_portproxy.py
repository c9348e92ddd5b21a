"""The port proxy against a real network namespace (made by a thread of this process, as the
supervisor does): TCP with half-close, UDP replies, free-port choice, ports closed on close,
a port already in use refused up front."""

from __future__ import annotations

import socket
import threading

import pytest

from engine.containers.errors import PortInUse
from engine.containers.model import PortMapping
from engine.containers.network import NetworkNamespace
from engine.containers.portproxy import PortProxy
from tests.helpers import require_root


@pytest.fixture
def namespace():
    require_root()
    ns = NetworkNamespace()
    yield ns
    ns.close()


def _tcp_upper_server(ns: NetworkNamespace, port: int) -> threading.Thread:
    """Inside the namespace: read to EOF, answer the bytes upper-cased, close."""
    server = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        conn.sendall(data.upper())
        conn.close()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_tcp_through_the_namespace_with_half_close(namespace: NetworkNamespace) -> None:
    thread = _tcp_upper_server(namespace, 8080)
    proxy = PortProxy((PortMapping(8080, "tcp", "127.0.0.1", 0),), namespace.socket)
    (bound,) = proxy.bind()
    assert bound.host_port > 0, "a free host port was chosen"
    proxy.start()
    try:
        with socket.create_connection(("127.0.0.1", bound.host_port), timeout=5) as client:
            client.sendall(b"x" * 200000)
            client.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := client.recv(65536):
                received += chunk
        assert received == b"X" * 200000
        thread.join(5)
        # The host side cannot see the namespace's listener directly.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", 8080), timeout=1).close()
    finally:
        proxy.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", bound.host_port), timeout=2)


def test_nothing_listening_inside_resets_the_client(namespace: NetworkNamespace) -> None:
    proxy = PortProxy((PortMapping(9999, "tcp", "127.0.0.1", 0),), namespace.socket)
    (bound,) = proxy.bind()
    proxy.start()
    try:
        with pytest.raises(ConnectionResetError):
            with socket.create_connection(("127.0.0.1", bound.host_port), timeout=5) as client:
                client.settimeout(5)
                client.recv(10)
    finally:
        proxy.close()


def test_udp_replies_come_back(namespace: NetworkNamespace) -> None:
    server = namespace.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 5353))

    def echo() -> None:
        for _ in range(2):
            data, addr = server.recvfrom(65536)
            server.sendto(b"re:" + data, addr)

    threading.Thread(target=echo, daemon=True).start()
    proxy = PortProxy((PortMapping(5353, "udp", "127.0.0.1", 0),), namespace.socket)
    (bound,) = proxy.bind()
    proxy.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            for payload in (b"one", b"two"):
                client.sendto(payload, ("127.0.0.1", bound.host_port))
                assert client.recvfrom(100)[0] == b"re:" + payload
    finally:
        proxy.close()
        server.close()


def test_port_in_use_is_refused_before_anything_starts(namespace: NetworkNamespace) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proxy = PortProxy(
            (PortMapping(1, "tcp", "127.0.0.1", 0), PortMapping(80, "tcp", "127.0.0.1", port)), namespace.socket
        )
        with pytest.raises(PortInUse, match="already allocated"):
            proxy.bind()
