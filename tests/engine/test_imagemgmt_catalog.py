"""Name and ID resolution, tag and rmi rules, on a real state directory's index."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ImageNotFoundError, UsageError
from engine.imagemgmt.catalog import AmbiguousImageError, ImageCatalog
from engine.imagemgmt.remove import ImageConflictError, remove_image
from engine.solver.context import Engine

ID_A = "sha256:abc1" + "0" * 60
ID_B = "sha256:abc2" + "0" * 60
ID_C = "sha256:f00d" + "0" * 60
MANIFEST_A = "sha256:" + "1" * 64
MANIFEST_B = "sha256:" + "2" * 64


@pytest.fixture
def catalog(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = Engine.open(tmp_path / "state", snapshotter="copy")
    index = engine.index
    index.put_image("docker.io/library/app:1", MANIFEST_A, ID_A, None)
    index.put_image("docker.io/library/app:2", MANIFEST_A, ID_A, None)
    index.put_image("docker.io/library/other:1", MANIFEST_B, ID_B, None)
    index.put_image("oci-layout:///some/layout:1", MANIFEST_B, ID_C, None)  # a build context's private record
    yield ImageCatalog(engine)
    engine.close()


def _lines(removals) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(r) for r in removals]


def test_lookup_by_name_id_prefix_and_digest(catalog: ImageCatalog) -> None:
    assert catalog.lookup("app:1").by_name and catalog.lookup("app:1").entry.id == ID_A
    assert catalog.lookup("docker.io/library/app:2").row.name == "docker.io/library/app:2"
    assert catalog.lookup("abc1").entry.id == ID_A and not catalog.lookup("abc1").by_name
    assert catalog.lookup("sha256:abc2").entry.id == ID_B
    assert catalog.lookup(ID_A[7:]).entry.id == ID_A
    assert catalog.lookup("other@" + MANIFEST_B).entry.id == ID_B
    with pytest.raises(AmbiguousImageError, match="'abc' is ambiguous: it matches 2 images"):
        catalog.lookup("abc")
    with pytest.raises(ImageNotFoundError, match="No such image: f00d"):
        catalog.lookup("f00d")  # only an oci-layout build-context record has it
    with pytest.raises(ImageNotFoundError, match="No such image: app:3"):
        catalog.lookup("app:3")
    with pytest.raises(UsageError):
        catalog.lookup("Not/Valid")


def test_entries_group_names_by_id(catalog: ImageCatalog) -> None:
    entries = {e.id: e.names for e in catalog.entries()}
    assert entries == {ID_A: ("docker.io/library/app:1", "docker.io/library/app:2"), ID_B: ("docker.io/library/other:1",)}


def test_rmi_by_name_untags_until_the_last_name(catalog: ImageCatalog) -> None:
    assert _lines(remove_image(catalog, "app:1", force=False, in_use=set())) == ["Untagged: app:1"]
    assert _lines(remove_image(catalog, "app:2", force=False, in_use=set())) == ["Untagged: app:2", f"Deleted: {ID_A}"]
    assert catalog.entry(ID_A) is None
    with pytest.raises(ImageNotFoundError):
        remove_image(catalog, "app:2", force=False, in_use=set())


def test_rmi_by_id_removes_every_name_of_one_repository(catalog: ImageCatalog) -> None:
    lines = _lines(remove_image(catalog, "abc1", force=False, in_use=set()))
    assert lines == ["Untagged: app:1", "Untagged: app:2", f"Deleted: {ID_A}"]


def test_rmi_by_id_refuses_several_repositories_unless_forced(catalog: ImageCatalog) -> None:
    catalog.tag(catalog.lookup("app:1").row, "elsewhere/app:1")
    with pytest.raises(ImageConflictError, match="unable to delete abc100000000 .must be forced. - image is referenced in multiple repositories"):
        remove_image(catalog, "abc1", force=False, in_use=set())
    assert len(catalog.entry(ID_A).names) == 3
    lines = _lines(remove_image(catalog, "abc1", force=True, in_use=set()))
    assert lines[-1] == f"Deleted: {ID_A}" and len(lines) == 4


def test_rmi_refuses_an_image_a_container_uses(catalog: ImageCatalog) -> None:
    used = {ID_B}
    with pytest.raises(ImageConflictError, match='unable to remove repository reference "other:1" .must force.'):
        remove_image(catalog, "other:1", force=False, in_use=used)
    with pytest.raises(ImageConflictError, match="image is being used by a container"):
        remove_image(catalog, ID_B, force=False, in_use=used)
    assert catalog.entry(ID_B) is not None
    # not its last name: untagging is fine, the image stays
    catalog.tag(catalog.lookup("other:1").row, "other:2")
    assert _lines(remove_image(catalog, "other:2", force=False, in_use=used)) == ["Untagged: other:2"]
    assert _lines(remove_image(catalog, "other:1", force=True, in_use=used)) == ["Untagged: other:1", f"Deleted: {ID_B}"]


def test_tag_refuses_digests_and_nameless_images_keep_an_id_record(catalog: ImageCatalog) -> None:
    with pytest.raises(UsageError, match="digest reference"):
        catalog.tag(catalog.lookup("app:1").row, "app@" + MANIFEST_A)
    row = catalog.lookup("other:1").row
    catalog.untag(row.name)
    catalog.keep_nameless(row)
    entry = catalog.lookup(ID_B).entry
    assert entry.names == () and entry.manifest == MANIFEST_B
    assert _lines(remove_image(catalog, ID_B[7:19], force=False, in_use=set())) == [f"Deleted: {ID_B}"]
