"""Text to stages: directives, comments, continuations, heredocs, JSON vs shell form and
line numbers, with BuildKit's rules and messages."""

from __future__ import annotations

import time

import pytest

from engine.errors import DockerfileError
from frontends.dockerfile.instructions import (
    ArgCommand,
    CmdCommand,
    CopyCommand,
    EnvCommand,
    OnbuildCommand,
    RunCommand,
    ShellCommand,
    WorkdirCommand,
)
from frontends.dockerfile.parser import Directives, parse_dockerfile, parse_instruction


def commands(text: str) -> list[object]:
    return [c for stage in parse_dockerfile(text).stages for c in stage.commands]


def error(text: str, filename: str = "Dockerfile") -> DockerfileError:
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile(text, filename)
    return info.value


# -- directives ---------------------------------------------------------------------


def test_directives_at_the_top_are_read() -> None:
    df = parse_dockerfile("# syntax=docker/dockerfile:1.7\n# check=skip=all\n#escape = `\nFROM alpine\n")
    assert df.directives == Directives(syntax="docker/dockerfile:1.7", escape="`", check="skip=all")


def test_directive_keys_are_case_insensitive_and_values_trimmed() -> None:
    df = parse_dockerfile("# SYNTAX =  docker/dockerfile:1  \n# Escape=`\nFROM alpine\n")
    assert df.directives.syntax == "docker/dockerfile:1"
    assert df.directives.escape == "`"


def test_directives_end_at_the_first_other_line() -> None:
    for text in (
        "# a comment\n# escape=`\nFROM a\nRUN echo \\\n  hi\n",
        "\n# escape=`\nFROM a\nRUN echo \\\n  hi\n",
        "FROM a\n# escape=`\nRUN echo \\\n  hi\n",
        "# unknown=x\n# escape=`\nFROM a\nRUN echo \\\n  hi\n",
    ):
        df = parse_dockerfile(text)
        assert df.directives.escape == "\\"
        run = df.stages[0].commands[-1]
        assert isinstance(run, RunCommand)
        assert run.cmd == ("echo   hi",)


def test_duplicate_directive_is_an_error() -> None:
    err = error("# syntax=a\n# syntax=b\nFROM a\n")
    assert err.message == "only one syntax parser directive can be used"
    assert err.line == 2


def test_invalid_escape_token() -> None:
    err = error("# escape=x\nFROM a\n")
    assert err.message == "invalid escape token 'x' does not match ` or \\"
    assert err.line == 1


def test_byte_order_mark_is_skipped() -> None:
    df = parse_dockerfile("\ufeff# escape=`\nFROM alpine\n")
    assert df.directives.escape == "`"
    assert df.stages[0].base == "alpine"


def test_escape_directive_with_windows_paths() -> None:
    text = (
        "# escape=`\n"
        "FROM mcr.microsoft.com/windows/servercore\n"
        "COPY testfile.txt c:\\\n"
        "RUN dir c:\\\n"
        "WORKDIR c:\\windows\n"
        "RUN echo one `\n"
        "    two\n"
    )
    copy, run1, workdir, run2 = commands(text)
    assert isinstance(copy, CopyCommand) and copy.dest == "c:\\"
    assert isinstance(run1, RunCommand) and run1.cmd == ("dir c:\\",) and run1.line == 4
    assert isinstance(workdir, WorkdirCommand) and workdir.path == "c:\\windows"
    assert isinstance(run2, RunCommand) and run2.cmd == ("echo one     two",)
    assert (run2.line, run2.end_line) == (6, 7)


# -- comments, blank lines, continuations --------------------------------------------


def test_comments_are_whole_lines_only() -> None:
    (run,) = commands("FROM a\n   # indented comment\nRUN echo hi # not a comment\n")
    assert isinstance(run, RunCommand)
    assert run.cmd == ("echo hi # not a comment",)
    assert run.line == 3


def test_comment_and_blank_lines_inside_a_continuation_are_dropped() -> None:
    text = "FROM a\nRUN apt-get update && \\\n    # install things\n\n    apt-get install -y curl\nCMD x\n"
    df = parse_dockerfile(text)
    run, cmd = df.stages[0].commands
    assert isinstance(run, RunCommand)
    assert run.cmd == ("apt-get update &&     apt-get install -y curl",)
    assert (run.line, run.end_line) == (2, 5)
    assert cmd.line == 6
    assert df.warnings == ("Empty continuation line found in: RUN apt-get update &&     apt-get install -y curl",)


