"""Build checks: each BuildKit rule fires with BuildKit's message and line, and only then;
`# check=` / BUILDKIT_DOCKERFILE_CHECK select rules, experimental ones, and error=true."""

from __future__ import annotations

import time

import pytest

from engine.errors import DockerfileError, ShipyardError
from frontends.dockerfile.checks import (
    RULES,
    CheckConfig,
    CheckError,
    analyze,
    check_config,
    definition_comments,
    failure_message,
    parse_check_options,
    run_checks,
)
from frontends.dockerfile.parser import parse_dockerfile


def lint(text: str, *, build_args: dict[str, str] | None = None, target: str = "", **kwargs: object) -> list[tuple[str, str, int]]:
    df = parse_dockerfile(text)
    warnings = run_checks(df, build_args or {}, target, source=text, **kwargs)  # type: ignore[arg-type]
    return [(w.rule, w.message, w.start_line) for w in warnings]


def rules(text: str, **kwargs: object) -> list[str]:
    return [rule for rule, _, _ in lint(text, **kwargs)]


# -- parse-time rules ---------------------------------------------------------------------------


def test_stage_name_casing_and_from_as_casing() -> None:
    text = "FROM scratch AS BadStageName\n\nFROM scratch as base2\n\nFROM scratch AS base3\n"
    assert lint(text, all_stages=True) == [
        ("StageNameCasing", "Stage name 'BadStageName' should be lowercase", 1),
        ("FromAsCasing", "'as' and 'FROM' keywords' casing do not match", 3),
    ]
    assert lint("from scratch AS base\nfrom scratch as base2\n") == [
        ("FromAsCasing", "'AS' and 'from' keywords' casing do not match", 1)
    ]


def test_no_empty_continuation_points_at_the_instructions_last_line() -> None:
    text = "FROM scratch\n# a comment\nCOPY Dockerfile \\\n\n.\nCOPY Dockerfile \\\n.\n"
    assert lint(text) == [("NoEmptyContinuation", "Empty continuation line", 5)]


def test_consistent_instruction_casing_follows_the_majority() -> None:
    assert lint("FROM scratch\ncopy Dockerfile /foo\nCOPY Dockerfile /bar\n") == [
        ("ConsistentInstructionCasing", "Command 'copy' should match the case of the command majority (uppercase)", 2)
    ]
    assert lint("from scratch\nCOPY a /foo\ncopy a /bar\ncopy a /baz\n") == [
        ("ConsistentInstructionCasing", "Command 'COPY' should match the case of the command majority (lowercase)", 2)
    ]
    assert lint("From scratch as base\nFROM scratch AS base2\n")[0] == (
        "ConsistentInstructionCasing",
        "Command 'From' should match the case of the command majority (uppercase)",
        1,
    )
    assert rules("from scratch\ncopy a /foo\n") == []


def test_duplicate_and_reserved_stage_names() -> None:
    text = "FROM scratch AS builder\nFROM scratch AS builder\nFROM scratch AS context\nFROM scratch AS scratch\n"
    assert lint(text) == [
        ("DuplicateStageName", 'Duplicate stage name "builder", stage names should be unique', 2),
        ("ReservedStageName", 'Stage name should not use the same name as reserved stage "context"', 3),
        ("ReservedStageName", 'Stage name should not use the same name as reserved stage "scratch"', 4),
    ]


def test_maintainer_deprecated_in_every_stage() -> None:
    text = "FROM scratch AS a\nMAINTAINER me@example.org\nFROM scratch\nLABEL org.opencontainers.image.authors=me\n"
    assert lint(text) == [("MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label", 2)]


# -- FROM rules -----------------------------------------------------------------------------------


def test_undefined_arg_in_from_with_suggestion() -> None:
    text = "ARG BASE=alpine\nARG TAG\nFROM busybox:${TAGG:-1}\nFROM ${BASE}:${TAG:-1}\nFROM $OTHER$BASE\n"
    assert lint(text) == [
        ("UndefinedArgInFrom", "FROM argument 'TAGG' is not declared (did you mean TAG?)", 3),
        ("UndefinedArgInFrom", "FROM argument 'OTHER' is not declared", 5),
    ]
    # predefined platform ARGs and declared-without-value ARGs are known
    assert rules("ARG V\nFROM --platform=$BUILDPLATFORM busybox$V\n") == []


