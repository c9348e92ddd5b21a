"""`--call=outline|targets|check` output (buildx's text and BuildKit's JSON) and
`shipyard dockerfile parse`."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from engine.errors import DockerfileError, UsageError
from frontends.dockerfile.checks import CheckError
from frontends.dockerfile.inspect import CallSpec, parse_call, print_parsed, run_call
from frontends.dockerfile.parser import parse_dockerfile

DOCKERFILE = """\
# syntax=docker/dockerfile:1
# GO_VERSION sets the Go version for the build
ARG GO_VERSION=1.22
ARG UNUSED=x

# build-base installs development dependencies
FROM golang:${GO_VERSION} AS build-base
# APP_VERSION the version of the application
ARG APP_VERSION
RUN --mount=type=secret,id=aws,required --mount=type=ssh true

# build builds the server binary
FROM build-base AS build
ARG MODE=release
RUN --mount=type=secret,id=npmrc,target=/root/.npmrc true

# image generates the final image
FROM scratch AS image
COPY --from=build /bin/server /bin/server
"""


def call(kind: str, text: str = DOCKERFILE, target: str = "", build_args: dict[str, str] | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = run_call(kind, parse_dockerfile(text), build_args or {}, target, source=text, out=out)
    return code, out.getvalue()


def test_parse_call() -> None:
    assert parse_call("outline") == CallSpec("outline")
    assert parse_call("check,format=json") == CallSpec("check", "json")
    assert parse_call("lint,ignorestatus=true") == CallSpec("check", "text", True)
    with pytest.raises(UsageError):
        parse_call("build")
    with pytest.raises(UsageError, match="invalid call function option"):
        parse_call("outline,colour=blue")


def test_targets_text_like_buildx() -> None:
    code, text = call("targets")
    assert code == 0
    assert text == (
        "TARGET            DESCRIPTION\n"
        "build-base        installs development dependencies\n"
        "build             builds the server binary\n"
        "image (default)   generates the final image\n"
    )


def test_targets_json() -> None:
    _, text = call("targets,format=json")
    data = json.loads(text)
    assert [t.get("name") for t in data["targets"]] == ["build-base", "build", "image"]
    assert data["targets"][2]["default"] is True and "default" not in data["targets"][0]
    assert data["targets"][0]["base"] == "golang:${GO_VERSION}"
    assert data["targets"][1]["location"] == {"ranges": [{"start": {"line": 13}, "end": {"line": 13}}]}
    assert base64.b64decode(data["sources"][0]).decode() == DOCKERFILE


def test_outline_text_like_buildx() -> None:
    code, text = call("outline")
    assert code == 0
    assert text == (
        "TARGET:      image\n"
        "DESCRIPTION: generates the final image\n"
        "\n"
        "BUILD ARG     VALUE     DESCRIPTION\n"
        "GO_VERSION    1.22      sets the Go version for the build\n"
        "APP_VERSION             the version of the application\n"
        "MODE          release   \n"
        "\n"
        "SECRET   REQUIRED\n"
        "aws      true\n"
        "npmrc    \n"
        "\n"
        "SSH       REQUIRED\n"
        "default   \n"
        "\n"
    )


def test_outline_of_a_target_and_build_args() -> None:
    _, text = call("outline,format=json", target="build-base", build_args={"GO_VERSION": "1.23"})
    data = json.loads(text)
    assert data["name"] == "build-base"
    assert data["description"] == "installs development dependencies"
    assert [(a["name"], a.get("value")) for a in data["args"]] == [("GO_VERSION", "1.23"), ("APP_VERSION", None)]
    assert data["args"][0]["location"] == {"ranges": [{"start": {"line": 3}, "end": {"line": 3}}]}
    assert data["secrets"] == [
        {"name": "aws", "required": True, "location": {"ranges": [{"start": {"line": 10}, "end": {"line": 10}}]}}
    ]
    assert [s["name"] for s in data["ssh"]] == ["default"]


def test_outline_follows_global_arg_defaults() -> None:
    text = "ARG REGISTRY=docker.io\nARG IMAGE=$REGISTRY/library/busybox\nFROM $IMAGE\n"
    _, out = call("outline,format=json", text)
    assert [(a["name"], a["value"]) for a in json.loads(out)["args"]] == [
        ("REGISTRY", "docker.io"),
        ("IMAGE", "docker.io/library/busybox"),
    ]


def test_check_text_and_exit_code() -> None:
    text = "FROM scratch AS Base\nCMD run\n"
    code, out = call("check", text)
    assert code == 1
    assert out == (
        "Check complete, 2 warnings have been found!\n"
        "\n"
        "WARNING: StageNameCasing - https://docs.docker.com/go/dockerfile/rule/stage-name-casing/\n"
        "Stage name 'Base' should be lowercase\n"
        "Dockerfile:1\n"
        "--------------------\n"
        "   1 | >>> FROM scratch AS Base\n"
        "   2 |     CMD run\n"
        "   3 |     \n"
        "--------------------\n"
        "\n"
        "WARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\n"
        "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals\n"
        "Dockerfile:2\n"
        "--------------------\n"
        "   1 |     FROM scratch AS Base\n"
        "   2 | >>> CMD run\n"
        "   3 |     \n"
        "--------------------\n"
    )
    assert call("check,ignorestatus=true", text)[0] == 0
    assert call("check", 'FROM scratch\nCMD ["run"]\n') == (0, "Check complete, no warnings found.\n")


def test_check_lints_every_stage_without_a_target() -> None:
    text = "FROM scratch AS other\nCOPY $X /x\nFROM scratch\n"
    assert "UndefinedVar" in call("check", text)[1]
    assert call("check", text, target="") != call("check", text.replace("$X", "x"))
    code, out = call("check,format=json", text, target="other")
    assert code == 1 and [w["ruleName"] for w in json.loads(out)["warnings"]] == ["UndefinedVar"]


def test_check_json_like_buildkit() -> None:
    code, out = call("check,format=json", "FROM scratch\nMAINTAINER me\n")
    assert code == 1
    data = json.loads(out)
    assert data["warnings"] == [
        {
            "ruleName": "MaintainerDeprecated",
            "description": "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
            "url": "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/",
            "detail": "Maintainer instruction is deprecated in favor of using label",
            "location": {"ranges": [{"start": {"line": 2}, "end": {"line": 2}}]},
        }
    ]
    assert data["sources"][0]["filename"] == "Dockerfile"


def test_check_error_true_fails_after_printing() -> None:
    text = "# check=error=true\nFROM scratch\nMAINTAINER me\n"
    out = io.StringIO()
    with pytest.raises(CheckError, match="lint violation found for rules: MaintainerDeprecated"):
        run_call("check", parse_dockerfile(text), {}, "", source=text, out=out)
    assert out.getvalue().startswith("Check complete, 1 warning has been found!\n")
    assert call("check", text.replace("MAINTAINER me", "LABEL a=b")) == (0, "Check complete, no warnings found.\n")


# -- dockerfile parse -------------------------------------------------------------------------


PARSE = """\
# syntax=docker/dockerfile:1
ARG V=1
# base is the base
FROM busybox:$V AS base
RUN --mount=type=cache,target=/c <<EOF
echo hi
EOF
ENV A=1 B="two words"
ENV LEGACY value
COPY <<-'EOT' /etc/motd
	hello
	EOT
