"""What `inspect` and `history` say about an image, in docker's shapes.

`inspect` returns the object `docker image inspect` prints (Id, RepoTags, RepoDigests,
Created, Config with every container.Config field, RootFS, Metadata, …) so tools that
read docker's JSON read ours. Two fields are Shipyard's own answer to docker's: the
manifest digest appears as `RepoDigests` (`name@sha256:…`, as docker's containerd
store reports it) and as `Descriptor`, and `GraphDriver` names the snapshot layer
directories. Sizes are the layers' uncompressed tar sizes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine.imagemgmt.catalog import ImageEntry
from engine.oci.image import Image, Manifest, Timestamp
from engine.reference import parse_reference
from engine.solver.context import Engine

MISSING = "<missing>"


@dataclass(frozen=True)
class ImageDetails:
    """An image's stored parts, read once for `inspect`/`history`/`images`."""

    entry: ImageEntry
    image: Image
    config_raw: dict[str, Any]
    manifest: Manifest
    manifest_size: int
    layer_sizes: tuple[int, ...]
    layer_dirs: tuple[str, ...]

    @property
    def size(self) -> int:
        return sum(self.layer_sizes)

    @property
    def created(self) -> Timestamp | None:
        return self.image.created


def load_details(engine: Engine, entry: ImageEntry) -> ImageDetails:
    store = engine.store
    config_bytes = store.read(entry.id)
    manifest_bytes = store.read(entry.manifest)
    manifest = Manifest.from_json(manifest_bytes)
    chain = engine.index.chain(entry.snapshot) if entry.snapshot is not None else []
    sizes = []
    for i, row in enumerate(chain):
        size = row.layer.tar_size
        if size is None:
            size = manifest.layers[i].size if i < len(manifest.layers) else 0
        sizes.append(size)
    dirs = tuple(engine.snapshotter.layer_path(row.layer.dir) for row in chain)
    raw = json.loads(config_bytes)
    return ImageDetails(
        entry, Image.from_json(config_bytes), raw if isinstance(raw, dict) else {}, manifest, len(manifest_bytes),
        tuple(sizes), dirs,
    )


def _time_text(stamp: Timestamp | None) -> str:
    return stamp.format() if stamp is not None else "0001-01-01T00:00:00Z"


def _container_config(image: Image) -> dict[str, Any]:
    """The image config in the shape of docker's container.Config (nulls where docker has them)."""
    c = image.config
    out: dict[str, Any] = {
        "Hostname": "",
        "Domainname": "",
        "User": c.user,
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
    }
    if c.exposed_ports:
        out["ExposedPorts"] = {port: {} for port in c.exposed_ports}
    out.update({"Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": list(c.env) or None, "Cmd": list(c.cmd) or None})
    if c.healthcheck is not None:
        out["Healthcheck"] = c.healthcheck.to_dict()
    if c.args_escaped:
        out["ArgsEscaped"] = True
    out.update(
        {
            "Image": "",
            "Volumes": {v: {} for v in c.volumes} or None,
            "WorkingDir": c.working_dir,
            "Entrypoint": list(c.entrypoint) or None,
            "OnBuild": list(c.on_build) or None,
            "Labels": dict(c.labels) or None,
        }
    )
    if c.stop_signal:
        out["StopSignal"] = c.stop_signal
    if c.shell:
        out["Shell"] = list(c.shell)
    return out


def inspect_image(engine: Engine, details: ImageDetails) -> dict[str, Any]:
    entry, image = details.entry, details.image
    names = entry.names
    repo_tags = [parse_reference(name).familiar() for name in names]
    digests: list[str] = []
    for row in entry.rows:
        if row.name == row.config:
            continue
        repository = parse_reference(row.name)._replace(tag="", digest=row.manifest).familiar()
        if repository not in digests:
            digests.append(repository)
    comment = details.config_raw.get("comment")
    if not isinstance(comment, str):
        comment = image.history[-1].comment if image.history else ""
    out: dict[str, Any] = {
        "Id": entry.id,
        "RepoTags": repo_tags,
        "RepoDigests": sorted(digests),
        "Parent": "",
        "Comment": comment,
        "Created": _time_text(image.created),
        "DockerVersion": str(details.config_raw.get("docker_version") or ""),
        "Author": image.author,
        "Config": _container_config(image),
        "Architecture": image.architecture,
    }
    if image.variant:
        out["Variant"] = image.variant
    out["Os"] = image.os
    if image.os_version:
        out["OsVersion"] = image.os_version
    out["Size"] = details.size
    dirs = list(reversed(details.layer_dirs))  # top layer first, as overlay's lowerdir lists them
    data: dict[str, str] = {}
    if dirs:
        data["UpperDir"] = dirs[0]
        if len(dirs) > 1:
            data["LowerDir"] = ":".join(dirs[1:])
    out["GraphDriver"] = {"Data": data or None, "Name": "overlay" if engine.snapshotter.layer_format == "overlay" else "copy"}
    out["RootFS"] = {"Type": "layers", "Layers": list(image.diff_ids)}
    tagged = Timestamp(int(entry.last_tagged * 1_000_000_000)) if names else None
    out["Metadata"] = {"LastTagTime": _time_text(tagged)}
    out["Descriptor"] = {
        "mediaType": details.manifest.effective_media_type,
        "digest": entry.manifest,
        "size": details.manifest_size,
    }
    return out


@dataclass(frozen=True)
class HistoryRow:
    """One `docker history` line: newest step first; the top one carries the image ID."""

    id: str
    created: Timestamp | None
    created_by: str
    size: int
    comment: str


def image_history(details: ImageDetails) -> list[HistoryRow]:
    entries = details.image.history
    sizes = list(details.layer_sizes)
    rows: list[HistoryRow] = []
    layer = 0
    for entry in entries:
        size = 0
        if not entry.empty_layer:
            size = sizes[layer] if layer < len(sizes) else 0
            layer += 1
        rows.append(HistoryRow(MISSING, entry.created, entry.created_by, size, entry.comment))
    if not entries:  # an image without history: one row per layer, as docker shows it
        rows = [HistoryRow(MISSING, details.image.created, "", size, "") for size in sizes]
    rows.reverse()
    if rows:
        top = rows[0]
        rows[0] = HistoryRow(details.entry.id, top.created, top.created_by, top.size, top.comment)
    return rows
