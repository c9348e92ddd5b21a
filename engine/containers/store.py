"""Containers by name or id, over the index's `containers` table and `state_root/containers/<id>/`.

The row is the record (name, image, state, exit code, plan, live state); the
directory holds what the container owns on disk — its writable layer, its log,
its /etc files — and `keeper.lock`, an flock held for exactly as long as some
process is responsible for the container (its supervisor, or the reaper that
cleans up after a killed supervisor). Whether a container runs is never taken
from the row alone: `observe` checks its pid 1 (pid and start time) and the
keeper lock, and settles a row whose keeper died without recording the end.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cache.index import CacheIndex, ContainerRow
from engine.containers.errors import ContainerError, NoSuchContainer
from engine.containers.model import CREATED, EXITED, RUNNING, ContainerPlan, LiveState
from engine.runtime import procs

KEEPER_LOCK = "keeper.lock"
SETTLE_SECONDS = 5.0


@dataclass(frozen=True)
class Container:
    """One container as observed now (`state` is the truth, not just the row's word)."""

    plan: ContainerPlan
    live: LiveState
    state: str
    exit_code: int | None

    @property
    def id(self) -> str:
        return self.plan.id

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def running(self) -> bool:
        return self.state == RUNNING


def containers_dir(state_root: Path) -> Path:
    return Path(state_root) / "containers"


def _from_row(row: ContainerRow) -> Container:
    return Container(ContainerPlan.from_json(row.spec), LiveState.from_json(row.runtime_state), row.state, row.exit_code)


def keeper_alive(directory: Path) -> bool:
    """Whether a supervisor (or reaper) holds the container's keeper lock."""
    try:
        fd = os.open(directory / KEEPER_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def take_keeper_lock(directory: Path) -> int:
    """Block until the keeper lock is ours; the fd holds it (close-on-exec, never inherited)."""
    fd = os.open(directory / KEEPER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


class ContainerStore:
    """Create, find, record and remove containers in one state root."""

    def __init__(self, state_root: Path, index: CacheIndex) -> None:
        self.state_root = Path(state_root)
        self.index = index
        self.root = containers_dir(self.state_root)

    def directory(self, container_id: str) -> Path:
        return self.root / container_id

    # --- creating and finding ---------------------------------------------------------

    def create(self, plan: ContainerPlan) -> Container:
        directory = self.directory(plan.id)
        directory.mkdir(parents=True, exist_ok=False)
        os.close(os.open(directory / KEEPER_LOCK, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        row = ContainerRow(
            plan.id, plan.name, plan.image_id, plan.image_name, plan.created, CREATED, None, None, plan.to_json(), "{}"
        )
        if not self.index.add_container(row):
            shutil.rmtree(directory, ignore_errors=True)
            holder = next((r for r in self.index.list_containers() if r.name == plan.name), None)
            owner = f' by container "{holder.id[:12]}"' if holder else ""
            raise ContainerError(
                f'the container name "{plan.name}" is already in use{owner}: remove that container to reuse the name'
            )
        return _from_row(row)

    def names(self) -> set[str]:
        return {row.name for row in self.index.list_containers()}

    def load(self, container_id: str) -> Container | None:
        row = self.index.get_container(container_id)
        return _from_row(row) if row else None

    def lookup(self, ref: str) -> Container:
        """By exact name, full id, or unique id prefix (docker's rules), observed."""
        rows = self.index.list_containers()
        exact = [r for r in rows if r.id == ref or r.name == ref.lstrip("/")]
        if not exact and ref and all(c in "0123456789abcdef" for c in ref):
            exact = [r for r in rows if r.id.startswith(ref)]
            if len(exact) > 1:
                raise ContainerError(f"multiple containers match the id prefix {ref!r}: give more of the id")
        if not exact:
            raise NoSuchContainer(ref)
        container = self.observe(_from_row(exact[0]))
        if container is None:
            raise NoSuchContainer(ref)
        return container

    def list(self) -> list[Container]:
        observed = (self.observe(_from_row(row)) for row in self.index.list_containers())
        return [container for container in observed if container is not None]

    # --- recording --------------------------------------------------------------------

    def record_running(self, container: Container, live: LiveState) -> None:
        self.index.update_container(
            container.id, state=RUNNING, pid=live.pid, exit_code=None, runtime_state=live.to_json()
        )

    def record_exit(self, container_id: str, exit_code: int, live: LiveState, *, state: str = EXITED) -> bool:
        """Record the end once: False when another process already did (or the row is gone)."""
        return self.index.update_container(
            container_id,
            state=state,
            pid=None,
            exit_code=exit_code,
            runtime_state=live.to_json(),
            only_from=(CREATED, RUNNING),
        )

    def delete(self, container_id: str) -> None:
        """The row and the directory (the writable layer, log and /etc files) — nothing is mounted
        outside the supervisor's own mount namespace, so removing files is enough."""
        self.index.remove_container(container_id)
        shutil.rmtree(self.directory(container_id), ignore_errors=True)

    # --- the truth --------------------------------------------------------------------

    def observe(self, container: Container) -> Container | None:
        """The container as it really is: a row says `running` only while its pid 1 lives.

        When pid 1 is gone, a live keeper is about to record the end (wait for it);
        a dead one never will, so the end is recorded here as Docker records a
        container that died with its daemon (exit 255), and its runtime state cleaned.
        """
        if container.state != RUNNING:
            return container
        live = container.live
        if procs.alive(live.pid, live.pid_start):
            return container
        directory = self.directory(container.id)
        deadline = time.monotonic() + SETTLE_SECONDS
        while keeper_alive(directory) and time.monotonic() < deadline:
            time.sleep(0.02)
            fresh = self.load(container.id)
            if fresh is None or fresh.state != RUNNING:
                return fresh  # recorded (or removed, with --rm) by its keeper
        from engine.containers import lifecycle

        return lifecycle.settle_orphan(self, container)
