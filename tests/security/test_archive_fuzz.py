"""Hostile layers, generated: the extractor accepts a layer or refuses it with a LayerError,
never another exception, never a hang — and nothing outside its root changes.

Layers are random stacks of hostile member shapes (`..` and absolute names, writes
through symlinks and hard links planted by the same or an earlier layer, directories
replaced by files, whiteouts, devices, PAX overrides, odd modes), in four tar dialects,
and the same with header fields and bytes mutated. The strategies and the property live
in `benchmarks.fuzz_targets`, which `python -m benchmarks.fuzz` runs for longer.
"""

from __future__ import annotations

import io
import os
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from benchmarks.fuzz_targets import MODES, OUT, UP, Layer, Member, Mutation, archive_cases, check_layers, layer_stacks
from engine.fs.extract import LayerError, extract_layer

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(
    max_examples=200,
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("archive-fuzz")


@pytest.mark.parametrize("mode", MODES)
def test_hostile_layers_stay_inside(workdir: Path, mode: str) -> None:
    @FUZZ
    @given(layer_stacks())
    def run(stack: list[Layer]) -> None:
        check_layers(workdir, mode, stack)

    run()


@FUZZ
@given(archive_cases(mutate=True))
def test_mutated_tars_stay_inside(workdir: Path, case: tuple[str, list[Layer]]) -> None:
    check_layers(workdir, *case)


# --------------------------------------------------------------------------- the property itself can fail


def _escaping(stream: io.BytesIO, dest: str, *, mode: str) -> None:
    with open(os.path.join(dest, "..", "escaped"), "w") as handle:
        handle.write("x")


def _through_the_host(stream: io.BytesIO, dest: str, *, mode: str) -> None:
    host = Path(dest).parent.parent / "host"
    os.chmod(host / "secret.txt", 0o600)  # metadata only: ctime catches it


def _linking_out(stream: io.BytesIO, dest: str, *, mode: str) -> None:
    os.link(Path(dest).parent.parent / "host" / "keep.txt", os.path.join(dest, "kept"))


def _leaking(stream: io.BytesIO, dest: str, *, mode: str) -> None:
    _leaking.fds.append(os.open(dest, os.O_PATH))  # type: ignore[attr-defined]


_leaking.fds = []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "extract, message",
    [
        (_escaping, "outside the extraction root"),
        (_through_the_host, "outside the extraction root"),
        (_linking_out, "outside the extraction root"),
        (_leaking, "leaked file descriptors"),
    ],
)
def test_the_property_sees_escapes_and_leaks(workdir: Path, extract, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AssertionError, match=message):
        check_layers(workdir, "oci", [Layer((Member("file", "a"),))], extract=extract)
    for fd in _leaking.fds:  # type: ignore[attr-defined]
        os.close(fd)
    _leaking.fds.clear()  # type: ignore[attr-defined]


def test_the_property_lets_foreign_exceptions_through(workdir: Path) -> None:
    def crash(stream: io.BytesIO, dest: str, *, mode: str) -> None:
        raise OverflowError("uid is less than minimum")

    with pytest.raises(OverflowError):
        check_layers(workdir, "apply", [Layer((Member("file", "a"),))], extract=crash)


def test_hostile_placeholders_reach_the_host_tree(workdir: Path) -> None:
    """The generated names really aim at the sentinel: a plain extractor would write there."""

    def naive(stream: io.BytesIO, dest: str, *, mode: str) -> None:
        import tarfile

        with tarfile.open(fileobj=stream) as tar:
            member = tar.next()
            assert member is not None
            Path(dest, member.name).write_bytes(b"pwned")  # joins as a host path: the bug the property exists for

    with pytest.raises(AssertionError, match="outside the extraction root"):
        check_layers(workdir, "oci", [Layer((Member("file", f"{UP}{OUT}/victim/pwn"),))], extract=naive)


# --------------------------------------------------------------------------- what the fuzzing found

# Base-256 and PAX numbers of any size reached chown/utime/makedev and failed there as
# OverflowError (not a LayerError); a base-256 -1 owner silently meant "leave unchanged".
_OUT_OF_RANGE = [
    ("pax-uid", Member("file", "f", pax=(("uid", "4294967296"),)), ()),
    ("pax-gid", Member("file", "f", pax=(("gid", "4294967295"),)), ()),
    ("pax-mtime", Member("dir", "d", pax=(("mtime", "99999999999999999999"),)), ()),
    ("base256-uid-minus-one", Member("file", "f"), (Mutation("field", 0, field="uid", raw=b"\xff" * 8),)),
    ("base256-uid-minus-two", Member("file", "f"), (Mutation("field", 0, field="uid", raw=b"\xff" * 7 + b"\xfe"),)),
    ("base256-mtime", Member("file", "f"), (Mutation("field", 0, field="mtime", raw=b"\x80" + b"\xff" * 11),)),
    ("devmajor", Member("block", "b", devmajor=1, devminor=1), (Mutation("field", 0, field="devmajor", raw=b"\xff" * 8),)),
    ("devminor-huge", Member("char", "c", devmajor=1, devminor=1), (Mutation("field", 0, field="devminor", raw=b"7" * 7 + b"\0"),)),
]  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case, member, mutations", _OUT_OF_RANGE, ids=[c[0] for c in _OUT_OF_RANGE])
def test_out_of_range_numbers_are_refused_by_name(
    workdir: Path, tmp_path: Path, mode: str, case: str, member: Member, mutations: tuple[Mutation, ...]
) -> None:
    from benchmarks.fuzz_targets import layer_bytes

    data = layer_bytes(Layer((member,), "pax", mutations), str(tmp_path))
    with pytest.raises(LayerError, match=f'"{member.name}/?": .* out of range'):
        extract_layer(io.BytesIO(data), str(tmp_path), mode=mode)  # type: ignore[arg-type]
    check_layers(workdir, mode, [Layer((member,), "pax", mutations)])


@pytest.mark.parametrize("mode", MODES)
def test_a_directory_whose_parent_became_a_link_loop_is_skipped_at_the_end(tmp_path: Path, mode: str) -> None:
    """Directory modes and times are set after the last member; a parent replaced by a
    self-referencing link made that lookup fail with ELOOP, which escaped as an OSError."""
    from benchmarks.fuzz_targets import layer_bytes

    stack = (Member("dir", "a"), Member("dir", "a/sub"), Member("symlink", "a", link="a"))
    data = layer_bytes(Layer(stack), str(tmp_path))
    (tmp_path / "root").mkdir()
    stats = extract_layer(io.BytesIO(data), str(tmp_path / "root"), mode=mode)  # type: ignore[arg-type]
    assert stats.dirs == 2 and os.readlink(tmp_path / "root" / "a") == "a"


@pytest.mark.parametrize("seconds", [0, -1, -(1 << 31), 1 << 31, 4_000_000_000])
def test_times_before_1970_and_after_2038_are_kept(tmp_path: Path, seconds: int) -> None:
    from benchmarks.fuzz_targets import layer_bytes

    data = layer_bytes(Layer((Member("file", "f", pax=(("mtime", str(seconds)),)),)), str(tmp_path))
    extract_layer(io.BytesIO(data), str(tmp_path), mode="oci")
    assert os.lstat(tmp_path / "f").st_mtime_ns == seconds * 1_000_000_000
