"""Finding and reading Shipyard's one config file, shared by every section's loader.

Registries (`[registry.*]`), garbage collection (`[gc]`) and archive limits
(`[limits]`) live in the same TOML file; each section has its own loader and error
type, but they must agree on where the file is, when its absence is an error (only
when the user named it), and how unreadable or invalid TOML is reported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.errors import ShipyardError


def default_config_path() -> Path:
    """`$SHIPYARD_CONFIG`, else `/etc/shipyard/config.toml` for root, else the XDG config dir.

    Root of a rootless user namespace is still the user: their config stays theirs.
    """
    env = os.environ.get("SHIPYARD_CONFIG")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        from engine.rootless import host_root

        if host_root():
            return Path("/etc/shipyard/config.toml")
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(xdg) / "shipyard" / "config.toml"


def read_config(path: Path | str | None, error: type[ShipyardError]) -> tuple[bytes | None, str]:
    """The config file's bytes and name; None when the default file does not exist.

    A file the user named (`path`, `$SHIPYARD_CONFIG`) must exist: a typo in its name
    must not silently mean "no settings".
    """
    explicit = path is not None or bool(os.environ.get("SHIPYARD_CONFIG"))
    file = Path(path) if path is not None else default_config_path()
    try:
        return file.read_bytes(), str(file)
    except FileNotFoundError:
        if explicit:
            raise error(f"config file {file} does not exist") from None
        return None, str(file)
    except OSError as exc:
        raise error(f"config file {file}: {exc.strerror}") from None


def parse_toml(data: bytes | str, source: str, error: type[ShipyardError]) -> dict[str, Any]:
    """The parsed document, or `error` naming the file and what is wrong with it."""
    import tomllib

    try:
        return tomllib.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except UnicodeDecodeError:
        raise error(f"{source}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{source}: invalid TOML: {exc}") from None