def test_invalid_default_arg_in_from() -> None:
    text = "ARG VERSION\nFROM busybox:$VERSION\n"
    assert lint(text) == [
        ("InvalidDefaultArgInFrom", "Default value for ARG busybox:$VERSION results in empty or invalid base image name", 2)
    ]
    # a build arg makes this build work, but the default still does not
    assert rules(text, build_args={"VERSION": "1"}) == ["InvalidDefaultArgInFrom"]
    assert rules("ARG VERSION=latest\nFROM busybox:$VERSION\n") == []
    assert rules("ARG IMAGE\nFROM $IMAGE\n") == ["InvalidDefaultArgInFrom"]


def test_platform_flag_rules() -> None:
    assert lint("FROM --platform=$TARGETPLATFORM scratch\n") == [
        (
            "RedundantTargetPlatform",
            "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
            1,
        )
    ]
    assert lint("FROM --platform=linux/amd64 scratch AS build\n") == [
        ("FromPlatformFlagConstDisallowed", 'FROM --platform flag should not use constant value "linux/amd64"', 1)
    ]
    # a stage named for its platform is the accepted way to pin one
    assert rules("FROM --platform=linux/amd64 scratch AS build-amd64\n") == []
    assert rules("FROM --platform=$BUILDPLATFORM scratch\n") == []


# -- dispatch rules -------------------------------------------------------------------------------


def test_undefined_var_knows_args_env_and_scoping() -> None:
    text = (
        "ARG GLOBAL=1\n"
        "FROM scratch AS base\n"
        "ARG foo=bar\n"
        "ENV baz=qux\n"
        "FROM base AS target\n"
        "ENV PATH=$PAHT:$foo:$baz\n"  # PAHT is a typo; foo and baz come from the base stage
        "COPY $GLOBAL /x\n"  # a global ARG is not visible in a stage without ARG GLOBAL
        "ARG NODEFAULT\n"
        "COPY $NODEFAULT /y\n"  # declared without a value: defined, just empty
        "RUN echo $NOTCHECKED\n"  # the shell expands RUN
    )
    assert lint(text) == [
        ("UndefinedVar", "Usage of undefined variable '$PAHT' (did you mean $PATH?)", 6),
        ("UndefinedVar", "Usage of undefined variable '$GLOBAL'", 7),
    ]


def test_undefined_var_in_arg_defaults_and_heredoc_files() -> None:
    text = (
        "FROM scratch\nARG VERSION=$foo\nARG A=1 B=$A\n"
        "COPY <<EOF /f\n$BODY\nEOF\nCOPY <<'EOF' /g\n$LITERAL\nEOF\n"
    )
    assert lint(text) == [
        ("UndefinedVar", "Usage of undefined variable '$foo'", 2),
        ("UndefinedVar", "Usage of undefined variable '$BODY'", 4),
    ]


def test_undefined_var_ignores_sbom_args_and_checks_run_mounts() -> None:
    assert rules("FROM scratch\nCOPY $BUILDKIT_SBOM_SCAN_STAGE /x\n") == []
    assert lint("FROM scratch\nRUN --mount=type=cache,target=$CACHEDIR true\n") == [
        ("UndefinedVar", "Usage of undefined variable '$CACHEDIR'", 2)
    ]


def test_json_args_recommended_unless_a_shell_is_set() -> None:
    assert lint("FROM scratch\nENTRYPOINT my-app start\nCMD run\n") == [
        ("JSONArgsRecommended", "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals", 2),
        ("JSONArgsRecommended", "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals", 3),
    ]
    assert rules('FROM scratch\nENTRYPOINT ["my-app", "start"]\n') == []
    assert rules('FROM scratch AS a\nSHELL ["/bin/bash", "-c"]\nFROM a\nCMD run\n') == []


def test_workdir_relative_path_only_before_an_absolute_one() -> None:
    assert lint("FROM scratch\nWORKDIR app\nWORKDIR more\n") == [
        ("WorkdirRelativePath", 'Relative workdir "app" can have unexpected results if the base image changes', 2)
    ]
    assert rules("FROM scratch AS a\nWORKDIR /app\nFROM a\nWORKDIR sub\n") == []
    assert rules("FROM scratch\nARG D=/abs\nWORKDIR $D\n") == []


def test_multiple_instructions_disallowed_points_at_the_ignored_one() -> None:
    text = 'FROM scratch\nCMD ["a"]\nHEALTHCHECK NONE\nCMD ["b"]\nHEALTHCHECK NONE\nENTRYPOINT ["c"]\n'
    assert lint(text) == [
        (
            "MultipleInstructionsDisallowed",
            "Multiple CMD instructions should not be used in the same stage because only the last one will be used",
            2,
        ),
        (
            "MultipleInstructionsDisallowed",
            "Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used",
            3,
        ),
    ]
    assert rules('FROM scratch AS a\nCMD ["a"]\nFROM a\nCMD ["b"]\n') == []


