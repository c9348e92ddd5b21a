"""Dockerfile → graph: reachability, stage references, step names, config and history."""

from __future__ import annotations

import pytest

from engine.errors import DockerfileError, ImageNotFoundError, ShipyardError
from engine.graph.ops import CopyAction, ExecOp, FileOp, ImageSource, LocalSource, MkdirAction
from engine.graph.vertex import walk
from engine.oci.image import HistoryEntry, Image, ImageConfig, Timestamp
from frontends.base import ResolvedImage
from frontends.dockerfile.lowering import BuildParams, lower_dockerfile
from frontends.dockerfile.parser import parse_dockerfile

BASE = Image(
    config=ImageConfig(cmd=("sh",)),
    history=(HistoryEntry(created=Timestamp.from_seconds(1), comment="Imported from -"),),
    diff_ids=("sha256:" + "1" * 64,),
)


class StoreResolver:
    """The frontend's resolver contract over a dict (the engine's is the image store)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def resolve(self, ref: str) -> ResolvedImage:
        self.asked.append(ref)
        if ref.startswith("busybox") or ref.startswith("alpine"):
            return ResolvedImage(f"docker.io/library/{ref}", "sha256:" + "f" * 64, BASE)
        raise ImageNotFoundError(f"image {ref!r} is not in the local image store")


def lower(text: str, **params):  # type: ignore[no-untyped-def]
    resolver = StoreResolver()
    built = lower_dockerfile(parse_dockerfile(text), BuildParams(context_path="/ctx", **params), resolver)
    return built, resolver


def test_only_stages_reachable_from_the_target_are_lowered_and_resolved() -> None:
    built, resolver = lower(
        "FROM alpine AS unused\nRUN exit 1\nFROM busybox:1 AS a\nRUN echo a\nFROM a AS b\nRUN echo b\n", target="a"
    )
    assert resolver.asked == ["busybox:1"]
    runs = [v.op.args[-1] for v in walk([built.target]) if isinstance(v.op, ExecOp)]
    assert runs == ["echo a"]
    assert [s.name for s in built.steps] == ["[a 1/2] FROM docker.io/library/busybox:1", "[a 2/2] RUN echo a"]


def test_step_names_and_numbering_count_only_filesystem_steps() -> None:
    built, _ = lower("FROM busybox\nARG X=1\nENV Y=2\nWORKDIR /app\nRUN echo $X\nCOPY . .\nCMD [\"sh\"]\n")
    assert [s.name for s in built.steps] == [
        "[1/4] FROM docker.io/library/busybox",
        "[2/4] WORKDIR /app",
        "[3/4] RUN echo 1",
        "[4/4] COPY . .",
    ]
    assert [s.location for s in built.steps] == ["Dockerfile:1", "Dockerfile:4", "Dockerfile:5", "Dockerfile:6"]


def test_stage_cycle_is_an_error_naming_the_cycle() -> None:
    with pytest.raises(DockerfileError, match="circular dependency detected on stage: .*a.*b"):
        lower("FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\nCOPY --from=a /y /y\n")


def test_missing_target_and_missing_image_are_clear_errors() -> None:
    with pytest.raises(ShipyardError, match='target stage "nope" could not be found'):
        lower("FROM busybox\n", target="nope")
    with pytest.raises(DockerfileError) as info:
        lower("FROM busybox\nCOPY --from=builder /out /out\n")
    assert info.value.line == 2 and "builder" in str(info.value)


def test_copy_from_a_stage_uses_that_stage_and_from_the_context_a_local_source() -> None:
    built, _ = lower("FROM busybox AS build\nRUN make\nFROM busybox\nCOPY --from=build /out /app/\nCOPY src/ /src\n")
    copies = [v for v in walk([built.target]) if isinstance(v.op, FileOp)]
    from_stage, from_context = copies
    assert isinstance(from_stage.inputs[1].op, ExecOp)
    assert isinstance(from_context.inputs[1].op, LocalSource)
    action = from_context.op.actions[0]
    assert isinstance(action, CopyAction) and action.src == ("/src/",) and action.dest == "/src"


def test_relative_dest_and_workdir_follow_docker() -> None:
    built, _ = lower("FROM busybox\nWORKDIR /a\nWORKDIR b\nCOPY x ./\nCOPY y z\n")
    files = [v.op for v in walk([built.target]) if isinstance(v.op, FileOp)]
    mkdirs = [a.path for op in files for a in op.actions if isinstance(a, MkdirAction)]
    dests = [a.dest for op in files for a in op.actions if isinstance(a, CopyAction)]
    assert mkdirs == ["/a", "/a/b"]
    assert dests == ["/a/b/", "/a/b/z"]
    assert built.image.config.working_dir == "/a/b"


def test_arg_env_scoping_and_run_environment() -> None:
    built, _ = lower(
        "ARG VERSION=1.0\nARG BASE=busybox\nFROM ${BASE}\nARG VERSION\nARG LEVEL=low\nENV LEVEL=high\n"
        "RUN echo $VERSION $LEVEL\n",
        build_args={"LEVEL": "cli", "HTTP_PROXY": "http://proxy:3128"},
    )
    run = next(v.op for v in walk([built.target]) if isinstance(v.op, ExecOp))
    assert "VERSION=1.0" in run.env
    assert "LEVEL=high" in run.env and "LEVEL=cli" not in run.env  # ENV wins over ARG
    assert run.proxy_env == ("HTTP_PROXY=http://proxy:3128",)
    assert all("PROXY" not in h.created_by for h in built.image.history)
    assert built.image.history[-1].created_by == "RUN |1 VERSION=1.0 /bin/sh -c echo $VERSION $LEVEL # buildkit"
    assert built.image.config.env[-1] == "LEVEL=high"


def test_from_a_stage_inherits_its_config_and_entrypoint_resets_inherited_cmd() -> None:
    built, _ = lower("FROM busybox AS base\nENV A=1\nCMD [\"x\"]\nFROM base\nENTRYPOINT [\"/bin/app\"]\n")
    config = built.image.config
    assert "A=1" in config.env
    assert config.entrypoint == ("/bin/app",) and config.cmd == ()
    built2, _ = lower("FROM busybox\nCMD [\"x\"]\nENTRYPOINT [\"/bin/app\"]\n")
    assert built2.image.config.cmd == ("x",)


def test_history_strings_match_buildkit() -> None:
    built, _ = lower(
        "FROM busybox\nLABEL a=b \"c d\"=e\nEXPOSE 80 443/udp 8000\nUSER 1000:1000\nENTRYPOINT echo hi\n"
        "VOLUME /data /logs\nSTOPSIGNAL SIGTERM\n"
    )
    assert [h.created_by for h in built.image.history[1:]] == [
        "LABEL a=b c d=e",
        "EXPOSE map[443/udp:{} 80/tcp:{} 8000/tcp:{}]",
        "USER 1000:1000",
        'ENTRYPOINT ["/bin/sh" "-c" "echo hi"]',
        "VOLUME [/data /logs]",
        "STOPSIGNAL SIGTERM",
    ]
    assert all(h.empty_layer for h in built.image.history[1:])


def test_scratch_stage_gets_a_default_path_and_no_image_lookup() -> None:
    built, resolver = lower("FROM scratch\nCOPY a /a\n")
    assert resolver.asked == []
    assert built.image.config.env == ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    assert not any(isinstance(v.op, ImageSource) for v in walk([built.target]))


def test_identical_steps_in_two_stages_share_one_vertex() -> None:
    built, _ = lower("FROM busybox AS a\nRUN echo same\nFROM busybox AS b\nRUN echo same\nFROM busybox\n"
                     "COPY --from=a /x /a\nCOPY --from=b /x /b\n")
    runs = [v for v in walk([built.target]) if isinstance(v.op, ExecOp)]
    assert len(runs) == 1
    step_vertices = {s.name: s.vertex for s in built.steps}
    assert step_vertices["[a 2/2] RUN echo same"] == step_vertices["[b 2/2] RUN echo same"]
