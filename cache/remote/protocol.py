"""The solver's seam to imported caches: ask which keys they have, then load just the ones used.

Two steps on purpose. `lookup` answers from metadata already in memory (no I/O), so
the solver can plan as if every remote hit were local and stop descending at each
one; `load` then runs only for the hits the plan reaches — it fetches those layer
blobs, checks them, unpacks them into snapshots and records the key in the local
index, so the next build is a local hit. A hit below another hit is never loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from cache.index import CacheRecord


@dataclass(frozen=True)
class RemoteHit:
    """A cache key an imported cache has a result for, and which cache (`registry:REF`, …)."""

    key: str
    source: str


class RemoteCache(Protocol):
    def lookup(self, keys: Sequence[str]) -> dict[str, RemoteHit]:
        """The keys among `keys` some imported cache has (metadata only, no fetching)."""
        ...

    def load(self, hit: RemoteHit) -> CacheRecord:
        """Fetch, verify and unpack the hit's layers; record its key locally.

        Raises a ShipyardError when that fails (a corrupt or missing blob): the caller
        then treats the key as a miss and runs the step.
        """
        ...