def test_legacy_key_value_format_and_secret_names() -> None:
    text = "FROM scratch\nENV name value\nLABEL maintainer me\nARG API_KEY\nENV GITHUB_TOKEN=x PUBLIC_KEY=y\nENV KEYBOARD=x\n"
    assert lint(text) == [
        ("LegacyKeyValueFormat", '"ENV key=value" should be used instead of legacy "ENV key value" format', 2),
        ("LegacyKeyValueFormat", '"LABEL key=value" should be used instead of legacy "LABEL key value" format', 3),
        ("SecretsUsedInArgOrEnv", 'Do not use ARG or ENV instructions for sensitive data (ARG "API_KEY")', 4),
        ("SecretsUsedInArgOrEnv", 'Do not use ARG or ENV instructions for sensitive data (ENV "GITHUB_TOKEN")', 5),
    ]


def test_expose_rules() -> None:
    text = "FROM scratch\nEXPOSE 80/TcP\nEXPOSE 127.0.0.1:80:80 8080:80\nEXPOSE 53/udp 1000-1010\n"
    assert lint(text) == [
        ("ExposeProtoCasing", "Defined protocol '80/TcP' in EXPOSE instruction should be lowercase", 2),
        ("ExposeInvalidFormat", "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'", 3),
        ("ExposeInvalidFormat", "EXPOSE instruction should not define an IP address or host-port mapping, found '8080:80'", 3),
    ]


def test_dispatch_rules_only_for_stages_the_target_reaches() -> None:
    text = "FROM scratch AS unused\nMAINTAINER x\nCOPY $A /a\nFROM scratch AS dep\nCOPY $B /b\nFROM scratch\nCOPY --from=dep /b /b\n"
    # MAINTAINER is a parse-time rule (every stage); UndefinedVar only where dispatched
    assert lint(text) == [
        ("MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label", 2),
        ("UndefinedVar", "Usage of undefined variable '$B'", 5),
    ]
    assert [r for r in rules(text, all_stages=True) if r == "UndefinedVar"] == ["UndefinedVar", "UndefinedVar"]
    assert rules(text, target="unused") == ["MaintainerDeprecated", "UndefinedVar"]
    with pytest.raises(ShipyardError, match='target stage "nope" could not be found'):
        lint(text, target="nope")


# -- experimental rules -------------------------------------------------------------------------


def test_copy_ignored_file_is_experimental() -> None:
    text = "FROM scratch\nCOPY ./tmp/helloworld.txt /h\nADD keep.txt https://example.com/x /k/\nCOPY --from=other tmp/x /x\n"
    assert rules(text, exclude_patterns=["*/tmp/*", "tmp"]) == []
    enabled = "# check=experimental=CopyIgnoredFile\n" + text
    assert lint(enabled, exclude_patterns=["*/tmp/*"]) == [
        ("CopyIgnoredFile", 'Attempting to Copy file "./tmp/helloworld.txt" that is excluded by .dockerignore', 3)
    ]
    assert lint(enabled, exclude_patterns=["keep.txt"]) == [
        ("CopyIgnoredFile", 'Attempting to Add file "keep.txt" that is excluded by .dockerignore', 4)
    ]
    assert rules(enabled, exclude_patterns=["*/tmp/*", "!./tmp/helloworld.txt"]) == []


def test_invalid_definition_description_is_experimental() -> None:
    text = (
        "# check=experimental=all\n"
        "# a non-descriptive comment\n"
        "FROM scratch AS base\n"
        "\n"
        "# another non-descriptive comment\n"
        "\n"
        "ARG VERSION=1\n"
        "# base2 is a stage\n"
        "FROM scratch AS base2\n"
        "# the A and B args\n"
        "ARG A B\n"
    )
    assert lint(text) == [
        ("InvalidDefinitionDescription", "Comment for FROM should follow the format: `# base <description>`", 3),
        ("InvalidDefinitionDescription", "Comment for ARG should follow the format: `# <arg_key> <description>`", 11),
    ]
    assert rules(text.replace("# check=experimental=all\n", "")) == []


def test_definition_comments_follow_buildkit() -> None:
    text = "# syntax=x\n# VERSION the version\nARG VERSION\n# one\n#\n# two\nFROM a\n# gone\n\nFROM b\n"
    assert definition_comments(text) == {3: ("VERSION the version",), 7: ("two",)}


# -- configuration ------------------------------------------------------------------------------


