"""A container as values: what `run` decided (its plan) and what is running (its live state).

The plan is fixed when the container is created and stored as JSON in the index
row's `spec`; the live state changes as it starts and stops and is stored in
`runtime_state`. Both are frozen dataclasses with explicit JSON forms, so the CLI,
the supervisor and later commands agree on them without sharing loose dicts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

CREATED = "created"
RUNNING = "running"
EXITED = "exited"

# Docker's exit status for a container whose end nobody saw (its supervisor died too).
STATUS_UNKNOWN = 255


@dataclass(frozen=True)
class PortMapping:
    """A published port: `host_port` 0 asks for a free one; `host_ip` "" means all IPv4 addresses."""

    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""
    host_port: int = 0

    @property
    def bind_ip(self) -> str:
        return self.host_ip or "0.0.0.0"

    def describe(self) -> str:
        """docker ps's form: `127.0.0.1:8080->80/tcp`."""
        host = self.bind_ip if ":" not in self.bind_ip else f"[{self.bind_ip}]"
        return f"{host}:{self.host_port}->{self.container_port}/{self.protocol}"


@dataclass(frozen=True)
class VolumeMount:
    """A host directory or file bound into the container (`-v HOST:CONTAINER[:ro]`)."""

    source: str
    target: str
    readonly: bool = False


@dataclass(frozen=True)
class ContainerPlan:
    """Everything `run` decided about a container before it starts."""

    id: str
    name: str
    image_id: str
    image_name: str
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    workdir: str = "/"
    user: str = ""
    hostname: str = ""
    network: str = "bridge"
    ports: tuple[PortMapping, ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
    readonly_rootfs: bool = False
    tty: bool = False
    stdin_open: bool = False
    stdin_once: bool = False
    auto_remove: bool = False
    memory: int = 0
    memory_swap: int = 0
    cpu_quota: int = 0
    cpu_period: int = 0
    stop_signal: int = 15
    stop_timeout: int = 10
    runtime: str = "auto"
    lowers: tuple[str, ...] = ()
    snapshotter: str = "overlay"
    created: float = 0.0
    console_size: tuple[int, int] = (0, 0)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ContainerPlan:
        data = json.loads(text)
        data["ports"] = tuple(PortMapping(**p) for p in data.get("ports", ()))
        data["volumes"] = tuple(VolumeMount(**v) for v in data.get("volumes", ()))
        return cls(**_tuples(cls, data))

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(frozen=True)
class LiveState:
    """How to find a container's processes: the runtime, pid 1 and the supervisor,
    each with its start time (see engine.runtime.procs), and the ports it bound."""

    runtime: str = ""
    pid: int = 0
    pid_start: int = 0
    supervisor_pid: int = 0
    supervisor_start: int = 0
    started: float = 0.0
    finished: float = 0.0
    ports: tuple[PortMapping, ...] = field(default=())
    error: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LiveState:
        data = json.loads(text or "{}")
        data["ports"] = tuple(PortMapping(**p) for p in data.get("ports", ()))
        return cls(**_tuples(cls, data))


def _tuples(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """JSON lists back into the tuples the dataclass declares; unknown keys dropped."""
    known = {f.name for f in fields(cls)}
    return {key: tuple(value) if isinstance(value, list) else value for key, value in data.items() if key in known}