ONBUILD RUN echo x
"""


def parse(text: str, as_json: bool, tmp_path: Path) -> str:
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    out = io.StringIO()
    assert print_parsed(str(path), as_json=as_json, out=out) == 0
    return out.getvalue()


def test_parse_json(tmp_path: Path) -> None:
    data = json.loads(parse(PARSE, True, tmp_path))
    assert data["directives"] == {"syntax": "docker/dockerfile:1", "escape": "\\", "check": ""}
    assert data["args"] == [{"name": "V", "default": "1", "line": 2}]
    assert data["stages"] == [
        {
            "index": 0,
            "name": "base",
            "base": "busybox:$V",
            "platform": "",
            "description": "is the base",
            "start_line": 4,
            "end_line": 13,
        }
    ]
    arg, from_, run, env, legacy, copy, onbuild = data["instructions"]
    assert arg["stage"] is None and from_["stage"] == 0
    assert from_["keyword"] == "FROM" and from_["arguments"] == ["busybox:$V", "AS", "base"]
    assert run == {
        "keyword": "RUN",
        "name": "run",
        "flags": ["--mount=type=cache,target=/c"],
        "arguments": ["<<EOF"],
        "json": False,
        "heredocs": [{"name": "EOF", "content": "echo hi\n", "expand": True, "chomp": False, "fd": 0}],
        "original": "RUN --mount=type=cache,target=/c <<EOF",
        "start_line": 5,
        "end_line": 7,
        "stage": 0,
    }
    assert env["pairs"] == [
        {"key": "A", "value": "1", "legacy": False},
        {"key": "B", "value": '"two words"', "legacy": False},
    ]
    assert legacy["pairs"] == [{"key": "LEGACY", "value": "value", "legacy": True}]
    assert copy["heredocs"] == [{"name": "EOT", "content": "\thello\n", "expand": False, "chomp": True, "fd": 0}]
    assert (copy["start_line"], copy["end_line"]) == (10, 12)
    assert onbuild["trigger"]["keyword"] == "RUN" and onbuild["trigger"]["arguments"] == ["echo x"]


def test_parse_text(tmp_path: Path) -> None:
    text = parse(PARSE, False, tmp_path)
    lines = text.splitlines()
    assert lines[0].endswith("Dockerfile: 1 stage, 7 instructions")
    assert "directive syntax=docker/dockerfile:1" in lines
    assert "global:" in lines
    assert "stage 0 base (FROM busybox:$V, lines 4-13):" in lines
    assert "  5-7      RUN --mount=type=cache,target=/c <<EOF" in lines
    assert any("<<EOT: 1 line, literal, leading tabs stripped" in line for line in lines)


def test_parse_errors_are_located(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text("FROM scratch\nRUNN echo\n")
    with pytest.raises(DockerfileError) as info:
        print_parsed(str(path), as_json=True, out=io.StringIO())
    assert info.value.user_message() == f"{path}:2: unknown instruction: RUNN (did you mean RUN?)"
    with pytest.raises(UsageError, match="not found"):
        print_parsed(str(tmp_path / "missing"), as_json=False)
