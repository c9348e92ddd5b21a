"""`rmi`: untag, and forget an image once no name is left — docker's rules.

- By name: the name is removed ("Untagged"); if it was the image's last name the image
  record goes too ("Deleted"). Refused, unless forced, when it is the last name of an
  image a container uses: the container would be left on a nameless image.
- By ID: every name is removed and the image deleted. Refused, unless forced, when the
  names span several repositories (the user probably meant one of them) or when a
  container uses the image.

Only records are removed. Snapshots and blobs stay until garbage collection, which
also sees what other images, containers and the build cache still use — so removing
an image can never take data from under another one.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import ShipyardError
from engine.imagemgmt.catalog import ImageCatalog
from engine.reference import parse_reference


class ImageConflictError(ShipyardError):
    """A removal docker would refuse without `--force` (image in use, several repositories)."""


@dataclass(frozen=True)
class Removal:
    """One line of `rmi` output: ("Untagged", "busybox:latest") or ("Deleted", "sha256:…")."""

    action: str
    subject: str

    def __str__(self) -> str:
        return f"{self.action}: {self.subject}"


def _short(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:12]


def remove_image(catalog: ImageCatalog, ref: str, *, force: bool, in_use: set[str]) -> list[Removal]:
    """Remove one IMAGE argument; raises ImageNotFoundError, AmbiguousImageError or ImageConflictError."""
    match = catalog.lookup(ref)
    entry = match.entry
    used = entry.id in in_use
    names = entry.names
    out: list[Removal] = []
    if match.by_name:
        name = match.row.name
        last = names == (name,)
        if last and used and not force:
            raise ImageConflictError(
                f'conflict: unable to remove repository reference "{ref}" (must force) - '
                f"a container is using its referenced image {_short(entry.id)}"
            )
        catalog.untag(name)
        out.append(Removal("Untagged", parse_reference(name).familiar()))
        if not last:
            return out
    else:
        repositories = {parse_reference(name).repository for name in names}
        if not force:
            if len(repositories) > 1:
                raise ImageConflictError(
                    f"conflict: unable to delete {_short(entry.id)} (must be forced) - "
                    "image is referenced in multiple repositories"
                )
            if used:
                raise ImageConflictError(
                    f"conflict: unable to delete {_short(entry.id)} (must be forced) - image is being used by a container"
                )
        for name in names:
            catalog.untag(name)
            out.append(Removal("Untagged", parse_reference(name).familiar()))
    catalog.delete(entry.id)
    out.append(Removal("Deleted", entry.id))
    return out
