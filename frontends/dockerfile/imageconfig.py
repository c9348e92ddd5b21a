"""Instructions that change only the image config (ENV, CMD, LABEL, …), and their history lines.

Shared by the Dockerfile lowering and `shipyard import --change`. The history
`created_by` strings reproduce BuildKit's byte for byte (Go's `%q` slices,
`map[…]` for EXPOSE), so `docker history` reads the same for our images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from engine.errors import DockerfileError
from engine.oci.image import Healthcheck, ImageConfig
from frontends.dockerfile.instructions import (
    CmdCommand,
    Command,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    HealthCheckCommand,
    LabelCommand,
    MaintainerCommand,
    OnbuildCommand,
    ShellCommand,
    StopSignalCommand,
    UserCommand,
    VolumeCommand,
)
from frontends.dockerfile.shell_lexer import go_quote

DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONFIG_COMMANDS = (
    CmdCommand,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    HealthCheckCommand,
    LabelCommand,
    MaintainerCommand,
    OnbuildCommand,
    ShellCommand,
    StopSignalCommand,
    UserCommand,
    VolumeCommand,
)


def go_slice(items: tuple[str, ...] | list[str]) -> str:
    """Go's `%q` of a []string: `["a" "b"]`."""
    return "[" + " ".join(go_quote(s) for s in items) + "]"


def env_get(env: tuple[str, ...], key: str) -> str | None:
    prefix = key + "="
    for item in env:
        if item.startswith(prefix):
            return item[len(prefix) :]
    return None


def env_set(env: tuple[str, ...], key: str, value: str) -> tuple[str, ...]:
    """Replace `key` in place (Docker keeps the original order), else append."""
    prefix = key + "="
    out = [f"{key}={value}" if item.startswith(prefix) else item for item in env]
    if not any(item.startswith(prefix) for item in env):
        out.append(f"{key}={value}")
    return tuple(out)


def with_default_path(config: ImageConfig) -> ImageConfig:
    """BuildKit gives every Linux stage a PATH when its base has none."""
    if env_get(config.env, "PATH") is None:
        return dataclasses.replace(config, env=(f"PATH={DEFAULT_PATH}",) + config.env)
    return config


def shell_of(config: ImageConfig) -> tuple[str, ...]:
    return config.shell or DEFAULT_SHELL


def command_line(cmd: tuple[str, ...], prepend_shell: bool, config: ImageConfig) -> tuple[str, ...]:
    """A CMD/ENTRYPOINT/RUN as argv: the shell form runs through the stage's SHELL."""
    if prepend_shell:
        return shell_of(config) + (" ".join(cmd),)
    return tuple(cmd)


def expand_ports(ports: tuple[str, ...], filename: str, line: int) -> tuple[str, ...]:
    """`80`, `80/udp`, `8000-8002/tcp` → `80/tcp`, … as docker's nat.ParsePortSpecs does."""
    out: list[str] = []
    for raw in ports:
        spec = raw.rsplit(":", 1)[-1]  # ip:host:container forms keep the container port
        port, _, proto = spec.partition("/")
        proto = (proto or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise DockerfileError(f"invalid proto: {proto}", filename, line)
        start, _, end = port.partition("-")
        try:
            first = int(start)
            last = int(end) if end else first
        except ValueError:
            raise DockerfileError(f"invalid containerPort: {port}", filename, line) from None
        if not (0 <= first <= 65535 and 0 <= last <= 65535) or last < first:
            raise DockerfileError(f"invalid range specified for container port: {port}", filename, line)
        out.extend(f"{p}/{proto}" for p in range(first, last + 1))
    return tuple(out)


@dataclass(frozen=True)
class ConfigChange:
    config: ImageConfig
    created_by: str
    author: str | None = None


def apply_config_command(
    config: ImageConfig, cmd: Command, *, cmd_set: bool, filename: str = "Dockerfile"
) -> ConfigChange:
    """The config after one (already expanded) config-only instruction, and its history line.

    `cmd_set` says whether this stage has set CMD itself: an ENTRYPOINT resets only an
    inherited CMD, as in Docker.
    """
    replace = dataclasses.replace
    match cmd:
        case EnvCommand(env=pairs):
            env = config.env
            for pair in pairs:
                env = env_set(env, pair.key, pair.value)
            text = " ".join(f"{p.key}={p.value}" for p in pairs)
            return ConfigChange(replace(config, env=env), f"ENV {text}")
        case LabelCommand(labels=pairs):
            labels = dict(config.labels)
            for pair in pairs:
                labels[pair.key] = pair.value
            text = " ".join(f"{p.key}={p.value}" for p in pairs)
            return ConfigChange(replace(config, labels=tuple(labels.items())), f"LABEL {text}")
        case ExposeCommand(ports=ports):
            new = expand_ports(ports, filename, cmd.line)
            merged = tuple(dict.fromkeys(config.exposed_ports + new))
            shown = " ".join(f"{p}:{{}}" for p in sorted(set(new)))
            return ConfigChange(replace(config, exposed_ports=merged), f"EXPOSE map[{shown}]")
        case UserCommand(user=user):
            return ConfigChange(replace(config, user=user), f"USER {user}")
        case CmdCommand(cmd=argv, prepend_shell=shell):
            line = command_line(argv, shell, config)
            return ConfigChange(replace(config, cmd=line, args_escaped=True), f"CMD {go_slice(line)}")
        case EntrypointCommand(cmd=argv, prepend_shell=shell):
            line = command_line(argv, shell, config) if argv is not None else ()
            new = replace(config, entrypoint=line, args_escaped=True)
            if not cmd_set:
                new = replace(new, cmd=())
            return ConfigChange(new, f"ENTRYPOINT {go_slice(line)}")
        case VolumeCommand(volumes=volumes):
            vols = [v for v in volumes if v]
            if not vols:
                raise DockerfileError("VOLUME specified can not be an empty string", filename, cmd.line)
            merged = tuple(dict.fromkeys(config.volumes + tuple(vols)))
            return ConfigChange(replace(config, volumes=merged), f"VOLUME [{' '.join(vols)}]")
        case StopSignalCommand(signal=sig):
            return ConfigChange(replace(config, stop_signal=sig), f"STOPSIGNAL {sig}")
        case HealthCheckCommand(health=h):
            if h.test == ("NONE",):
                check = Healthcheck(test=("NONE",))
            else:
                check = Healthcheck(
                    test=h.test,
                    interval=h.interval,
                    timeout=h.timeout,
                    start_period=h.start_period,
                    start_interval=h.start_interval,
                    retries=h.retries,
                )
            return ConfigChange(replace(config, healthcheck=check), f"HEALTHCHECK {go_slice(h.test)}")
        case ShellCommand(shell=shell):
            return ConfigChange(replace(config, shell=shell), f"SHELL {go_slice(shell)}")
        case OnbuildCommand(expression=expression):
            # BuildKit records no history entry for ONBUILD (created_by "" means none).
            return ConfigChange(replace(config, on_build=config.on_build + (expression,)), "")
        case MaintainerCommand(maintainer=who):
            return ConfigChange(config, f"MAINTAINER {who}", author=who)
    raise DockerfileError(f"{cmd.NAME.upper()} cannot be used here", filename, cmd.line)
