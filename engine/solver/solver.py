"""The solver: compute keys, find what the cache already has, run the rest in parallel.

1. Keys for every vertex reachable from the targets, in dependency order: pure work
   over definitions, plus content digests of the local-context paths that COPYs
   select (through the stat cache, so a no-op rebuild reads no file contents).
2. One index lookup for all keys. Walking down from the targets, a vertex whose key
   hits needs nothing below it: its inputs are neither run nor materialized (results
   are lazy).
3. The vertices left run on a thread pool as soon as their inputs are done
   (`graphlib` ready-queue); independent stages run at the same time. A copy from
   another stage gets a second, content-based key once that stage's result exists.
4. The first failure cancels everything still running (containers are killed,
   mounts undone) and is re-raised with the failing step's location and log tail.

Several builds may share a state directory: a step about to run takes its cache
key's lock (`cache.leases.step_lock`) and looks again once it holds it, so a step two
builds reach at once runs once — the second waits, then finds the first's record.
"""

from __future__ import annotations

import graphlib
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from cache.checksum import ContextHasher, ContextHashers, tree_digest
from engine.errors import BuildCancelled, BuildStepError, ShipyardError
from engine.graph.ops import SOURCE_OPS, CopyAction, ImageSource, LocalSource, VertexMeta
from engine.graph.vertex import Vertex, walk
from engine.progress.events import BuildMessage, EventBus, VertexCached, VertexCompleted, VertexLog, VertexStarted
from engine.solver.context import Engine
from engine.solver.execute import EMPTY, Result, run_vertex, source_result
from engine.solver.session import EMPTY_SESSION, BuildSession
from engine.solver.keys import KeyParts, content_parts, definition_parts

if TYPE_CHECKING:
    from cache.index import CacheRecord
    from cache.remote.protocol import RemoteCache, RemoteHit

LOG_TAIL_LINES = 12
DEFAULT_PARALLELISM = 32


@dataclass
class VertexState:
    vertex: Vertex
    name: str
    parts: KeyParts | None = None
    key: str | None = None
    content_key: str | None = None
    cached: bool = False
    executed: bool = False
    started: float = 0.0
    duration: float = 0.0
    error: str = ""
    result: Result | None = None
    cache_source: str = ""
    """The imported cache the result came from (`registry:REF`, …), when it did."""
    log_tail: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL_LINES))
    _partial_line: bytes = b""


@dataclass
class SolveOutcome:
    states: dict[str, VertexState]
    results: dict[str, Result]

    def state(self, vertex: Vertex) -> VertexState:
        return self.states[vertex.digest]


