"""Published ports: a userspace proxy (like docker-proxy) from host sockets into the container.

Each mapping gets a listening socket on the host address; every TCP connection
accepted there is paired with a socket made inside the container's network
namespace (see `network.NetworkNamespace.socket`) and connected to the
container port on its loopback, then bytes are copied both ways, half-closes
included. UDP keeps one inside socket per client address, dropped after
`UDP_IDLE_SECONDS` of silence (docker-proxy's 90 s). Host sockets are bound
before the container starts, so a port already in use fails `run` up front.
"""

from __future__ import annotations

import dataclasses
import errno
import selectors
import socket
import threading
import time
from collections.abc import Callable

from engine.containers.errors import PortInUse
from engine.containers.model import PortMapping

SocketFactory = Callable[[int, int], socket.socket]
CONNECT_TIMEOUT_SECONDS = 5.0
UDP_IDLE_SECONDS = 90.0
CHUNK = 65536


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


class PortProxy:
    """Listeners for the container's published ports, and the threads that serve them."""

    def __init__(self, mappings: tuple[PortMapping, ...], inside: SocketFactory) -> None:
        self._mappings = mappings
        self._inside = inside
        self._listeners: list[tuple[PortMapping, socket.socket]] = []
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []

    def bind(self) -> tuple[PortMapping, ...]:
        """Bind every host socket; the mappings with the host ports actually bound."""
        bound = []
        try:
            for mapping in self._mappings:
                kind = socket.SOCK_STREAM if mapping.protocol == "tcp" else socket.SOCK_DGRAM
                sock = socket.socket(_family(mapping.bind_ip), kind)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((mapping.bind_ip, mapping.host_port))
                except OSError as exc:
                    sock.close()
                    where = f"{mapping.bind_ip}:{mapping.host_port or '(any)'}/{mapping.protocol}"
                    if exc.errno == errno.EADDRINUSE:
                        raise PortInUse(f"bind for {where} failed: port is already allocated") from exc
                    raise PortInUse(f"bind for {where} failed: {exc.strerror}") from exc
                if kind == socket.SOCK_STREAM:
                    sock.listen(128)
                actual = dataclasses.replace(mapping, host_port=sock.getsockname()[1])
                self._listeners.append((actual, sock))
                bound.append(actual)
        except BaseException:
            self.close()
            raise
        return tuple(bound)

    def start(self) -> None:
        for mapping, sock in self._listeners:
            target = self._serve_tcp if mapping.protocol == "tcp" else self._serve_udp
            thread = threading.Thread(target=target, args=(mapping, sock), name=f"port-{mapping.host_port}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop listening: the published ports are closed once this returns."""
        self._closed.set()
        for _mapping, sock in self._listeners:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._listeners = []
        for thread in self._threads:
            thread.join(timeout=2)

    # --- TCP ----------------------------------------------------------------------------

    def _serve_tcp(self, mapping: PortMapping, listener: socket.socket) -> None:
        while not self._closed.is_set():
            try:
                client, _addr = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay_tcp, args=(mapping, client), name="port-conn", daemon=True).start()

    def _relay_tcp(self, mapping: PortMapping, client: socket.socket) -> None:
        try:
            upstream = self._inside(socket.AF_INET, socket.SOCK_STREAM)
        except (OSError, TimeoutError):  # the namespace is going away with the container
            client.close()
            return
        try:
            upstream.settimeout(CONNECT_TIMEOUT_SECONDS)
            try:
                upstream.connect(("127.0.0.1", mapping.container_port))
            except OSError:
                # Nothing listens in the container: reset the client, as docker-proxy does.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                return
            upstream.settimeout(None)
            _pump(client, upstream, self._closed)
        finally:
            upstream.close()
            client.close()

    # --- UDP ----------------------------------------------------------------------------

    def _serve_udp(self, mapping: PortMapping, listener: socket.socket) -> None:
        peers: dict[object, tuple[socket.socket, float]] = {}
        lock = threading.Lock()

        def replies(addr: object, upstream: socket.socket) -> None:
            upstream.settimeout(1.0)
            while not self._closed.is_set():
                try:
                    data = upstream.recv(CHUNK)
                except TimeoutError:
                    with lock:
                        last = peers.get(addr, (None, 0.0))[1]
                        if time.monotonic() - last > UDP_IDLE_SECONDS:
                            peers.pop(addr, None)
                            break
                    continue
                except OSError:
                    break
                try:
                    listener.sendto(data, addr)  # type: ignore[arg-type]
                except OSError:
                    break
            upstream.close()

        while not self._closed.is_set():
            try:
                data, addr = listener.recvfrom(CHUNK)
            except OSError:
                return
            if self._closed.is_set():
                return
            with lock:
                entry = peers.get(addr)
                if entry is None:
                    try:
                        upstream = self._inside(socket.AF_INET, socket.SOCK_DGRAM)
                        upstream.connect(("127.0.0.1", mapping.container_port))
                    except (OSError, TimeoutError):
                        continue  # the datagram is dropped, as UDP may
                    threading.Thread(target=replies, args=(addr, upstream), name="port-udp", daemon=True).start()
                else:
                    upstream = entry[0]
                peers[addr] = (upstream, time.monotonic())
            try:
                upstream.send(data)
            except OSError:
                pass


def _pump(a: socket.socket, b: socket.socket, closed: threading.Event) -> None:
    """Copy bytes both ways until both directions have ended (half-close aware)."""
    selector = selectors.DefaultSelector()
    peer = {a: b, b: a}
    for sock in (a, b):
        selector.register(sock, selectors.EVENT_READ)
    open_directions = 2
    try:
        while open_directions and not closed.is_set():
            for key, _events in selector.select(timeout=1.0):
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = source.recv(CHUNK)
                except OSError:
                    return
                if data:
                    try:
                        peer[source].sendall(data)
                    except OSError:
                        return
                    continue
                selector.unregister(source)
                open_directions -= 1
                try:
                    peer[source].shutdown(socket.SHUT_WR)
                except OSError:
                    pass
    finally:
        selector.close()