def test_keywords_are_case_insensitive() -> None:
    df = parse_dockerfile('from alpine as Base\nrun echo hi\nCmd ["x"]\n')
    assert df.stages[0].name == "base"
    run, cmd = df.stages[0].commands
    assert isinstance(run, RunCommand) and isinstance(cmd, CmdCommand)
    assert run.original == "run echo hi"


def test_escaped_escape_does_not_continue() -> None:
    run, cmd = commands("FROM a\nRUN echo foo\\\\\nCMD x\n")
    assert isinstance(run, RunCommand) and run.cmd == ("echo foo\\\\",)
    assert cmd.line == 3


def test_trailing_spaces_after_continuation_and_lone_escape_line() -> None:
    run, cmd = commands("FROM a\nRUN echo a \\  \t\n\\\n  b\nCMD x\n")
    assert isinstance(run, RunCommand)
    assert run.cmd == ("echo a   b",)
    assert (run.line, run.end_line, cmd.line) == (2, 4, 5)


def test_continuation_at_end_of_file() -> None:
    (run,) = commands("FROM a\nRUN echo hi \\")
    assert isinstance(run, RunCommand) and run.cmd == ("echo hi",)


def test_crlf_line_endings() -> None:
    run, cmd = commands('FROM a\r\nRUN echo \\\r\n  hi\r\nCMD ["x"]\r\n')
    assert isinstance(run, RunCommand) and run.cmd == ("echo   hi",)
    assert isinstance(cmd, CmdCommand) and cmd.cmd == ("x",)


def test_line_numbers_after_continuations_and_heredocs() -> None:
    text = (
        "FROM alpine\n"  # 1
        "RUN a && \\\n"  # 2
        "  b\n"  # 3
        "\n"  # 4
        "COPY <<EOF /x\n"  # 5
        "body\n"  # 6
        "EOF\n"  # 7
        "# comment\n"  # 8
        "RUN <<A <<B\n"  # 9
        "one\n"  # 10
        "A\n"  # 11
        "two\n"  # 12
        "B\n"  # 13
        "CMD done\n"  # 14
    )
    found = [(c.name, c.line, c.end_line) for c in commands(text)]  # type: ignore[attr-defined]
    assert found == [("run", 2, 3), ("copy", 5, 7), ("run", 9, 13), ("cmd", 14, 14)]


# -- JSON versus shell form -----------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "cmd", "prepend_shell"),
    [
        ('CMD ["a", "b"]', ("a", "b"), False),
        ("CMD [\"a\", 'b']", ("[\"a\", 'b']",), True),  # not JSON: shell form
        ('CMD ["a",]', ('["a",]',), True),
        ('CMD   [ "a" ]  ', ("a",), False),
        ("CMD []", (), False),
        ('CMD ["a\\u0041"]', ("aA",), False),
        ('CMD ["a"] trailing', ('["a"] trailing',), True),
        ("CMD [NaN]", ("[NaN]",), True),
        ("CMD echo [x]", ("echo [x]",), True),
        ('CMD ["\\ud800"]', ("\ufffd",), False),  # Go replaces a lone surrogate
    ],
)
def test_json_or_shell_form(line: str, cmd: tuple[str, ...], prepend_shell: bool) -> None:
    (command,) = commands(f"FROM a\n{line}\n")
    assert isinstance(command, CmdCommand)
    assert (command.cmd, command.prepend_shell) == (cmd, prepend_shell)


def test_json_with_non_strings_is_an_error() -> None:
    err = error('FROM a\nCMD ["a", 1]\n')
    assert err.message == "when using JSON array syntax, arrays must be comprised of strings only"
    assert err.line == 2


def test_shell_requires_json() -> None:
    assert isinstance(commands('FROM a\nSHELL ["/bin/bash", "-c"]\n')[0], ShellCommand)
    err = error("FROM a\nSHELL /bin/bash -c\n")
    assert err.message == "SHELL requires the arguments to be in JSON form"
    err = error('FROM a\nSHELL ["c:\\windows\\cmd.exe", "/S"]\n')
    assert err.message.startswith("SHELL requires the arguments to be in JSON form. It looks like")


def test_deeply_nested_json_falls_back_to_shell_form() -> None:
    (cmd,) = commands("FROM a\nCMD " + "[" * 5000 + "]" * 5000 + "\n")
    assert isinstance(cmd, CmdCommand) and cmd.prepend_shell


