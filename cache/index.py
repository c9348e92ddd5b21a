"""The cache index: one SQLite database (WAL) for everything that must survive a build.

Tables: layers (a directory of changes, its diff_id once known), snapshots (a layer on
top of a parent snapshot: a chain), cache_keys (cache key → snapshot), build_memo (a whole build's inputs → its result), stat_cache
(local-context file stat → content digest), checksums (memoized content digests of
immutable snapshots), images (name → manifest/config), blob_variants (compressed
blobs made from a layer), meta. WAL lets several shipyard processes share one state
directory; every write is a short transaction, so a killed process loses at most the
step it was running.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

from cache.leases import Leases
from engine.errors import CacheError

SCHEMA_VERSION = 8

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS layers(
    id INTEGER PRIMARY KEY,
    dir TEXT NOT NULL UNIQUE,
    format TEXT NOT NULL,
    diff_id TEXT,
    tar_size INTEGER,
    created REAL NOT NULL,
    blob TEXT,
    blob_media_type TEXT
);
CREATE INDEX IF NOT EXISTS layers_diff_id ON layers(diff_id);
CREATE TABLE IF NOT EXISTS snapshots(
    id INTEGER PRIMARY KEY,
    parent INTEGER REFERENCES snapshots(id),
    layer INTEGER NOT NULL REFERENCES layers(id),
    created REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS snapshots_chain ON snapshots(ifnull(parent, 0), layer);
CREATE TABLE IF NOT EXISTS cache_keys(
    key TEXT PRIMARY KEY,
    snapshot INTEGER REFERENCES snapshots(id),
    created REAL NOT NULL,
    last_used REAL NOT NULL,
    description TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stat_cache(
    root TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    digest TEXT NOT NULL,
    hashed_ns INTEGER NOT NULL,
    PRIMARY KEY(root, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS selection_fingerprints(
    root TEXT NOT NULL,
    selector TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    digest TEXT NOT NULL,
    hashed_ns INTEGER NOT NULL,
    PRIMARY KEY(root, selector)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS copy_lineage(
    lineage TEXT PRIMARY KEY,
    layer INTEGER NOT NULL REFERENCES layers(id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS layer_files(
    layer INTEGER NOT NULL REFERENCES layers(id),
    src TEXT NOT NULL,
    dst TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    recorded_ns INTEGER NOT NULL,
    PRIMARY KEY(layer, src)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checksums(
    snapshot INTEGER NOT NULL,
    selector TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY(snapshot, selector)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS images(
    name TEXT PRIMARY KEY,
    manifest TEXT NOT NULL,
    config TEXT NOT NULL,
    snapshot INTEGER REFERENCES snapshots(id),
    created REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS build_memo(
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS containers(
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image TEXT NOT NULL,
    image_name TEXT NOT NULL,
    created REAL NOT NULL,
    state TEXT NOT NULL,
    pid INTEGER,
    exit_code INTEGER,
    spec TEXT NOT NULL DEFAULT '{}',
    runtime_state TEXT NOT NULL DEFAULT '{}'
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blob_variants(
    diff_id TEXT NOT NULL,
    compression TEXT NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY(diff_id, compression)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS layer_usage(
    layer INTEGER PRIMARY KEY REFERENCES layers(id),
    bytes INTEGER NOT NULL
);
"""


class LayerRow(NamedTuple):
    id: int
    dir: str
    format: str
    diff_id: str | None
    tar_size: int | None
    blob: str | None = None
    """For a layer that came as a blob (pulled, loaded, imported from a layout): the
    original blob, kept in the content store. Its tar is the layer's identity (the
    diff_id was checked against it on the way in), so exports use it as is."""
    blob_media_type: str | None = None


class SnapshotRow(NamedTuple):
    id: int
    parent: int | None
    layer: LayerRow
    created: float


class CacheRecord(NamedTuple):
    key: str
    snapshot: int | None
    created: float


