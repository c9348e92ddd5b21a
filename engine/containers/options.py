"""docker run's option syntax, parsed into typed values with docker's rules and errors.

`-p [IP:][HOST:]CONTAINER[/PROTO]` (ranges of equal length allowed, an empty or
absent host port asks for a free one), `-v HOST:CONTAINER[:ro|rw]`, `-e KEY[=VALUE]`,
`--env-file`, `--memory 512m`, `--cpus 1.5`, signal names (`SIGUSR1`, `USR1`, `10`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal

from engine.containers.model import PortMapping, VolumeMount
from engine.errors import UsageError

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MIN_MEMORY = 6 << 20  # docker's minimum for --memory
CPU_PERIOD = 100000


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise UsageError(f"invalid container name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name


def _port_range(text: str, what: str, spec: str) -> list[int]:
    start, sep, end = text.partition("-")
    try:
        first = int(start)
        last = int(end) if sep else first
    except ValueError:
        raise UsageError(f"invalid {what} port {text!r} in {spec!r}") from None
    if not (0 < first <= 65535 and 0 < last <= 65535) or last < first:
        raise UsageError(f"invalid {what} port {text!r} in {spec!r}")
    return list(range(first, last + 1))


def parse_publish(spec: str) -> list[PortMapping]:
    """One `-p` value → its mappings (several for a range)."""
    rest, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp"):
        raise UsageError(f"invalid protocol {proto!r} in {spec!r}: want tcp or udp")
    host_ip = ""
    if rest.startswith("["):  # [IPv6]:HOST:CONTAINER
        close = rest.find("]")
        if close < 0 or rest[close + 1 : close + 2] != ":":
            raise UsageError(f"invalid published port {spec!r}")
        host_ip, rest = rest[1:close], rest[close + 2 :]
        parts = rest.split(":")
        if len(parts) != 2:
            raise UsageError(f"invalid published port {spec!r}")
        host_part, container_part = parts
    else:
        parts = rest.split(":")
        if len(parts) == 1:
            host_part, container_part = "", parts[0]
        elif len(parts) == 2:
            host_part, container_part = parts
        elif len(parts) == 3:
            host_ip, host_part, container_part = parts
        else:
            raise UsageError(f"invalid published port {spec!r}")
    if host_ip:
        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise UsageError(f"invalid IP address {host_ip!r} in {spec!r}") from None
    containers = _port_range(container_part, "container", spec)
    if not host_part:
        hosts = [0] * len(containers)
    else:
        hosts = _port_range(host_part, "host", spec)
        if len(hosts) != len(containers):
            raise UsageError(f"port ranges of different lengths in {spec!r}")
    return [PortMapping(c, proto, host_ip, h) for h, c in zip(hosts, containers)]


def exposed_port(text: str) -> PortMapping:
    """An image's EXPOSE entry (`80/tcp`) as a mapping to a free host port (`-P`)."""
    port, _, proto = text.partition("/")
    return parse_publish(f"{port}/{proto or 'tcp'}")[0]


def parse_volume(spec: str) -> VolumeMount:
    """`-v HOST:CONTAINER[:OPTIONS]`; the host path is created as a directory when missing, as docker does."""
    parts = spec.split(":")
    if len(parts) < 2 or len(parts) > 3:
        raise UsageError(f"invalid volume {spec!r}: want HOST_PATH:CONTAINER_PATH[:ro]")
    source, target = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    readonly = False
    for option in options:
        if option == "ro":
            readonly = True
        elif option in ("rw", "z", "Z", "", "rprivate", "private", "consistent", "cached", "delegated"):
            continue
        else:
            raise UsageError(f"invalid volume option {option!r} in {spec!r}")
    if not source.startswith("/"):
        raise UsageError(f"volume {spec!r}: named volumes are not supported, give an absolute host path")
    if not target.startswith("/"):
        raise UsageError(f"volume {spec!r}: the container path must be absolute")
    if target.rstrip("/") == "":
        raise UsageError(f"volume {spec!r}: cannot mount over /")
    if not os.path.exists(source):
        try:
            os.makedirs(source, 0o755, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"volume {spec!r}: cannot create {source}: {exc.strerror}") from None
    return VolumeMount(os.path.realpath(source), target, readonly)


def parse_env(values: list[str], environ: dict[str, str] | None = None) -> list[str]:
    """`-e KEY=VALUE`, or `-e KEY` to take KEY from this environment (skipped when unset)."""
    environ = os.environ if environ is None else environ
    out = []
    for item in values:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid environment variable {item!r}")
        if sep:
            out.append(f"{key}={value}")
        elif key in environ:
            out.append(f"{key}={environ[key]}")
    return out


def read_env_file(path: str) -> list[str]:
    """docker's --env-file: KEY=VALUE or KEY lines; blank lines and # comments skipped."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise UsageError(f"--env-file {path}: {exc.strerror}") from None
    entries = []
    for number, raw in enumerate(lines, 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        if line.split("=", 1)[0].strip() != line.split("=", 1)[0] or " " in line.split("=", 1)[0]:
            raise UsageError(f"--env-file {path}:{number}: variable name contains whitespace")
        entries.append(line)
    return parse_env(entries)


def merge_env(base: tuple[str, ...], overrides: list[str]) -> tuple[str, ...]:
    """The image's ENV with later `KEY=` entries replacing earlier ones in place."""
    order: list[str] = []
    values: dict[str, str] = {}
    for entry in list(base) + overrides:
        key = entry.partition("=")[0]
        if key not in values:
            order.append(key)
        values[key] = entry
    return tuple(values[key] for key in order)


def parse_memory(text: str, flag: str = "--memory") -> int:
    match = _SIZE_RE.match(text.strip())
    if not match:
        raise UsageError(f"invalid size {text!r} for {flag}: want e.g. 512m or 1g")
    value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if flag == "--memory" and value < MIN_MEMORY:
        raise UsageError(f"{flag} {text}: the minimum allowed is 6MB")
    return value


def parse_memory_swap(text: str) -> int:
    return -1 if text.strip() == "-1" else parse_memory(text, "--memory-swap")


def parse_cpus(text: str) -> tuple[int, int]:
    """--cpus as (quota, period) in microseconds, docker's CFS translation."""
    try:
        cpus = float(text)
    except ValueError:
        raise UsageError(f"invalid --cpus {text!r}: want a number such as 1.5") from None
    if cpus <= 0:
        raise UsageError(f"invalid --cpus {text!r}: must be greater than 0")
    available = os.cpu_count() or 1
    if cpus > available:
        raise UsageError(f"--cpus {text}: only {available} CPUs are available")
    return int(cpus * CPU_PERIOD), CPU_PERIOD


def parse_signal(text: str) -> int:
    """`SIGUSR1`, `USR1`, `usr1` or `10` → the number."""
    value = text.strip()
    if value.isdigit():
        number = int(value)
        if 0 < number < signal.NSIG:
            return number
        raise UsageError(f"invalid signal {text!r}")
    name = value.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise UsageError(f"invalid signal {text!r}") from None


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