# -- heredocs -------------------------------------------------------------------------


def test_heredoc_variants() -> None:
    text = (
        "FROM a\n"
        "RUN <<EOF\n\tfoo\nEOF\n"
        "RUN <<-EOF\n\tbaz\n\tEOF\n"
        "RUN <<-'NOEXPAND'\n\t$NAME\nNOEXPAND\n"
        'RUN 3<<"Q"\nx\nQ\n'
        'RUN "<<NOHEREDOC"\n'
        'RUN ["<<EOF"]\n'
        "RUN cat<<EOF\n"
    )
    plain, chomp, noexpand, fd, quoted, json_form, glued = commands(text)
    assert isinstance(plain, RunCommand)
    assert plain.heredocs[0].content == "\tfoo\n" and plain.heredocs[0].expand
    assert isinstance(chomp, RunCommand)
    assert chomp.heredocs[0].chomp and chomp.heredocs[0].data == "baz\n"
    assert isinstance(noexpand, RunCommand) and not noexpand.heredocs[0].expand
    assert isinstance(fd, RunCommand) and fd.heredocs[0].fd == 3 and fd.heredocs[0].name == "Q"
    for run in (quoted, json_form, glued):
        assert isinstance(run, RunCommand) and run.heredocs == ()


def test_several_heredocs_in_copy() -> None:
    text = "FROM a\nCOPY <<X <<Y /dir/\nY\nX\nX\nY\nRUN next\n"
    copy, run = commands(text)
    assert isinstance(copy, CopyCommand)
    assert [(c.path, c.data) for c in copy.source_contents] == [("X", "Y\n"), ("Y", "X\n")]
    assert copy.sources == () and copy.dest == "/dir/"
    assert run.line == 7


def test_heredoc_body_keeps_comments_and_shebang() -> None:
    (run,) = commands("FROM a\nRUN <<EOF\n#!/usr/bin/env python3\n# not a comment\nprint(1)\nEOF\n")
    assert isinstance(run, RunCommand)
    assert run.heredocs[0].content == "#!/usr/bin/env python3\n# not a comment\nprint(1)\n"
    assert run.cmd == ("<<EOF",)


def test_heredoc_with_mount_flag_and_trailing_command() -> None:
    (run,) = commands("FROM a\nRUN --mount=type=cache,target=/c <<EOF bash -x\necho hi\nEOF\n")
    assert isinstance(run, RunCommand)
    assert run.cmd == ("<<EOF bash -x",)
    assert run.heredocs[0].content == "echo hi\n"
    assert run.mounts[0].type == "cache"


def test_unterminated_heredoc() -> None:
    err = error("FROM a\nRUN <<EOF\necho hi\n")
    assert (err.message, err.line) == ("unterminated heredoc", 2)


def test_heredoc_only_for_run_copy_add() -> None:
    err = error("FROM a\nUSER <<EOF\nEOF\n")
    assert "unknown instruction: EOF" in err.message
    assert err.line == 3


def test_heredoc_inside_onbuild() -> None:
    onbuild, cmd = commands("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\nCMD x\n")
    assert isinstance(onbuild, OnbuildCommand)
    assert onbuild.expression == "RUN <<EOF\necho hi\nEOF"
    assert cmd.line == 5
    trigger = onbuild.trigger_command()
    assert isinstance(trigger, RunCommand)
    assert trigger.heredocs[0].content == "echo hi\n"


def test_heredoc_body_without_final_newline() -> None:
    (run,) = commands("FROM a\nRUN <<EOF\necho hi\nEOF")
    assert isinstance(run, RunCommand) and run.heredocs[0].content == "echo hi\n"


# -- stages and global args -----------------------------------------------------------


def test_stages_and_meta_args() -> None:
    text = (
        "ARG VERSION=3.19\n"
        "ARG OTHER\n"
        "FROM --platform=$BUILDPLATFORM alpine:${VERSION} AS Builder\n"
        "RUN make\n"
        "FROM scratch\n"
        "COPY --from=builder /out /\n"
    )
    df = parse_dockerfile(text, "build.Dockerfile")
    assert [type(a) for a in df.meta_args] == [ArgCommand, ArgCommand]
    first, second = df.stages
    assert (first.name, first.base, first.platform, first.index, first.line) == (
        "builder",
        "alpine:${VERSION}",
        "$BUILDPLATFORM",
        0,
        3,
    )
    assert first.original == "FROM --platform=$BUILDPLATFORM alpine:${VERSION} AS Builder"
    assert (first.end_line, second.end_line) == (4, 6)
    assert (second.name, second.base, second.index) == ("", "scratch", 1)
    assert df.stage_by_name("BUILDER") is first
    assert df.filename == "build.Dockerfile"


