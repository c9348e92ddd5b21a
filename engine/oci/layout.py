"""Write images as an OCI image layout (directory or tar) or a docker-archive tarball.

What the readers need:
- OCI layout (skopeo `oci:`, umoci, BuildKit's `oci` exporter): `oci-layout`,
  `index.json` whose manifests carry `org.opencontainers.image.ref.name` (the tag)
  and `io.containerd.image.name` (the full name), and `blobs/sha256/<hex>`.
- docker-archive (`docker load`, skopeo `docker-archive:`): `manifest.json`
  (`[{"Config", "RepoTags", "Layers"}]`) pointing at files in the tar; like
  BuildKit's `docker` exporter we point it at the same `blobs/sha256/` files and
  add `index.json`/`oci-layout`, so the tar is also an OCI layout.

Every blob is copied from its source while its digest and size are checked, so a
corrupt store never produces an archive that names the wrong content. Tars are
written in one pass in a fixed order with fixed metadata: the same images give the
same bytes. Output is atomic: a temp file or directory next to `dest`, renamed into
place only when complete; a failed export leaves no half-written file behind.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable, Protocol, Sequence

from engine.errors import ExportError, ShipyardError
from engine.fs.tarformat import DIRTYPE, END_OF_ARCHIVE, REGTYPE, encode_header, padding
from engine.oci import mediatypes
from engine.oci.image import Descriptor, Image, ImageFormatError, Index, Manifest, go_json, sha256_digest

__all__ = ["BlobSource", "ExportImage", "write_docker_archive", "write_oci_layout"]

_CHUNK = 1 << 20
_OCI_LAYOUT = go_json({"imageLayoutVersion": mediatypes.OCI_LAYOUT_VERSION})


class BlobSource(Protocol):
    """Where layer blobs come from (the content store, a pulled image, a test's files)."""

    def open_blob(self, digest: str) -> BinaryIO:
        """The blob's bytes exactly as its descriptor says (compressed or not)."""
        ...


@dataclass(frozen=True)
class ExportImage:
    """One image to export: its manifest and config as exact bytes, and its names."""

    manifest: bytes
    config: bytes
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Name:
    full: str  # docker.io/library/busybox:latest
    familiar: str  # busybox:latest
    tag: str  # latest


@dataclass(frozen=True)
class _Blob:
    digest: str
    size: int
    data: bytes | None  # in-memory (manifest, config) or None: read from the BlobSource


@dataclass(frozen=True)
class _Planned:
    manifest: Manifest
    manifest_descriptor: Descriptor
    names: tuple[_Name, ...]


def _normalize_name(name: str) -> _Name:
    from engine.reference import parse_reference

    try:
        ref = parse_reference(name)
    except ShipyardError as exc:
        raise ExportError(f"invalid image name {name!r}: {exc}") from None
    if ref.digest:
        raise ExportError(f"image name {name!r}: an export name needs a tag, not a digest")
    return _Name(full=str(ref), familiar=ref.familiar(), tag=ref.tag)


def _plan(images: Sequence[ExportImage], *, for_docker: bool) -> tuple[list[_Planned], list[_Blob]]:
    if not images:
        raise ExportError("nothing to export: no images given")
    planned: list[_Planned] = []
    blobs: dict[str, _Blob] = {}
    for number, image in enumerate(images, 1):
        what = f"image {number}" + (f" ({image.names[0]})" if image.names else "")
        try:
            manifest = Manifest.from_json(image.manifest)
        except ImageFormatError as exc:
            raise ExportError(f"{what}: {exc}") from None
        config_digest = sha256_digest(image.config)
        if manifest.config.digest != config_digest or manifest.config.size != len(image.config):
            raise ExportError(
                f"{what}: the manifest names config {manifest.config.digest} ({manifest.config.size} bytes) "
                f"but the config given is {config_digest} ({len(image.config)} bytes)"
            )
        if for_docker:
            _check_docker_loadable(what, manifest, image.config)
        for layer in manifest.layers:
            if mediatypes.is_index(layer.media_type) or mediatypes.is_manifest(layer.media_type):
                raise ExportError(f"{what}: layer {layer.digest} is a manifest, not a layer")
        media_type = manifest.effective_media_type
        descriptor = Descriptor.of(media_type, image.manifest)
        names = tuple(_normalize_name(n) for n in image.names)
        planned.append(_Planned(manifest, descriptor, names))
        blobs.setdefault(descriptor.digest, _Blob(descriptor.digest, descriptor.size, image.manifest))
        blobs.setdefault(config_digest, _Blob(config_digest, len(image.config), image.config))
        for layer in manifest.layers:
            previous = blobs.setdefault(layer.digest, _Blob(layer.digest, layer.size, None))
            if previous.size != layer.size:
                raise ExportError(f"{what}: layer {layer.digest} is listed with two sizes")
    ordered = sorted(blobs.values(), key=lambda b: b.digest)
    for blob in ordered:
        if not blob.digest.startswith("sha256:"):
            raise ExportError(f"blob {blob.digest}: only sha256 digests can be stored in blobs/sha256")
    return planned, ordered


def _check_docker_loadable(what: str, manifest: Manifest, config: bytes) -> None:
    for layer in manifest.layers:
        compression = mediatypes.layer_compression(layer.media_type)
        if compression not in ("gzip", "uncompressed"):
            raise ExportError(
                f"{what}: layer {layer.digest} has media type {layer.media_type!r}; "
                "a docker archive can only hold uncompressed or gzip layers"
            )
    try:
        image = Image.from_json(config)
    except ImageFormatError as exc:
        raise ExportError(f"{what}: {exc}") from None
    if len(image.diff_ids) != len(manifest.layers):
        raise ExportError(
            f"{what}: the config lists {len(image.diff_ids)} diff_ids but the manifest has {len(manifest.layers)} layers"
        )


def _index_json(planned: list[_Planned]) -> bytes:
    """index.json as BuildKit's exporters write it: one entry per name (or one, unnamed)."""
    entries: list[Descriptor] = []
    for item in planned:
        base = item.manifest_descriptor
        if not item.names:
            entries.append(base)
        for name in item.names:
            annotations = (
                (mediatypes.ANNOTATION_CONTAINERD_IMAGE_NAME, name.full),
                (mediatypes.ANNOTATION_REF_NAME, name.tag),
            )
            entries.append(Descriptor(base.media_type, base.digest, base.size, annotations=annotations))
    return Index(manifests=tuple(entries), media_type=mediatypes.OCI_INDEX).to_json()


def _manifest_json(planned: list[_Planned]) -> bytes:
    """docker save's manifest.json, pointing into blobs/sha256."""
    entries = []
    for item in planned:
        entries.append(
            {
                "Config": _blob_path(item.manifest.config.digest),
                "RepoTags": [name.familiar for name in item.names],
                "Layers": [_blob_path(layer.digest) for layer in item.manifest.layers],
            }
        )
    return go_json(entries)


def _blob_path(digest: str) -> str:
    algorithm, hexpart = digest.split(":", 1)
    return f"blobs/{algorithm}/{hexpart}"


def _copy_verified(blob: _Blob, source: BlobSource, write: Callable[[bytes], object]) -> None:
    """Write the blob's bytes, checking size and digest on the way (ExportError on mismatch)."""
    if blob.data is not None:
        write(blob.data)
        return
    try:
        stream = source.open_blob(blob.digest)
    except ShipyardError:
        raise
    except (OSError, KeyError, LookupError) as exc:
        raise ExportError(f"blob {blob.digest} is not available: {exc}") from None
    hasher = hashlib.sha256()
    copied = 0
    try:
        while True:
            chunk = stream.read(_CHUNK)
            if not chunk:
                break
            copied += len(chunk)
            if copied > blob.size:
                raise ExportError(f"blob {blob.digest} is larger than its descriptor's {blob.size} bytes")
            hasher.update(chunk)
            write(chunk)
    finally:
        stream.close()
    if copied != blob.size:
        raise ExportError(f"blob {blob.digest} has {copied} bytes, its descriptor says {blob.size}")
    if "sha256:" + hasher.hexdigest() != blob.digest:
        raise ExportError(f"blob {blob.digest} does not match its digest (sha256:{hasher.hexdigest()})")


# --------------------------------------------------------------------------- tar output


class _TarOut:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def directory(self, name: str) -> None:
        self.out.write(encode_header(name.encode() + b"/", DIRTYPE, mode=0o755))

    def file(self, name: str, size: int, fill: Callable[[Callable[[bytes], object]], None]) -> None:
        self.out.write(encode_header(name.encode(), REGTYPE, mode=0o644, size=size))
        fill(self.out.write)
        self.out.write(padding(size))

    def data(self, name: str, data: bytes) -> None:
        self.file(name, len(data), lambda write: write(data))

    def close(self) -> None:
        self.out.write(END_OF_ARCHIVE)


def _write_tar(
    dest: str, blobs: list[_Blob], source: BlobSource, metadata: Iterable[tuple[str, bytes]]
) -> None:
    """A tar of blobs/ plus the metadata files, entries in path order, written atomically."""
    dest = os.path.abspath(dest)
    if os.path.isdir(dest):
        raise ExportError(f"{dest} is a directory; a tar export needs a file path")
    parent = os.path.dirname(dest)
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(dest)}.", suffix=".tmp")
    except OSError as exc:
        raise ExportError(f"cannot write {dest}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb", buffering=_CHUNK) as raw:
            tar = _TarOut(raw)
            tar.directory("blobs")
            tar.directory("blobs/sha256")
            for blob in blobs:
                tar.file(_blob_path(blob.digest), blob.size, lambda write, b=blob: _copy_verified(b, source, write))
            for name, data in sorted(metadata):
                tar.data(name, data)
            tar.close()
            raw.flush()
            os.fchmod(raw.fileno(), 0o644)
            os.fsync(raw.fileno())
        os.replace(tmp, dest)
        _fsync_dir(parent)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise ExportError(f"cannot write {dest}: {exc.strerror or exc}") from None
        raise


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- directory output


