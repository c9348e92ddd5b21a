"""Runtime backends: run one process in a container (runc, crun, or builtin namespaces).

The values (`ProcessSpec`, mounts) come from `engine.runtime.base`, which is cheap.
`select_runtime` and `resolve_user` load their modules on first use (PEP 562), so
a build that runs no container — a fully cached rebuild — never pays for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.runtime.base import (
    DEFAULT_PATH,
    BindMount,
    ContainerHandle,
    ContainerProcess,
    ContainerRuntime,
    ProcessSpec,
    Resources,
    Runtime,
    Stdio,
    TmpfsMount,
)

if TYPE_CHECKING:
    from engine.runtime.probe import select_runtime
    from engine.runtime.users import ResolvedUser, UserLookupError, resolve_user

_LAZY = {
    "select_runtime": "engine.runtime.probe",
    "ResolvedUser": "engine.runtime.users",
    "UserLookupError": "engine.runtime.users",
    "resolve_user": "engine.runtime.users",
}

__all__ = [
    "DEFAULT_PATH",
    "BindMount",
    "ContainerHandle",
    "ContainerProcess",
    "ContainerRuntime",
    "ProcessSpec",
    "Resources",
    "Stdio",
    "ResolvedUser",
    "Runtime",
    "TmpfsMount",
    "UserLookupError",
    "resolve_user",
    "select_runtime",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.runtime' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