def test_instruction_before_from_is_an_error() -> None:
    err = error("ARG A\nRUN echo hi\nFROM a\n", "my.Dockerfile")
    assert (err.message, err.filename, err.line) == ("no build stage in current context", "my.Dockerfile", 2)
    assert str(err) == "my.Dockerfile:2: no build stage in current context"


def test_empty_file_and_file_without_stages() -> None:
    assert error("").message == "file with no instructions"
    assert error("# only a comment\n\n").message == "file with no instructions"
    assert error("ARG A=1\n").message == "dockerfile contains no stages to build"


def test_unknown_instruction_with_suggestion() -> None:
    err = error("FROM a\nRUNN echo\n")
    assert (err.message, err.line) == ("unknown instruction: RUNN (did you mean RUN?)", 2)
    assert error("FROM a\nfoo bar\n").message == "unknown instruction: foo (did you mean from?)"
    assert error("FROM a\nBOGUS bar\n").message == "unknown instruction: BOGUS"


def test_parser_errors_come_before_instruction_errors() -> None:
    # BuildKit reads every line first, so the later unterminated heredoc wins.
    err = error("FROM a\nRUN --bogus x\nRUN <<EOF\n")
    assert err.message == "unterminated heredoc"


def test_flags_before_arguments() -> None:
    (copy,) = commands('FROM a\nCOPY --chown="1:1" --chmod=0644 -- --weird-name /dst\n')
    assert isinstance(copy, CopyCommand)
    assert (copy.chown, copy.chmod, copy.sources, copy.dest) == ("1:1", "0644", ("--weird-name",), "/dst")


def test_env_pairs_are_kept_raw() -> None:
    (env,) = commands('FROM a\nENV a=1 b=$a c="x y"\n')
    assert isinstance(env, EnvCommand)
    assert [(p.key, p.value) for p in env.env] == [("a", "1"), ("b", "$a"), ("c", '"x y"')]


# -- parse_instruction ----------------------------------------------------------------


def test_parse_instruction_for_change_strings_and_triggers() -> None:
    cmd = parse_instruction('CMD ["nginx", "-g", "daemon off;"]', "change", 1)
    assert isinstance(cmd, CmdCommand) and cmd.cmd == ("nginx", "-g", "daemon off;")
    env = parse_instruction("ENV A=1 \\\n  B=2", "onbuild", 10)
    assert isinstance(env, EnvCommand) and (env.line, env.end_line) == (10, 11)
    with pytest.raises(DockerfileError, match="single expression"):
        parse_instruction("ENV A=1\nENV B=2", "change", 1)
    with pytest.raises(DockerfileError, match="FROM"):
        parse_instruction("FROM alpine", "change", 1)
    with pytest.raises(DockerfileError, match="unknown instruction"):
        parse_instruction("BOGUS x", "change", 3)


# -- limits -----------------------------------------------------------------------------


def test_overlong_line_is_an_error() -> None:
    err = error("FROM a\nRUN " + "x" * 70_000 + "\n")
    assert err.message == "dockerfile line greater than max allowed size of 65535"
    assert err.line == 2


def test_parsing_is_fast() -> None:
    lines = ["# syntax=docker/dockerfile:1", "ARG BASE=alpine", "FROM ${BASE} AS build"]
    for i in range(11):
        lines += [
            f"RUN --mount=type=cache,target=/c{i} apk add pkg{i} && \\",
            f"    echo done{i}",
            f"COPY --chown=1:1 src{i} /app/{i}/",
            f'ENV K{i}=v{i} L{i}="x y"',
        ]
    lines += ['CMD ["/app/run"]', "EXPOSE 8080", "USER app"]
    text = "\n".join(lines) + "\n"
    assert len(lines) >= 50
    parse_dockerfile(text)
    start = time.perf_counter()
    for _ in range(50):
        parse_dockerfile(text)
    per_parse = (time.perf_counter() - start) / 50
    assert per_parse < 0.005, f"{per_parse * 1000:.2f} ms per 50-line Dockerfile"
