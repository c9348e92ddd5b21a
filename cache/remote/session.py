"""The build's side of remote caching: parse the flags, open the imports, export after the build.

`shipyard build` calls three things from here, each a line or two:
`RemoteCacheSession.from_flags` (before anything else, so a bad flag fails fast),
`open_imports` (before the solve; the result is the solver's `remote`), and after a
successful solve `inline` (for `type=inline`, before the image is stored) and
`export` (every other `--cache-to`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Sequence

from cache.remote.spec import CacheExport, CacheImport, parse_cache_from, parse_cache_to
from engine.errors import ShipyardError

if TYPE_CHECKING:
    from cache.remote.collect import ResultRecord
    from cache.remote.imports import ImportedCaches
    from engine.graph.vertex import Vertex
    from engine.images import BuiltImage
    from engine.layers import LayerBlobs
    from engine.progress.events import EventBus
    from engine.registry.client import RegistryClient
    from engine.solver.context import Engine
    from engine.solver.solver import SolveOutcome


def _say(bus: "EventBus", text: str) -> None:
    from engine.progress.events import BuildMessage

    bus.publish(BuildMessage(text))


def _size(n: int) -> str:
    if n < 1000:
        return f"{n}B"
    value = n / 1000
    for unit in ("kB", "MB"):
        if value < 1000:
            return f"{value:.1f}{unit}"
        value /= 1000
    return f"{value:.1f}GB"


class RemoteCacheSession:
    """The parsed flags, and the one registry client the build's imports and exports share."""

    def __init__(self, imports: tuple[CacheImport, ...], exports: tuple[CacheExport, ...]) -> None:
        self.imports = imports
        self.exports = exports
        self.imported: ImportedCaches | None = None
        self._client: RegistryClient | None = None
        self._client_lock = threading.Lock()

    def registry_client(self) -> "RegistryClient":
        """Created on first use (httpx is imported only by builds that talk to a registry)."""
        with self._client_lock:
            if self._client is None:
                from engine.registry.client import RegistryClient

                self._client = RegistryClient.from_environment()
            return self._client

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    @classmethod
    def from_flags(cls, cache_from: Sequence[str], cache_to: Sequence[str]) -> "RemoteCacheSession | None":
        if not cache_from and not cache_to:
            return None
        return cls(tuple(map(parse_cache_from, cache_from)), tuple(map(parse_cache_to, cache_to)))

    @property
    def wants_inline(self) -> bool:
        return any(e.type == "inline" for e in self.exports)

    # ------------------------------------------------------------------ import

    def open_imports(self, engine: "Engine", bus: "EventBus") -> "ImportedCaches | None":
        """Every --cache-from source's records (metadata only); None when none could be read."""
        if not self.imports:
            return None
        from cache.remote.imports import load_sources

        caches = load_sources(engine, self.imports, self.registry_client, warn=lambda text: _say(bus, f"WARNING: {text}"))
        for cache in caches.caches.values():
            _say(bus, f"importing cache from {cache.name}: {len(cache.by_key)} records")
        self.imported = caches if caches else None
        return self.imported

    # ------------------------------------------------------------------ export

    def _records(self, engine: "Engine", outcome: "SolveOutcome", target: "Vertex", mode: str) -> "list[ResultRecord]":
        from cache.remote.collect import collect_records
        from engine.graph.ops import SOURCE_OPS

        keys = [
            key
            for state in outcome.states.values()
            if not isinstance(state.vertex.op, SOURCE_OPS)
            for key in (state.key, state.content_key)
            if key
        ]
        result = outcome.results.get(target.digest)
        return collect_records(engine, keys, result.snapshot if result else None, mode, self.imported)

    def inline(self, engine: "Engine", blobs: "LayerBlobs", built: "BuiltImage", outcome: "SolveOutcome", target: "Vertex") -> "BuiltImage":
        """The image with its cache records in its config, when `--cache-to type=inline` asks for it."""
        if not self.wants_inline:
            return built
        from cache.remote.collect import build_inline_config
        from cache.remote.export import inline_image

        records = self._records(engine, outcome, target, "min")
        config = build_inline_config(engine, blobs, records, engine.index.chain(built.snapshot), _base_snapshots(engine, outcome))
        return inline_image(engine, built, config)

    def export(self, engine: "Engine", blobs: "LayerBlobs", outcome: "SolveOutcome", target: "Vertex", bus: "EventBus") -> None:
        """Write every non-inline --cache-to (an error fails the build unless ignore-error=true)."""
        try:
            for spec in self.exports:
                if spec.type == "inline":
                    continue
                try:
                    self._export_one(engine, blobs, outcome, target, bus, spec)
                except ShipyardError as exc:
                    if not spec.ignore_error:
                        raise
                    _say(bus, f"WARNING: cache export to {spec.describe()} failed: {exc.user_message()}")
        finally:
            self.close()

    def _export_one(self, engine, blobs, outcome, target, bus, spec: CacheExport) -> None:  # type: ignore[no-untyped-def]
        from cache.remote.collect import build_config
        from cache.remote.export import cache_artifact, push_registry, write_local

        records = self._records(engine, outcome, target, spec.mode)
        tails = [layer for record in records for layer in record.tail]
        if tails and self.imported is not None:
            self.imported.fetch_blobs(tails)  # records only an imported cache had: carried on
        artifact = cache_artifact(build_config(engine, blobs, records, spec.compression, _base_snapshots(engine, outcome)))
        if spec.type == "local":
            write_local(spec.dest, spec.tag, artifact, engine.store)
        else:
            push_registry(self.registry_client(), spec.ref, artifact, engine.store)
        _say(
            bus,
            f"exporting cache to {spec.describe()} done: {len(records)} records, "
            f"{len(artifact.layers)} layers, {_size(artifact.size)} ({artifact.manifest_digest})",
        )



def _base_snapshots(engine: "Engine", outcome: "SolveOutcome") -> frozenset[int]:
    """Snapshots of the base images this build uses (resolved or not: skipped FROMs count too)."""
    from engine.graph.ops import ImageSource

    out: set[int] = set()
    for state in outcome.states.values():
        op = state.vertex.op
        if isinstance(op, ImageSource):
            for row in engine.index.images_by_manifest(op.manifest_digest):
                out.update(r.id for r in engine.index.chain(row.snapshot))
    return frozenset(out)