def test_parse_check_options() -> None:
    assert parse_check_options("") == CheckConfig()
    assert parse_check_options("skip=JSONArgsRecommended, StageNameCasing;error=true") == CheckConfig(
        skip=frozenset({"JSONArgsRecommended", "StageNameCasing"}), error=True
    )
    assert parse_check_options(" skip=all ; experimental=all").skip_all
    with pytest.raises(ValueError, match='invalid check option "bogus"'):
        parse_check_options("bogus")
    with pytest.raises(ValueError, match='invalid check option "skipp"'):
        parse_check_options("skipp=all")
    with pytest.raises(ValueError, match="strconv.ParseBool"):
        parse_check_options("error=yes")


def test_skip_directive_and_build_arg_override() -> None:
    text = "# check=skip=MaintainerDeprecated\nFROM scratch\nMAINTAINER x\nCMD run\n"
    assert rules(text) == ["JSONArgsRecommended"]
    assert rules(text.replace("skip=MaintainerDeprecated", "skip=all")) == []
    # the build arg replaces the directive entirely
    assert rules(text, build_args={"BUILDKIT_DOCKERFILE_CHECK": "skip=JSONArgsRecommended"}) == ["MaintainerDeprecated"]
    assert rules(text, build_args={"BUILDKIT_DOCKERFILE_CHECK": ""}) == ["MaintainerDeprecated", "JSONArgsRecommended"]


def test_bad_options_are_located_errors() -> None:
    df = parse_dockerfile("# check=wat\nFROM scratch\n")
    with pytest.raises(DockerfileError, match='failed to parse check options: invalid check option "wat"'):
        check_config(df, {})
    with pytest.raises(CheckError, match="BUILDKIT_DOCKERFILE_CHECK"):
        check_config(parse_dockerfile("FROM scratch\n"), {"BUILDKIT_DOCKERFILE_CHECK": "error=maybe"})


def test_error_true_names_the_rules() -> None:
    text = "# check=error=true\nFROM scratch\nMAINTAINER x\nCMD run\n"
    df = parse_dockerfile(text)
    config = check_config(df, {})
    warnings = run_checks(df, {}, config=config)
    assert failure_message(warnings, config) == "lint violation found for rules: JSONArgsRecommended, MaintainerDeprecated"
    assert failure_message([], config) == ""
    assert failure_message(warnings, CheckConfig()) == ""


def test_warning_fields_match_buildkit() -> None:
    df = parse_dockerfile("FROM scratch\nMAINTAINER x\n", "app.Dockerfile")
    (warning,) = run_checks(df, {})
    assert warning.location == "app.Dockerfile:2"
    assert warning.url == "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/"
    assert warning.description == RULES["MaintainerDeprecated"].description
    assert warning.line() == "MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 2)"


def test_every_rule_has_a_buildkit_url() -> None:
    assert len(RULES) == 21
    for name, rule in RULES.items():
        assert rule.name == name
        assert rule.url.startswith("https://docs.docker.com/go/dockerfile/rule/") and rule.url.endswith("/")
    assert {n for n, r in RULES.items() if r.experimental} == {"CopyIgnoredFile", "InvalidDefinitionDescription"}


def test_outline_facts_from_the_replay() -> None:
    text = (
        "ARG VERSION=1\nARG BASE=busybox:$VERSION\nFROM $BASE AS build\n"
        "RUN --mount=type=secret,id=aws,required --mount=type=ssh true\n"
        "FROM scratch\nARG MODE=fast\nCOPY --from=build /x /x\n"
    )
    analysis = analyze(parse_dockerfile(text), {"VERSION": "2"}, source=text)
    assert analysis.target == 1 and analysis.deps == ((), (0,))
    globals_ = {a.name: a for a in analysis.global_args}
    assert globals_["BASE"].value == "busybox:2" and globals_["BASE"].deps == {"VERSION"}
    build, final = analysis.stages
    assert build is not None and final is not None
    assert build.used_args == {"BASE"}
    assert [(s.id, s.required) for s in build.secrets] == [("aws", True)]
    assert [s.id for s in build.ssh] == ["default"]
    assert [(a.name, a.value) for a in final.args] == [("MODE", "fast")]


def test_checks_are_fast() -> None:
    stage = "FROM scratch AS s{i}\nARG A{i}=1\nENV B{i}=$A{i}\nCOPY $A{i} /x\nWORKDIR /w\nLABEL l=$B{i}\nRUN echo {i}\n"
    text = "".join(stage.format(i=i) for i in range(200))
    df = parse_dockerfile(text)
    started = time.perf_counter()
    run_checks(df, {}, source=text, all_stages=True)
    assert time.perf_counter() - started < 0.5
