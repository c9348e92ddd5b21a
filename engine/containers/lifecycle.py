"""Stop, kill and remove containers, and clean up after them — from any process.

A container's processes are signalled through pidfds checked against recorded
start times (engine.runtime.procs), so these work whether or not its supervisor
still lives. Everything here is idempotent: the supervisor, its reaper and the
CLI may each clean up the same container, in any order.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

from engine.containers.errors import ContainerError
from engine.containers.model import CREATED, EXITED, RUNNING, STATUS_UNKNOWN, LiveState
from engine.containers.store import (
    Container,
    ContainerStore,
    keeper_alive,
    take_keeper_lock,
)
from engine.errors import ShipyardError
from engine.runtime import cgroups, procs

KILL_WAIT_SECONDS = 10.0
KEEPER_WAIT_SECONDS = 10.0


def cleanup_runtime(state_root: Path, container_id: str, live: LiveState) -> None:
    """The runtime's state for a container whose processes are gone (runc delete, bundle, cgroups)."""
    if live.runtime:
        from engine.runtime.probe import open_runtime

        try:
            open_runtime(live.runtime, state_root).remove(container_id)  # type: ignore[attr-defined]
        except ShipyardError:
            pass
    cgroups.remove(container_id)


def signal_container(container: Container, signum: int) -> bool:
    return procs.send_signal(container.live.pid, container.live.pid_start, signum)


def _kill_and_wait(container: Container, signum: int, timeout: float) -> bool:
    live = container.live
    procs.send_signal(live.pid, live.pid_start, signum)
    return procs.wait_gone(live.pid, live.pid_start, timeout)


def stop(store: ContainerStore, container: Container, timeout: float | None = None) -> Container | None:
    """docker stop: the stop signal, then SIGKILL after `timeout` seconds; the container as recorded after."""
    if not container.running:
        return container
    grace = container.plan.stop_timeout if timeout is None else timeout
    if not _kill_and_wait(container, container.plan.stop_signal, grace):
        _kill_and_wait(container, signal.SIGKILL, KILL_WAIT_SECONDS)
    result = settled(store, container.id)
    _wait_keeper(store, container, KEEPER_WAIT_SECONDS)  # ports closed, supervisor gone
    return result


def settled(store: ContainerStore, container_id: str) -> Container | None:
    """The container once its keeper has recorded the end (or the end was recorded for it)."""
    container = store.load(container_id)
    return store.observe(container) if container is not None else None


def _wait_keeper(store: ContainerStore, container: Container, timeout: float) -> bool:
    directory = store.directory(container.id)
    deadline = time.monotonic() + timeout
    while keeper_alive(directory):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def remove(store: ContainerStore, container: Container, *, force: bool) -> None:
    """docker rm [-f]: nothing of the container is left — processes, runtime state, files, row."""
    if container.running:
        if not force:
            raise ContainerError(
                f"cannot remove running container {container.id[:12]}: stop it first or use rm -f"
            )
        _kill_and_wait(container, signal.SIGKILL, KILL_WAIT_SECONDS)
    if not _wait_keeper(store, container, KEEPER_WAIT_SECONDS if container.state == RUNNING else 1.0):
        # A supervisor stuck in setup (or hung): it is ours to end, identified by pid and start time.
        live = container.live
        procs.send_signal(live.supervisor_pid, live.supervisor_start, signal.SIGKILL)
        _wait_keeper(store, container, KEEPER_WAIT_SECONDS)
    fresh = store.load(container.id)
    live = fresh.live if fresh is not None else container.live
    if procs.alive(live.pid, live.pid_start):
        _kill_and_wait(dataclasses.replace(container, live=live), signal.SIGKILL, KILL_WAIT_SECONDS)
    cleanup_runtime(store.state_root, container.id, live)
    store.delete(container.id)


def settle_orphan(store: ContainerStore, container: Container) -> Container | None:
    """pid 1 is gone and no keeper recorded it: record the end (status unknown) and clean up."""
    directory = store.directory(container.id)
    if not directory.exists():
        fresh = store.load(container.id)
        return fresh
    lock = take_keeper_lock(directory)
    try:
        fresh = store.load(container.id)
        if fresh is None or fresh.state != RUNNING:
            return fresh
        finish(store, fresh, STATUS_UNKNOWN)
        return store.load(container.id)
    finally:
        os.close(lock)


def finish(store: ContainerStore, container: Container, exit_code: int) -> None:
    """Record the end, clean the runtime state, and remove the container if it was `--rm`."""
    live = dataclasses.replace(container.live, finished=time.time())
    if container.state in (CREATED, RUNNING):
        store.record_exit(container.id, exit_code, live, state=CREATED if container.state == CREATED else EXITED)
    cleanup_runtime(store.state_root, container.id, live)
    if container.plan.auto_remove:
        store.delete(container.id)