def _write_file(path: str, fill: Callable[[Callable[[bytes], object]], None]) -> None:
    with open(path, "wb", buffering=_CHUNK) as out:
        fill(out.write)
        out.flush()
        os.fsync(out.fileno())


def _write_layout_dir(dest: str, blobs: list[_Blob], source: BlobSource, index: bytes) -> None:
    dest = os.path.abspath(dest)
    parent = os.path.dirname(dest)
    if os.path.lexists(dest):
        if not os.path.isdir(dest) or os.path.islink(dest):
            raise ExportError(f"{dest} exists and is not a directory")
        if os.listdir(dest) and not os.path.isfile(os.path.join(dest, "oci-layout")):
            raise ExportError(f"{dest} exists, is not empty and is not an OCI layout; refusing to replace it")
    try:
        tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(dest)}.", suffix=".tmp")
    except OSError as exc:
        raise ExportError(f"cannot write {dest}: {exc.strerror}") from None
    try:
        os.chmod(tmp, 0o755)
        blob_dir = os.path.join(tmp, "blobs", "sha256")
        os.makedirs(blob_dir)
        for blob in blobs:
            _write_file(os.path.join(tmp, _blob_path(blob.digest)), lambda write, b=blob: _copy_verified(b, source, write))
        _write_file(os.path.join(tmp, "oci-layout"), lambda write: write(_OCI_LAYOUT))
        _write_file(os.path.join(tmp, "index.json"), lambda write: write(index))
        for path in (blob_dir, os.path.dirname(blob_dir), tmp):
            _fsync_dir(path)
        _swap_into_place(tmp, dest)
        _fsync_dir(parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise ExportError(f"cannot write {dest}: {exc.strerror or exc}") from None
        raise


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _swap_into_place(tmp: str, dest: str) -> None:
    """Put the finished directory at `dest`, atomically exchanging it with an old layout."""
    if not os.path.lexists(dest):
        os.rename(tmp, dest)
        return
    import ctypes

    from engine.linux import libc

    func = getattr(libc(), "renameat2", None)
    if func is not None:
        result = func(
            ctypes.c_int(_AT_FDCWD), os.fsencode(tmp), ctypes.c_int(_AT_FDCWD), os.fsencode(dest),
            ctypes.c_uint(_RENAME_EXCHANGE),
        )
        if result == 0:
            shutil.rmtree(tmp)  # now holds the old layout
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), dest)
    old = tempfile.mkdtemp(dir=os.path.dirname(dest), prefix=f".{os.path.basename(dest)}.", suffix=".old")
    os.rmdir(old)
    os.rename(dest, old)
    os.rename(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- public API


def write_oci_layout(dest: str, images: Sequence[ExportImage], blobs: BlobSource, *, as_tar: bool) -> None:
    """Write `images` as an OCI image layout: a directory at `dest`, or a tar file there."""
    planned, ordered = _plan(images, for_docker=False)
    index = _index_json(planned)
    if as_tar:
        _write_tar(dest, ordered, blobs, (("index.json", index), ("oci-layout", _OCI_LAYOUT)))
    else:
        _write_layout_dir(dest, ordered, blobs, index)


def write_docker_archive(dest: str, images: Sequence[ExportImage], blobs: BlobSource) -> None:
    """Write `images` as a tar that `docker load` and skopeo's `docker-archive:` read."""
    planned, ordered = _plan(images, for_docker=True)
    metadata = (
        ("index.json", _index_json(planned)),
        ("manifest.json", _manifest_json(planned)),
        ("oci-layout", _OCI_LAYOUT),
    )
    _write_tar(dest, ordered, blobs, metadata)