class Solver:
    def __init__(
        self,
        engine: Engine,
        bus: EventBus,
        meta: dict[str, list[VertexMeta]] | None = None,
        *,
        no_cache: bool = False,
        max_parallel: int = DEFAULT_PARALLELISM,
        hashers: ContextHashers | None = None,
        on_selection: Callable[[str, list[str], bool, bool, list[str], str], None] | None = None,
        on_snapshot: Callable[[int], None] | None = None,
        session: BuildSession = EMPTY_SESSION,
        no_cache_vertices: set[str] | None = None,
        remote: RemoteCache | None = None,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.meta = meta or {}
        self.no_cache = no_cache
        self.max_parallel = max_parallel
        self._hashers = hashers or ContextHashers(engine.index)
        self._on_selection = on_selection
        self._on_snapshot = on_snapshot
        self.session = session
        self._no_cache_vertices = no_cache_vertices or set()
        self.remote = remote
        self._cancel = threading.Event()
        self._first_user: dict[str, Vertex] = {}

    # ------------------------------------------------------------------ public

    def cancel(self) -> None:
        self._cancel.set()

    def solve(self, targets: list[Vertex]) -> SolveOutcome:
        order = list(walk(targets))
        states = {v.digest: VertexState(v, self._name(v)) for v in order}
        self._first_user = {}
        for vertex in order:
            for child in vertex.inputs:
                self._first_user.setdefault(child.digest, vertex)
        try:
            self._compute_keys(order, states)
        finally:
            self._hashers.flush()
        records = self.engine.index.lookup([s.key for s in states.values() if s.key])
        if self.remote is not None:
            self._load_remote(targets, states, records)
        needed = self._needed(targets, states, records)
        self._report_skipped(order, states, needed, records)
        self._run(order, states, needed, records)
        used_keys = [s.key for s in states.values() if s.key and s.cached and s.key in records]
        self.engine.index.touch_keys(used_keys)
        return SolveOutcome(states, {d: s.result for d, s in states.items() if s.result is not None})

    # ------------------------------------------------------------------ keys

    def _name(self, vertex: Vertex) -> str:
        metas = self.meta.get(vertex.digest)
        return metas[0].name if metas else type(vertex.op).__name__

    def _hasher(self, source: LocalSource) -> ContextHasher:
        return self._hashers.get(source.path, source.exclude_patterns)

    def _local_digest(self, vertex: Vertex, actions: list[CopyAction]) -> str:
        assert isinstance(vertex.op, LocalSource)
        source = vertex.op
        hasher = self._hasher(source)
        digests = []
        for a in actions:
            digest = hasher.digest_selection(a.src, follow_symlinks=a.follow_symlinks, allow_wildcard=a.allow_wildcard)
            if self._on_selection is not None:
                self._on_selection(
                    source.path, list(a.src), a.follow_symlinks, a.allow_wildcard, list(source.exclude_patterns), digest
                )
            digests.append(digest)
        return "|".join(digests)

    def _compute_keys(self, order: list[Vertex], states: dict[str, VertexState]) -> None:
        for vertex in order:
            state = states[vertex.digest]
            input_keys = [states[i.digest].key for i in vertex.inputs]
            try:
                state.parts = definition_parts(vertex, input_keys, self._local_digest)
            except ShipyardError as exc:
                raise _located(exc, self._location(vertex), state.name) from None
            state.key = state.parts.key() if state.parts else None

    def _location(self, vertex: Vertex) -> str:
        metas = self.meta.get(vertex.digest)
        return metas[0].location if metas else ""

    # ------------------------------------------------------------------ planning

    def _can_hit(self, state: VertexState) -> bool:
        if isinstance(state.vertex.op, SOURCE_OPS):
            return True
        return not (self.no_cache or state.vertex.digest in self._no_cache_vertices)

    def _needed(self, targets: list[Vertex], states: dict[str, VertexState], records: dict) -> set[str]:
        """Vertices whose results this build needs: stop descending at cache hits.

        A hit does not stop the descent when something below it must run regardless
        (`--no-cache-filter`): those steps run, as in BuildKit, though what they feed
        may still come from the cache.
        """
        forced = self._above_forced(targets)
        needed: set[str] = set()
        stack = list(targets)
        while stack:
            vertex = stack.pop()
            if vertex.digest in needed:
                continue
            needed.add(vertex.digest)
            state = states[vertex.digest]
            if isinstance(vertex.op, SOURCE_OPS):
                continue
            if state.key in records and self._can_hit(state) and vertex.digest not in forced:
                continue
            stack.extend(vertex.inputs)
        return needed

    def _above_forced(self, targets: list[Vertex]) -> set[str]:
        """Vertices with a no-cache vertex somewhere below them."""
        if not self._no_cache_vertices:
            return set()
        above: set[str] = set()
        for vertex in walk(targets):  # inputs come first
            if any(i.digest in above or i.digest in self._no_cache_vertices for i in vertex.inputs):
                above.add(vertex.digest)
        return above

    def _report_skipped(self, order: list[Vertex], states: dict[str, VertexState], needed: set[str], records: dict) -> None:
        """Vertices below a cache hit are cached too: report them so, without touching them."""
        for vertex in order:
            state = states[vertex.digest]
            if vertex.digest in needed or isinstance(vertex.op, (LocalSource,)):
                continue
            state.cached = True
            self.bus.publish(VertexCached(vertex.digest, state.name))

    # ------------------------------------------------------------------ imported caches

    def _load_remote(self, targets: list[Vertex], states: dict[str, VertexState], records: dict) -> None:
        """Local misses an imported cache has: plan with them, then load only where the plan stops.

        A remote hit stops the descent like a local one, so a hit below another hit is
        never fetched. The hits the plan reaches are loaded in parallel and join
        `records`; one that fails to load (a corrupt blob, a lost registry) is dropped
        and the plan made again, so its step simply runs.
        """
        assert self.remote is not None
        candidates = [
            s.key for s in states.values() if s.key and s.key not in records and not isinstance(s.vertex.op, SOURCE_OPS)
        ]
        hits = self.remote.lookup(candidates) if candidates else {}
        while hits:
            needed = self._needed(targets, states, {**hits, **records})
            frontier: dict[str, list[VertexState]] = {}
            for digest in needed:
                state = states[digest]
                if state.key in hits and self._can_hit(state) and not isinstance(state.vertex.op, SOURCE_OPS):
                    frontier.setdefault(state.key, []).append(state)
            if not frontier:
                return
            loaded, failed = self._load_hits(frontier, hits)
            records.update(loaded)
            for key in frontier:
                hits.pop(key, None)
            if not failed:
                return

    def _remote_content_hit(self, state: VertexState) -> CacheRecord | None:
        """A copy's content key, looked up in the imported caches once its sources are known."""
        assert self.remote is not None and state.content_key
        hit = self.remote.lookup([state.content_key]).get(state.content_key)
        if hit is None:
            return None
        return self._load_hits({hit.key: [state]}, {hit.key: hit})[0].get(hit.key)

    def _load_hits(
        self, frontier: dict[str, list[VertexState]], hits: dict[str, RemoteHit]
    ) -> tuple[dict[str, CacheRecord], bool]:
        """Load each hit (in parallel); returns the records that loaded and whether any failed."""
        assert self.remote is not None
        remote = self.remote
        loaded: dict[str, CacheRecord] = {}
        failed = False
        with ThreadPoolExecutor(max_workers=min(8, len(frontier)), thread_name_prefix="cache-import") as pool:
            futures = {key: pool.submit(remote.load, hits[key]) for key in frontier}
        for key, future in futures.items():
            error = future.exception()
            if error is None:
                loaded[key] = future.result()
                for state in frontier[key]:
                    state.cache_source = hits[key].source
            elif isinstance(error, (ShipyardError, OSError)):
                failed = True
                names = ", ".join(sorted({s.name for s in frontier[key]}))
                self.bus.publish(BuildMessage(f"WARNING: cache from {hits[key].source} not used for {names}: {error}"))
            else:
                raise error
        return loaded, failed

    # ------------------------------------------------------------------ running

    def _run(self, order: list[Vertex], states: dict[str, VertexState], needed: set[str], records: dict) -> None:
        graph: dict[str, set[str]] = {}
        for vertex in order:
            if vertex.digest not in needed:
                continue
            state = states[vertex.digest]
            hit = state.key in records and self._can_hit(state) and not isinstance(vertex.op, SOURCE_OPS)
            graph[vertex.digest] = set() if hit else {i.digest for i in vertex.inputs if i.digest in needed}
        sorter = graphlib.TopologicalSorter(graph)
        sorter.prepare()
        with ThreadPoolExecutor(max_workers=self.max_parallel, thread_name_prefix="solver") as pool:
            try:
                first_error = self._schedule(pool, sorter, states, records)
            except BaseException:  # Ctrl-C in this thread: stop the steps before the pool joins them
                self._cancel.set()
                raise
        if first_error is not None:
            raise first_error

    def _schedule(
        self, pool: ThreadPoolExecutor, sorter: graphlib.TopologicalSorter, states: dict[str, VertexState], records: dict
    ) -> BaseException | None:
        """Run every ready step until all are done or one failed; returns the first failure."""
        first_error: BaseException | None = None
        running: dict[Future[None], str] = {}
        while sorter.is_active():
            if first_error is None:
                for digest in sorter.get_ready():
                    future = pool.submit(self._process, states[digest], states, records)
                    running[future] = digest
            if not running:
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                digest = running.pop(future)
                error = future.exception()
                if error is None:
                    sorter.done(digest)
                elif first_error is None or isinstance(first_error, BuildCancelled):
                    if first_error is None or not isinstance(error, BuildCancelled):
                        first_error = error
                    self._cancel.set()
            if first_error is not None and not running:
                break
        return first_error

    def _process(self, state: VertexState, states: dict[str, VertexState], records: dict) -> None:
        vertex = state.vertex
        if self._cancel.is_set():
            raise BuildCancelled("build cancelled")
        if isinstance(vertex.op, SOURCE_OPS):
            try:
                state.result = source_result(self.engine, vertex)
            except ShipyardError as exc:  # name the step that reads the source (an ADD, a FROM)
                user = self._first_user.get(vertex.digest, vertex)
                raise _located(exc, self._location(vertex) or self._location(user), states[user.digest].name) from None
            if isinstance(vertex.op, ImageSource):
                state.cached = True
                self.bus.publish(VertexCached(vertex.digest, state.name))
            return
        record = records.get(state.key) if self._can_hit(state) else None
        if record is not None:
            self._mark_cached(state, record.snapshot, record.created)
            return
        inputs = [states[i.digest].result or EMPTY for i in vertex.inputs]
        assert state.parts is not None
        content = content_parts(state.parts, vertex, lambda idx, actions: self._stage_checksum(inputs[idx], actions))
        if content is not None:
            state.content_key = content.key()
            if self._can_hit(state):
                found = self.engine.index.lookup([state.content_key]).get(state.content_key)
                if found is None and self.remote is not None:
                    found = self._remote_content_hit(state)
                if found is not None:
                    self._mark_cached(state, found.snapshot, found.created)
                    self.engine.index.record([state.key], found.snapshot, state.name)
                    return
        if not self._can_hit(state) or not state.key:
            self._execute(state, inputs)
            return
        from cache.leases import step_lock

        with step_lock(self.engine.state.root, state.key, self._cancel):
            # Another build may have run this very step while we waited for the lock.
            keys = [k for k in (state.key, state.content_key) if k]
            found_now = self.engine.index.lookup(keys)
            record = found_now.get(state.key) or (found_now.get(state.content_key) if state.content_key else None)
            if record is not None:
                self._mark_cached(state, record.snapshot, record.created)
                missing = [k for k in keys if k not in found_now]
                if missing:
                    self.engine.index.record(missing, record.snapshot, state.name)
                return
            self._execute(state, inputs)

    def _mark_cached(self, state: VertexState, snapshot: int | None, created: float) -> None:
        state.cached = True
        state.result = Result(snapshot, created)
        self.bus.publish(VertexCached(state.vertex.digest, state.name))

    def _stage_checksum(self, source: Result, actions: list[CopyAction]) -> str:
        """Content digest of what `actions` select from another stage's snapshot (memoized)."""
        from engine.fs.selection import select_sources
        from engine.solver.keys import selector_of

        if source.snapshot is None:
            return "empty"
        selector = selector_of(actions)
        cached = self.engine.index.get_checksum(source.snapshot, selector)
        if cached is not None:
            return cached
        with self.engine.snapshotter.view(source.snapshot) as root:
            selections = []
            for action in actions:
                for src in action.src:
                    try:
                        selections.extend(
                            select_sources(root, src, allow_wildcard=action.allow_wildcard, follow_symlinks=action.follow_symlinks)
                        )
                    except ShipyardError:
                        return "missing:" + selector  # the copy itself reports the error
            digest = tree_digest(root, selections)
        self.engine.index.set_checksum(source.snapshot, selector, digest)
        return digest

    def _execute(self, state: VertexState, inputs: list[Result]) -> None:
        vertex = state.vertex
        state.started = time.time()
        self.bus.publish(VertexStarted(vertex.digest, state.name, state.started))

        def on_output(stream: int, data: bytes) -> None:
            self.bus.publish(VertexLog(vertex.digest, stream, data))
            _feed_tail(state, data)

        try:
            snapshot = run_vertex(
                self.engine, vertex, inputs, name=state.name, on_output=on_output, cancel=self._cancel, session=self.session
            )
        except BaseException as exc:
            state.duration = time.time() - state.started
            if state._partial_line:
                state.log_tail.append(state._partial_line.decode("utf-8", "replace"))
            state.error = str(exc) or type(exc).__name__
            self.bus.publish(VertexCompleted(vertex.digest, state.name, state.duration, error=state.error))
            if isinstance(exc, BuildCancelled):
                raise
            if isinstance(exc, BuildStepError):
                raise _with_tail(_disk_hint(exc, self.engine.state.root, state.log_tail), self._location(vertex), state) from None
            if isinstance(exc, ShipyardError):
                raise _disk_hint(_located(exc, self._location(vertex), state.name), self.engine.state.root, ()) from None
            if isinstance(exc, OSError):
                from cache.diskspace import disk_full_message, is_disk_full

                if is_disk_full(exc):
                    message = disk_full_message(f"running {state.name}", self.engine.state.root, exc.errno or 0)
                    raise BuildStepError(step=state.name, message=message, location=self._location(vertex)) from None
            raise
        keys = [k for k in (state.key, state.content_key) if k]
        created = self.engine.index.record(keys, snapshot, state.name)
        if snapshot is not None and self._on_snapshot is not None:
            self._on_snapshot(snapshot)
        state.result = Result(snapshot, created)
        state.executed = True
        state.duration = time.time() - state.started
        self.bus.publish(VertexCompleted(vertex.digest, state.name, state.duration))


def _feed_tail(state: VertexState, data: bytes) -> None:
    buf = state._partial_line + data
    *lines, state._partial_line = buf.split(b"\n")
    for line in lines:
        state.log_tail.append(line.decode("utf-8", "replace"))


def _disk_hint(exc: ShipyardError, root: object, tail: "deque[str] | tuple[()]") -> ShipyardError:
    """A step that failed saying "No space left on device" (its own error, or its output),
    or a RUN that failed with the state directory full, most likely failed for that — its
    layer is written in the state directory: say so, where, and what helps."""
    from cache.diskspace import disk_full_message, nearly_full

    if not isinstance(exc, BuildStepError):
        return exc
    full = ("No space left on device", "Disk quota exceeded")
    said = any(f in exc.message for f in full) or any(f in line for line in tail for f in full)
    if not (said or (exc.exit_status is not None and nearly_full(str(root)))):
        return exc
    return BuildStepError(
        step=exc.step,
        message=f"{exc.message}; {disk_full_message('the step wrote its layer', str(root))}",
        location=exc.location,
        exit_status=exc.exit_status,
        output_tail=exc.output_tail,
    )


def _with_tail(exc: BuildStepError, location: str, state: VertexState) -> BuildStepError:
    return BuildStepError(
        step=exc.step or state.name,
        message=exc.message,
        location=exc.location or location,
        exit_status=exc.exit_status,
        output_tail=tuple(state.log_tail),
    )


def _located(exc: ShipyardError, location: str, name: str) -> ShipyardError:
    """Give a step's error its Dockerfile location, unless it already has one."""
    if isinstance(exc, BuildStepError) or not location:
        return exc
    located = BuildStepError(step=name, message=exc.user_message(), location=location)
    located.exit_code = exc.exit_code
    return located