class StatRow(NamedTuple):
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    mode: int
    digest: str
    hashed_ns: int


class ContainerRow(NamedTuple):
    """A container (see engine.containers): `spec` is its plan as JSON, `runtime_state`
    how to find its processes (runtime, pids with start times, bound ports) as JSON."""

    id: str
    name: str
    image: str
    image_name: str
    created: float
    state: str
    pid: int | None
    exit_code: int | None
    spec: str
    runtime_state: str


_CONTAINER_COLUMNS = "id, name, image, image_name, created, state, pid, exit_code, spec, runtime_state"


class ImageRow(NamedTuple):
    name: str
    manifest: str
    config: str
    snapshot: int | None
    created: float


# Rows are NamedTuples, not dataclasses: the no-op rebuild path imports this module,
# and a NamedTuple costs a fraction of a dataclass to define.


class CacheIndex:
    """Thread-safe access to the index; one connection guarded by a lock per process.

    Every snapshot, layer and blob the index hands out is noted in this process's
    lease (`cache.leases`) in the same GC-lock hold as the query, so a concurrent
    `prune` keeps it for as long as this process lives.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.leases = Leases.of(Path(path).parent)
        self._lock = threading.RLock()
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise _index_error(exc, path, "opening") from None
            self._move_aside(exc)
            self._open()

    def _move_aside(self, exc: sqlite3.DatabaseError) -> None:
        """A corrupt index is disposable (blobs and layer dirs are the durable part): start cold.

        What the old index described becomes unreferenced, and the next `prune` removes it.
        """
        import logging

        try:
            self._db.close()
        except (AttributeError, sqlite3.Error):
            pass
        aside = f"{self.path}.corrupt-{int(time.time())}"
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(f"{self.path}{suffix}", aside + suffix)
            except FileNotFoundError:
                pass
        logging.getLogger("shipyard.cache").warning("index %s is corrupt (%s): moved to %s, starting cold", self.path, exc, aside)

    def _open(self) -> None:
        path = self.path
        self._db = sqlite3.connect(str(path), timeout=60.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            with self.transaction() as db:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                columns = {row[1] for row in db.execute("PRAGMA table_info(layers)")}
                for column in ("blob", "blob_media_type"):  # added in schema 5
                    if column not in columns:
                        db.execute(f"ALTER TABLE layers ADD COLUMN {column} TEXT")
                container_columns = {row[1] for row in db.execute("PRAGMA table_info(containers)")}
                if "runtime_state" not in container_columns:  # added in schema 7
                    db.execute("ALTER TABLE containers ADD COLUMN runtime_state TEXT NOT NULL DEFAULT '{}'")
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, so writers from several processes queue instead of failing.

        A full disk rolls the transaction back and becomes one clear CacheError.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if _disk_full(exc, self.path):
                    raise _index_error(exc, self.path, "writing") from None
                raise

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ----------------------------------------------------------------- meta

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    # ----------------------------------------------------------------- layers and snapshots

    def add_snapshot(
        self,
        parent: int | None,
        layer_dir: str,
        layer_format: str,
        *,
        diff_id: str | None = None,
        tar_size: int | None = None,
        blob: str | None = None,
        blob_media_type: str | None = None,
    ) -> int:
        """Record a new layer directory on top of `parent`; returns the snapshot id."""
        now = time.time()
        with self.leases.guard():
            with self.transaction() as db:
                layer_id = db.execute(
                    "INSERT INTO layers(dir, format, created, diff_id, tar_size, blob, blob_media_type)"
                    " VALUES(?, ?, ?, ?, ?, ?, ?)",
                    (layer_dir, layer_format, now, diff_id, tar_size, blob, blob_media_type),
                ).lastrowid
                snapshot = int(
                    db.execute(
                        "INSERT INTO snapshots(parent, layer, created, last_used) VALUES(?, ?, ?, ?)",
                        (parent, layer_id, now, now),
                    ).lastrowid
                )
            self.leases.hold(snapshots=[snapshot])
        return snapshot

    def splice_snapshot(self, parent: int | None, layer_id: int) -> int:
        """A snapshot that reuses an existing layer on a new parent (merges, no copying)."""
        now = time.time()
        with self.leases.guard():
            with self.transaction() as db:
                row = db.execute(
                    "SELECT id FROM snapshots WHERE ifnull(parent, 0)=ifnull(?, 0) AND layer=?", (parent, layer_id)
                ).fetchone()
                if row:
                    snapshot = int(row[0])
                else:
                    snapshot = int(
                        db.execute(
                            "INSERT INTO snapshots(parent, layer, created, last_used) VALUES(?, ?, ?, ?)",
                            (parent, layer_id, now, now),
                        ).lastrowid
                    )
            self.leases.hold(snapshots=[snapshot])
        return snapshot

    def snapshot(self, snapshot_id: int) -> SnapshotRow:
        rows = self._query(
            "SELECT s.id, s.parent, s.created, l.id, l.dir, l.format, l.diff_id, l.tar_size, l.blob, l.blob_media_type "
            "FROM snapshots s JOIN layers l ON l.id = s.layer WHERE s.id=?",
            (snapshot_id,),
        )
        if not rows:
            raise KeyError(snapshot_id)
        sid, parent, created, *layer = rows[0]
        return SnapshotRow(sid, parent, LayerRow(*layer), created)

    def chain(self, snapshot_id: int | None) -> list[SnapshotRow]:
        """The snapshot and its ancestors, bottom (base layer) first."""
        out: list[SnapshotRow] = []
        current = snapshot_id
        while current is not None:
            row = self.snapshot(current)
            out.append(row)
            current = row.parent
        out.reverse()
        return out

    def set_layer_origin(self, layer_id: int, diff_id: str, tar_size: int, blob: str, media_type: str) -> None:
        """A layer that came as a blob: its diff_id and the original blob that carries it."""
        with self.transaction() as db:
            db.execute(
                "UPDATE layers SET diff_id=?, tar_size=?, blob=?, blob_media_type=? WHERE id=?",
                (diff_id, tar_size, blob, media_type, layer_id),
            )

    def set_layer_diff(self, layer_id: int, diff_id: str, tar_size: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE layers SET diff_id=?, tar_size=? WHERE id=?", (diff_id, tar_size, layer_id))

    def layer_by_diff_id(self, diff_id: str) -> LayerRow | None:
        rows = self._query(
            "SELECT id, dir, format, diff_id, tar_size, blob, blob_media_type FROM layers WHERE diff_id=? LIMIT 1",
            (diff_id,),
        )
        return LayerRow(*rows[0]) if rows else None

    def touch_snapshots(self, snapshot_ids: Iterable[int]) -> None:
        ids = list(snapshot_ids)
        if not ids:
            return
        now = time.time()
        with self.transaction() as db:
            db.executemany("UPDATE snapshots SET last_used=? WHERE id=?", [(now, i) for i in ids])

    # ----------------------------------------------------------------- cache keys

    def lookup(self, keys: Sequence[str]) -> dict[str, CacheRecord]:
        """Every known record among `keys`, in one query."""
        if not keys:
            return {}
        out: dict[str, CacheRecord] = {}
        with self.leases.guard():
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for key, snap, created in self._query(
                    f"SELECT key, snapshot, created FROM cache_keys WHERE key IN ({marks})", chunk
                ):
                    out[key] = CacheRecord(key, snap, created)
            self.leases.hold(snapshots={r.snapshot for r in out.values()})
        return out

    def record(self, keys: Iterable[str], snapshot: int | None, description: str) -> float:
        """Point every key at `snapshot`; returns the record's creation time."""
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO cache_keys(key, snapshot, created, last_used, description) VALUES(?,?,?,?,?)",
                [(key, snapshot, now, now, description) for key in keys],
            )
        return now

    def touch_keys(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if not keys:
            return
        now = time.time()
        with self.transaction() as db:
            db.executemany("UPDATE cache_keys SET last_used=? WHERE key=?", [(now, k) for k in keys])

    # ----------------------------------------------------------------- stat cache

    def load_stat_cache(self, root: str) -> dict[str, StatRow]:
        return {
            path: StatRow(*rest)
            for path, *rest in self._query(
                "SELECT path, size, mtime_ns, ctime_ns, ino, mode, digest, hashed_ns FROM stat_cache WHERE root=?",
                (root,),
            )
        }

    def get_fingerprint(self, root: str, selector: str) -> tuple[str, str, int] | None:
        """(stat fingerprint, digest, when hashed) recorded for a selection of a context."""
        rows = self._query(
            "SELECT fingerprint, digest, hashed_ns FROM selection_fingerprints WHERE root=? AND selector=?",
            (root, selector),
        )
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def save_stat_cache(
        self, root: str, rows: dict[str, StatRow], fingerprints: dict[str, tuple[str, str, int]] | None = None
    ) -> None:
        if not rows and not fingerprints:
            return
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO selection_fingerprints(root, selector, fingerprint, digest, hashed_ns)"
                " VALUES(?,?,?,?,?)",
                [(root, selector, *value) for selector, value in (fingerprints or {}).items()],
            )
            db.executemany(
                "INSERT OR REPLACE INTO stat_cache(root, path, size, mtime_ns, ctime_ns, ino, mode, digest, hashed_ns)"
                " VALUES(?,?,?,?,?,?,?,?,?)",
                [
                    (root, path, r.size, r.mtime_ns, r.ctime_ns, r.ino, r.mode, r.digest, r.hashed_ns)
                    for path, r in rows.items()
                ],
            )

    # ----------------------------------------------------------------- COPY lineage (file reuse)

    def get_lineage(self, lineage: str) -> tuple[str, list[tuple]] | None:
        """The layer directory of the last run of a COPY, and where each source file went."""
        with self.leases.guard():
            rows = self._query(
                "SELECT l.id, l.dir FROM copy_lineage c JOIN layers l ON l.id = c.layer WHERE c.lineage=?", (lineage,)
            )
            if not rows:
                return None
            layer_id, layer_dir = rows[0]
            self.leases.hold(layers=[layer_dir])  # its files are the hard-link sources of the next copy
        files = self._query(
            "SELECT src, dst, size, mtime_ns, ctime_ns, ino, recorded_ns FROM layer_files WHERE layer=?", (layer_id,)
        )
        return layer_dir, files

    def set_lineage(self, lineage: str, layer_id: int, files: list[tuple]) -> None:
        with self.transaction() as db:
            previous = db.execute("SELECT layer FROM copy_lineage WHERE lineage=?", (lineage,)).fetchone()
            db.execute("INSERT OR REPLACE INTO copy_lineage(lineage, layer) VALUES(?, ?)", (lineage, layer_id))
            if previous and previous[0] != layer_id:
                still_used = db.execute("SELECT 1 FROM copy_lineage WHERE layer=? LIMIT 1", (previous[0],)).fetchone()
                if not still_used:
                    db.execute("DELETE FROM layer_files WHERE layer=?", (previous[0],))
            db.executemany(
                "INSERT OR REPLACE INTO layer_files(layer, src, dst, size, mtime_ns, ctime_ns, ino, recorded_ns)"
                " VALUES(?,?,?,?,?,?,?,?)",
                [(layer_id, *row) for row in files],
            )

    # ----------------------------------------------------------------- snapshot checksums

    def get_checksum(self, snapshot: int, selector: str) -> str | None:
        rows = self._query("SELECT digest FROM checksums WHERE snapshot=? AND selector=?", (snapshot, selector))
        return rows[0][0] if rows else None

    def set_checksum(self, snapshot: int, selector: str, digest: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO checksums(snapshot, selector, digest) VALUES(?,?,?)",
                (snapshot, selector, digest),
            )

    # ----------------------------------------------------------------- images

    def put_image(self, name: str, manifest: str, config: str, snapshot: int | None) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO images(name, manifest, config, snapshot, created) VALUES(?,?,?,?,?)",
                (name, manifest, config, snapshot, time.time()),
            )

    def delete_image(self, name: str) -> None:
        """Forget one name (the image's data stays until garbage collection)."""
        with self.transaction() as db:
            db.execute("DELETE FROM images WHERE name=?", (name,))

    def delete_images_of(self, config: str, keep_prefix: str) -> None:
        """Forget every name of an image (by config digest), except names starting `keep_prefix`."""
        with self.transaction() as db:
            db.execute("DELETE FROM images WHERE config=? AND name NOT LIKE ?", (config, keep_prefix + "%"))

    def set_snapshots_created(self, times: list[tuple[float, int]]) -> None:
        """(created, snapshot id) pairs: creation times carried over from where a layer was built."""
        if times:
            with self.transaction() as db:
                db.executemany("UPDATE snapshots SET created=? WHERE id=?", times)

    def snapshot_on(self, parent: int | None, diff_id: str) -> int | None:
        """A snapshot whose layer has `diff_id`, on top of `parent` (a layer already unpacked there)."""
        with self.leases.guard():
            rows = self._query(
                "SELECT s.id FROM snapshots s JOIN layers l ON l.id = s.layer"
                " WHERE ifnull(s.parent, 0) = ifnull(?, 0) AND l.diff_id = ? LIMIT 1",
                (parent, diff_id),
            )
            found = int(rows[0][0]) if rows else None
            self.leases.hold(snapshots=[found])
        return found

    def _hold_images(self, rows: list[ImageRow]) -> None:
        self.leases.hold(snapshots=[r.snapshot for r in rows], blobs=[d for r in rows for d in (r.manifest, r.config)])

    def get_image(self, name: str) -> ImageRow | None:
        with self.leases.guard():
            rows = [ImageRow(*row) for row in self._query("SELECT name, manifest, config, snapshot, created FROM images WHERE name=?", (name,))]
            self._hold_images(rows)
        return rows[0] if rows else None

    def list_images(self) -> list[ImageRow]:
        return [
            ImageRow(*row)
            for row in self._query("SELECT name, manifest, config, snapshot, created FROM images ORDER BY name")
        ]

    def images_by_manifest(self, manifest: str) -> list[ImageRow]:
        with self.leases.guard():
            rows = [
                ImageRow(*row)
                for row in self._query(
                    "SELECT name, manifest, config, snapshot, created FROM images WHERE manifest=?", (manifest,)
                )
            ]
            self._hold_images(rows)
        return rows

    # ----------------------------------------------------------------- whole-build memo

    def get_memo(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM build_memo WHERE key=?", (key,))
        return rows[0][0] if rows else None

    def set_memo(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO build_memo(key, value, created) VALUES(?,?,?)", (key, value, time.time()))

    # ----------------------------------------------------------------- containers

    def images_in_use(self) -> set[str]:
        """Image IDs (config digests) of every container that exists, running or not."""
        return {row[0] for row in self._query("SELECT DISTINCT image FROM containers")}

    def add_container(self, row: ContainerRow) -> bool:
        """Insert a new container; False when its name is taken."""
        try:
            with self.transaction() as db:
                db.execute(f"INSERT INTO containers({_CONTAINER_COLUMNS}) VALUES(?,?,?,?,?,?,?,?,?,?)", tuple(row))
        except sqlite3.IntegrityError:
            return False
        return True

    def get_container(self, container_id: str) -> ContainerRow | None:
        rows = self._query(f"SELECT {_CONTAINER_COLUMNS} FROM containers WHERE id=?", (container_id,))
        return ContainerRow(*rows[0]) if rows else None

    def list_containers(self) -> list[ContainerRow]:
        return [ContainerRow(*row) for row in self._query(f"SELECT {_CONTAINER_COLUMNS} FROM containers ORDER BY created DESC")]

    def update_container(
        self,
        container_id: str,
        *,
        state: str,
        pid: int | None,
        exit_code: int | None,
        runtime_state: str,
        only_from: tuple[str, ...] = (),
    ) -> bool:
        """Record a state change; with `only_from`, only from one of those states (False otherwise)."""
        sql = "UPDATE containers SET state=?, pid=?, exit_code=?, runtime_state=? WHERE id=?"
        args: tuple[object, ...] = (state, pid, exit_code, runtime_state, container_id)
        if only_from:
            sql += f" AND state IN ({','.join('?' * len(only_from))})"
            args += tuple(only_from)
        with self.transaction() as db:
            return db.execute(sql, args).rowcount > 0

    def remove_container(self, container_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM containers WHERE id=?", (container_id,))

    # ----------------------------------------------------------------- compressed blobs

    def get_variant(self, diff_id: str, compression: str) -> tuple[str, int] | None:
        with self.leases.guard():
            rows = self._query(
                "SELECT digest, size FROM blob_variants WHERE diff_id=? AND compression=?", (diff_id, compression)
            )
            self.leases.hold(blobs=[rows[0][0]] if rows else [])
        return (rows[0][0], rows[0][1]) if rows else None

    def set_variant(self, diff_id: str, compression: str, digest: str, size: int) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO blob_variants(diff_id, compression, digest, size) VALUES(?,?,?,?)",
                (diff_id, compression, digest, size),
            )

    # ----------------------------------------------------------------- garbage collection and checks
    # Whole-table reads and one deleting transaction for `cache.gc` and `cache.fsck`.

    def all_snapshots(self) -> list[tuple[int, int | None, int, float, float]]:
        """(id, parent, layer id, created, last_used) of every snapshot."""
        return self._query("SELECT id, parent, layer, created, last_used FROM snapshots")

    def all_layers(self) -> list[tuple[LayerRow, float]]:
        """Every layer with its creation time."""
        return [
            (LayerRow(*row[:7]), row[7])
            for row in self._query("SELECT id, dir, format, diff_id, tar_size, blob, blob_media_type, created FROM layers")
        ]

    def all_keys(self) -> list[tuple[str, int | None, float, float, str]]:
        """(key, snapshot, created, last_used, description) of every cache record."""
        return self._query("SELECT key, snapshot, created, last_used, description FROM cache_keys")

    def cache_key_stats(self) -> tuple[int, float | None]:
        """How many cache records there are, and the oldest last use among them."""
        count, oldest = self._query("SELECT count(*), min(last_used) FROM cache_keys")[0]
        return int(count), oldest

    def all_variants(self) -> list[tuple[str, str, str, int]]:
        """(diff_id, compression, digest, size) of every compressed blob made from a layer."""
        return self._query("SELECT diff_id, compression, digest, size FROM blob_variants")

    def all_memos(self) -> list[tuple[str, str]]:
        return self._query("SELECT key, value FROM build_memo")

    def lineage_layers(self) -> list[tuple[str, int]]:
        """(lineage, layer id) of every COPY lineage, and ("", layer) for file lists no lineage names."""
        rows = self._query("SELECT lineage, layer FROM copy_lineage")
        rows += [("", layer) for (layer,) in self._query("SELECT DISTINCT layer FROM layer_files WHERE layer NOT IN (SELECT layer FROM copy_lineage)")]
        return rows

    def checksum_snapshots(self) -> set[int]:
        return {row[0] for row in self._query("SELECT DISTINCT snapshot FROM checksums")}

    def meta_keys(self, prefix: str) -> list[str]:
        return [row[0] for row in self._query("SELECT key FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))]

    def layer_usage(self) -> dict[int, int]:
        """Bytes on disk of each measured layer (layers are immutable: measured once)."""
        return dict(self._query("SELECT layer, bytes FROM layer_usage"))

    def set_layer_usage(self, usage: dict[int, int]) -> None:
        if not usage:
            return
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO layer_usage(layer, bytes) SELECT ?, ? WHERE EXISTS (SELECT 1 FROM layers WHERE id=?)",
                [(layer, size, layer) for layer, size in usage.items()],
            )

    def remove_unused(
        self,
        *,
        keys: Iterable[str] = (),
        snapshots: Iterable[int] = (),
        layers: Iterable[int] = (),
        images: Iterable[str] = (),
        memos: Iterable[str] = (),
        variants: Iterable[str] = (),
        meta: Iterable[str] = (),
        checksums: Iterable[int] = (),
        lineages: Iterable[str] = (),
    ) -> None:
        """Delete records in one transaction, references before what they reference.

        Callers hold the GC lock exclusive and have decided that nothing still used
        is in these sets; foreign keys are checked at commit, so the order of rows
        within one kind does not matter.
        """
        layer_ids = [(i,) for i in layers]
        snapshot_ids = [(i,) for i in snapshots]
        with self.transaction() as db:
            db.execute("PRAGMA defer_foreign_keys=ON")
            db.executemany("DELETE FROM images WHERE name=?", [(n,) for n in images])
            db.executemany("DELETE FROM cache_keys WHERE key=?", [(k,) for k in keys])
            db.executemany("DELETE FROM build_memo WHERE key=?", [(k,) for k in memos])
            db.executemany("DELETE FROM blob_variants WHERE digest=?", [(d,) for d in variants])
            db.executemany("DELETE FROM meta WHERE key=?", [(k,) for k in meta])
            db.executemany("DELETE FROM checksums WHERE snapshot=?", [(i,) for i in checksums] + snapshot_ids)
            db.executemany("DELETE FROM copy_lineage WHERE lineage=?", [(n,) for n in lineages])
            db.executemany("DELETE FROM copy_lineage WHERE layer=?", layer_ids)
            db.executemany("DELETE FROM layer_files WHERE layer=?", layer_ids)
            db.executemany("DELETE FROM layer_usage WHERE layer=?", layer_ids)
            db.executemany("DELETE FROM snapshots WHERE id=?", snapshot_ids)
            db.executemany("DELETE FROM layers WHERE id=?", layer_ids)

    def integrity_problems(self) -> list[str]:
        """SQLite's own quick check, and every row whose foreign key points nowhere."""
        try:
            problems = [row[0] for row in self._query("PRAGMA quick_check") if row[0] != "ok"]
            for table, rowid, parent, _ in self._query("PRAGMA foreign_key_check"):
                problems.append(f"{table} row {rowid} refers to a missing {parent} row")
        except sqlite3.DatabaseError as exc:
            return [f"the database cannot be read: {exc}"]
        return problems


def _disk_full(exc: sqlite3.Error, path: Path | None = None) -> bool:
    """SQLITE_FULL, or an I/O error on a filesystem with (almost) no space left."""
    if getattr(exc, "sqlite_errorcode", None) == 13 or "disk is full" in str(exc):
        return True
    if path is not None and "disk I/O error" in str(exc):
        from cache.diskspace import nearly_full

        return nearly_full(Path(path).parent)
    return False


def _index_error(exc: sqlite3.Error, path: Path, doing: str) -> CacheError:
    if _disk_full(exc, path):
        from cache.diskspace import disk_full_message

        return CacheError(disk_full_message(f"{doing} the cache index", Path(path).parent, errno.ENOSPC))
    return CacheError(f"cannot use the cache index {path}: {exc}")
