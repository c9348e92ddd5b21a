"""Each instruction with its flags: typed values, BuildKit's checks and messages, and
the `expand` each command performs."""

from __future__ import annotations

import dataclasses

import pytest

from engine.errors import DockerfileError
from frontends.dockerfile.instructions import (
    AddCommand,
    ArgCommand,
    ArgPair,
    CmdCommand,
    Command,
    CopyCommand,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    HealthCheckCommand,
    HealthConfig,
    KeyValuePair,
    LabelCommand,
    MaintainerCommand,
    OnbuildCommand,
    RunCommand,
    Stage,
    StopSignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
    parse_heredoc,
)
from frontends.dockerfile.mounts import RunMount, parse_mount
from frontends.dockerfile.parser import parse_dockerfile
from frontends.dockerfile.shell_lexer import ShellLex


def one(line: str) -> Command:
    (command,) = parse_dockerfile(f"FROM scratch\n{line}\n").stages[0].commands
    return command


def fails(line: str) -> str:
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile(f"FROM scratch\n{line}\n")
    assert info.value.line == 2, info.value
    return info.value.message


LEX = ShellLex()


# -- FROM -------------------------------------------------------------------------------


def stage(line: str) -> Stage:
    return parse_dockerfile(line + "\n").stages[0]


def test_from_forms() -> None:
    assert stage("FROM alpine").name == ""
    s = stage("FROM --platform=linux/arm64 alpine:3 as Build-1.x_y")
    assert (s.name, s.base, s.platform) == ("build-1.x_y", "alpine:3", "linux/arm64")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("FROM", "FROM requires either one or three arguments"),
        ("FROM a b", "FROM requires either one or three arguments"),
        ("FROM a AS b c", "FROM requires either one or three arguments"),
        ("FROM a IS b", "FROM requires either one or three arguments"),
        ("FROM a AS 1st", 'invalid name for build stage: "1st", name can\'t start with a number or contain symbols'),
        ("FROM a AS b$c", 'invalid name for build stage: "b$c", name can\'t start with a number or contain symbols'),
        ("FROM --platfrom=x a", "unknown flag: --platfrom (did you mean platform?)"),
        ("FROM --platform a", "missing a value on flag: --platform"),
    ],
)
def test_from_errors(line: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile(line + "\n")
    assert info.value.message == message
    assert info.value.line == 1


def test_stage_expand_uses_global_args() -> None:
    s = stage("FROM --platform=$BUILDPLATFORM ${IMG:-alpine}:$V AS x").expand(
        LEX, {"BUILDPLATFORM": "linux/amd64", "V": "3"}
    )
    assert (s.base, s.platform) == ("alpine:3", "linux/amd64")


# -- RUN ---------------------------------------------------------------------------------


def test_run_shell_and_exec_forms() -> None:
    run = one("RUN echo $HOME")
    assert isinstance(run, RunCommand)
    assert (run.cmd, run.prepend_shell, run.network, run.security, run.mounts) == (
        ("echo $HOME",),
        True,
        "default",
        "sandbox",
        (),
    )
    assert run.original == "RUN echo $HOME"
    run = one('RUN ["/bin/sh", "-c", "echo hi"]')
    assert isinstance(run, RunCommand) and run.cmd == ("/bin/sh", "-c", "echo hi") and not run.prepend_shell


def test_run_flags() -> None:
    run = one(
        "RUN --network=none --security=insecure "
        "--mount=type=cache,target=/var/cache/apt,sharing=locked,id=apt "
        "--mount=type=secret,id=token,env=TOKEN "
        "--mount=type=ssh "
        "--mount=type=tmpfs,target=/tmp,size=64m "
        "--mount=type=bind,from=builder,source=/out,target=/in,rw "
        "make"
    )
    assert isinstance(run, RunCommand)
    assert (run.network, run.security, run.cmd) == ("none", "insecure", ("make",))
    assert run.flags_used == ("mount", "network", "security")
    cache, secret, ssh, tmpfs, bind = run.mounts
    assert (cache.type, cache.target, cache.sharing, cache.id, cache.readonly) == (
        "cache",
        "/var/cache/apt",
        "locked",
        "apt",
        False,
    )
    assert (secret.type, secret.id, secret.env, secret.readonly) == ("secret", "token", "TOKEN", True)
    assert (ssh.type, ssh.readonly, ssh.required) == ("ssh", True, False)
    assert (tmpfs.type, tmpfs.size, tmpfs.readonly) == ("tmpfs", 64 << 20, False)
    assert (bind.type, bind.from_, bind.source, bind.target, bind.readonly) == ("bind", "builder", "/out", "/in", False)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("RUN --network=bridge x", 'unsupported network mode "bridge"'),
        ("RUN --security=privileged x", 'unsupported security mode "privileged"'),
        ("RUN --mount=type=volume,target=/x x", 'unsupported mount type "volume"'),
        ("RUN --mount=type=cahce,target=/x x", 'unsupported mount type "cahce" (did you mean cache?)'),
        ("RUN --mount=target=/x,uid=1 x", 'uid not allowed for "bind" type mounts'),
        ("RUN --mount=type=cache,target=/x,mode=999 x", "invalid value 999 for mode"),
        ("RUN --mount=type=cache,target=/x,uid=-1 x", "invalid value -1 for uid"),
        ("RUN --mount=type=cache,target=/x,sharing=all x", 'unsupported sharing value "all"'),
        ("RUN --mount=target=/x,sharing=private x", "invalid cache sharing set for bind mount"),
        ("RUN --mount=type=secret x", "invalid secret mount. one of source, target required"),
        ("RUN --mount=type=secret,id=a,src=b x", "both source and id can't be set"),
        ("RUN --mount=type=secret,id=a,from=b x", "secret mount should not have a from"),
        ("RUN --mount=type=bind,target=/x,required x", "unexpected key 'required' for mount type 'bind'"),
        ("RUN --mount=type=cache,target=/x,size=1g x", "unexpected key 'size' for mount type 'cache'"),
        ("RUN --mount=type=tmpfs,target=/x,size=lots x", "invalid value for size: lots"),
        ("RUN --mount=type=cache,env=A x", "unexpected key 'env' for mount type 'cache'"),
        ("RUN --mount=type=cache,tagret=/x x", "unexpected key 'tagret' in 'tagret=/x' (did you mean target?)"),
        ("RUN --mount=type=cache,target x", "invalid field 'target' must be a key=value pair"),
        ("RUN --mount=target=/x,ro=maybe x", "invalid value for ro: maybe"),
        (
            "RUN --mount=from=$STAGE,target=/x x",
            "'from' doesn't support variable expansion, define alias stage instead",
        ),
        (
            "RUN --mount='target=/x,sou\"rce=a' x",
            'failed to parse csv mounts: parse error on line 1, column 14: bare " in non-quoted-field',
        ),
        ("RUN --mount= x", "failed to parse csv mounts: EOF"),
        ("RUN --moun=type=cache x", "unknown flag: --moun (did you mean mount?)"),
        ("RUN --network x", "missing a value on flag: --network"),
        ("RUN --network=host --network=none x", "duplicate flag specified: --network"),
    ],
)
def test_run_errors(line: str, message: str) -> None:
    assert fails(line) == message


def test_run_mount_values_are_expanded_at_dispatch() -> None:
    run = one("RUN --mount=type=cache,target=$HOME/.cache,uid=$UID,id=${NS}-go go build")
    assert isinstance(run, RunCommand)
    (pending,) = run.mounts
    assert pending.unexpanded and pending.target == "$HOME/.cache" and pending.uid is None
    expanded = run.expand(LEX, {"HOME": "/root", "UID": "1000", "NS": "ci"})
    (mount,) = expanded.mounts
    assert (mount.target, mount.uid, mount.id, mount.unexpanded) == ("/root/.cache", 1000, "ci-go", False)
    assert expanded.cmd == ("go build",)  # the shell, not the frontend, expands the command
    with pytest.raises(DockerfileError) as info:
        run.expand(LEX, {"HOME": "/root", "UID": "nobody"}, "Dockerfile.ci")
    where = (info.value.message, info.value.filename, info.value.line)
    assert where == ("invalid value nobody for uid", "Dockerfile.ci", 2)


def test_mount_defaults() -> None:
    assert parse_mount("target=/x", None) == RunMount(type="bind", target="/x", readonly=True, spec="target=/x")
    cache = parse_mount("type=cache,dst=/c", None)
    assert (cache.readonly, cache.sharing) == (False, "shared")
    assert parse_mount("type=bind,destination=/d,readwrite=true", None).readonly is False
    assert parse_mount("type=cache,target=/c,ro", None).readonly is True
    assert parse_mount("type=secret,id=x,required=true", None).required is True
    assert parse_mount("type=cache,target=/c,mode=0750,gid=10", None).mode == 0o750
    assert parse_mount('type=bind,"target=/a,b"', None).target == "/a,b"


# -- CMD / ENTRYPOINT / SHELL -----------------------------------------------------------


def test_cmd_and_entrypoint() -> None:
    cmd = one("CMD")
    assert isinstance(cmd, CmdCommand) and cmd.cmd == () and cmd.prepend_shell
    entry = one("ENTRYPOINT []")
    assert isinstance(entry, EntrypointCommand) and entry.cmd is None and not entry.prepend_shell
    entry = one("ENTRYPOINT exec nginx")
    assert isinstance(entry, EntrypointCommand) and entry.cmd == ("exec nginx",) and entry.prepend_shell
    assert fails("CMD --x=1 a") == "unknown flag: --x"
    assert fails("SHELL []") == "SHELL requires at least one argument"


# -- ENV / LABEL / ARG ------------------------------------------------------------------


def test_env_forms() -> None:
    env = one("ENV A=1 B=\"two words\" C='x' D=a\\ b E=")
    assert isinstance(env, EnvCommand)
    assert env.env == (
        KeyValuePair("A", "1"),
        KeyValuePair("B", '"two words"'),
        KeyValuePair("C", "'x'"),
        KeyValuePair("D", "a\\ b"),
        KeyValuePair("E", ""),
    )
    legacy = one("ENV PATH /usr/local/bin:$PATH and more")
    assert isinstance(legacy, EnvCommand)
    assert legacy.env == (KeyValuePair("PATH", "/usr/local/bin:$PATH and more", no_delim=True),)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ENV", "ENV requires at least one argument"),
        ("ENV A", "ENV must have two arguments"),
        ("ENV A=1 B", 'Syntax error - can\'t find = in "B". Must be of the form: name=value'),
        ("ENV =1", "ENV names can not be blank"),
        ("LABEL", "LABEL requires at least one argument"),
        ("LABEL a", "LABEL must have two arguments"),
        ("ARG", "ARG requires at least one argument"),
        ("ARG =x", "ARG names can not be blank"),
        ("ENV --a=b A=1", "unknown flag: --a"),
    ],
)
def test_env_label_arg_errors(line: str, message: str) -> None:
    assert fails(line) == message


def test_env_and_label_expand() -> None:
    env = one('ENV "key ${X}"="v $X" Z=${Y:-d}')
    assert isinstance(env, EnvCommand)
    assert env.expand(LEX, {"X": "1"}).env == (KeyValuePair("key 1", "v 1"), KeyValuePair("Z", "d"))
    label = one('LABEL "com.example.vendor"="ACME Inc" version=$V')
    assert isinstance(label, LabelCommand)
    assert label.expand(LEX, {"V": "2"}).labels == (
        KeyValuePair("com.example.vendor", "ACME Inc"),
        KeyValuePair("version", "2"),
    )


def test_arg_forms_and_expand() -> None:
    arg = one('ARG A B=1 C="x y" D=')
    assert isinstance(arg, ArgCommand)
    assert arg.args == (ArgPair("A"), ArgPair("B", "1"), ArgPair("C", '"x y"'), ArgPair("D", ""))
    assert arg.expand(LEX, {}).args[2] == ArgPair("C", "x y")


# -- COPY / ADD -------------------------------------------------------------------------


def test_copy_flags() -> None:
    copy = one(
        "COPY --from=build --chown=app:app --chmod=755 --link --parents --exclude=*.md --exclude=.git a b/ /dst/"
    )
    assert isinstance(copy, CopyCommand)
    assert (copy.from_, copy.chown, copy.chmod, copy.link, copy.parents) == ("build", "app:app", "755", True, True)
    assert copy.exclude == ("*.md", ".git")
    assert (copy.sources, copy.dest) == (("a", "b/"), "/dst/")
    copy = one('COPY ["a b", "/dst dir/"]')
    assert isinstance(copy, CopyCommand) and copy.json and copy.sources == ("a b",) and copy.dest == "/dst dir/"
    assert not one("COPY --link=false a b").link  # type: ignore[attr-defined]


def test_add_flags() -> None:
    add = one(
        "ADD --chown=1 --chmod=644 --link --keep-git-dir=true --checksum=sha256:abc --unpack=false "
        "--exclude=x https://example.com/a.tar.gz /dst"
    )
    assert isinstance(add, AddCommand)
    assert (add.chown, add.chmod, add.link, add.keep_git_dir, add.checksum, add.unpack, add.exclude) == (
        "1",
        "644",
        True,
        True,
        "sha256:abc",
        False,
        ("x",),
    )
    default = one("ADD a b")
    assert isinstance(default, AddCommand) and default.unpack is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "COPY a",
            "COPY requires at least two arguments, but only one was provided. Destination could not be determined",
        ),
        ("ADD", "ADD requires at least two arguments, but only one was provided. Destination could not be determined"),
        ("COPY --from a b", "missing a value on flag: --from"),
        ("COPY --link=yes a b", "expecting boolean value for flag --link, not: yes"),
        ("COPY --link= a b", "missing a value on flag: --link"),
        ("COPY --checksum=x a b", "unknown flag: --checksum"),
        ("ADD --from=x a b", "unknown flag: --from"),
        ("COPY a <<EOF\nEOF", "COPY cannot accept a heredoc as a destination"),
        ("COPY a <<EOF", "unterminated heredoc"),
        ("COPY bad-flag a b c", None),
    ],
)
def test_copy_add_errors(line: str, message: str | None) -> None:
    if message is None:
        assert isinstance(one(line), CopyCommand)
    else:
        assert fails(line) == message


def test_copy_expand() -> None:
    copy = one("COPY --from=$STAGE --chown=$U:$G --chmod=$M ${SRC}/* $DST")
    assert isinstance(copy, CopyCommand)
    done = copy.expand(LEX, {"U": "app", "G": "app", "M": "600", "SRC": "src", "DST": "/d", "STAGE": "x"})
    assert (done.chown, done.chmod, done.sources, done.dest) == ("app:app", "600", ("src/*",), "/d")
    assert done.from_ == "$STAGE"  # --from is resolved against stage names, unexpanded


def test_copy_heredoc_contents_and_raw_expansion() -> None:
    text = "FROM a\nCOPY --chmod=755 <<EOF <<'RAW' /app/\necho $A \"q\"\nEOF\necho $A\nRAW\n"
    (copy,) = parse_dockerfile(text).stages[0].commands
    assert isinstance(copy, CopyCommand)
    raw_lex = ShellLex(skip_process_quotes=True)
    expanded = copy.expand_heredocs(lambda w: raw_lex.process_word(w, {"A": "1"}))
    assert [c.data for c in expanded.source_contents] == ['echo 1 "q"\n', "echo $A\n"]


def test_add_expand_includes_checksum() -> None:
    add = one("ADD --checksum=$SUM $URL /dst")
    assert isinstance(add, AddCommand)
    done = add.expand(LEX, {"SUM": "sha256:1", "URL": "https://x/y"})
    assert (done.checksum, done.sources) == ("sha256:1", ("https://x/y",))


# -- simple one-argument instructions -----------------------------------------------------


def test_single_argument_instructions() -> None:
    user = one("USER app:app group")
    assert isinstance(user, UserCommand) and user.user == "app:app group"
    assert user.expand(LEX, {}).user == "app:app group"
    workdir = one("WORKDIR /app/$NAME")
    assert isinstance(workdir, WorkdirCommand) and workdir.expand(LEX, {"NAME": "x"}).path == "/app/x"
    signal = one("STOPSIGNAL $SIG")
    assert isinstance(signal, StopSignalCommand) and signal.expand(LEX, {"SIG": "SIGTERM"}).signal == "SIGTERM"
    maintainer = one("MAINTAINER Jane Doe <jane@example.com>")
    assert isinstance(maintainer, MaintainerCommand) and maintainer.maintainer == "Jane Doe <jane@example.com>"
    assert maintainer.expand(LEX, {}) is maintainer  # MAINTAINER is never expanded


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("USER", "USER requires exactly one argument"),
        ("WORKDIR", "WORKDIR requires exactly one argument"),
        ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
        ("MAINTAINER", "MAINTAINER requires exactly one argument"),
        ("EXPOSE", "EXPOSE requires at least one argument"),
        ("VOLUME", "VOLUME requires at least one argument"),
        ('VOLUME ["/a", " "]', "VOLUME specified can not be an empty string"),
        ("USER --x=1 a", "unknown flag: --x"),
        ("STOPSIGNAL --x SIGTERM", "unknown flag: --x"),
        ("ONBUILD", "ONBUILD requires at least one argument"),
        ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
        ("ONBUILD from x", "FROM isn't allowed as an ONBUILD trigger"),
        ("ONBUILD MAINTAINER x", "MAINTAINER isn't allowed as an ONBUILD trigger"),
    ],
)
def test_simple_instruction_errors(line: str, message: str) -> None:
    assert fails(line) == message


def test_expose_and_volume() -> None:
    expose = one("EXPOSE 8080 80/tcp $PORTS")
    assert isinstance(expose, ExposeCommand) and expose.ports == ("$PORTS", "80/tcp", "8080")
    assert expose.expand(LEX, {"PORTS": "53/udp 9000"}).ports == ("53/udp", "9000", "80/tcp", "8080")
    volume = one('VOLUME ["/data", "/logs"]')
    assert isinstance(volume, VolumeCommand) and volume.volumes == ("/data", "/logs")
    volume = one("VOLUME /a $B")
    assert isinstance(volume, VolumeCommand) and volume.expand(LEX, {"B": "/b"}).volumes == ("/a", "/b")


# -- HEALTHCHECK ------------------------------------------------------------------------


def test_healthcheck_forms() -> None:
    check = one(
        "HEALTHCHECK --interval=5m --timeout=3s --start-period=1.5s --start-interval=100ms --retries=4 "
        "CMD curl -f http://localhost/ || exit 1"
    )
    assert isinstance(check, HealthCheckCommand)
    assert check.health == HealthConfig(
        test=("CMD-SHELL", "curl -f http://localhost/ || exit 1"),
        interval=300_000_000_000,
        timeout=3_000_000_000,
        start_period=1_500_000_000,
        start_interval=100_000_000,
        retries=4,
    )
    check = one('HEALTHCHECK cmd ["/bin/check", "-q"]')
    assert isinstance(check, HealthCheckCommand) and check.health.test == ("CMD", "/bin/check", "-q")
    check = one("HEALTHCHECK none")
    assert isinstance(check, HealthCheckCommand) and check.health == HealthConfig(test=("NONE",))
    check = one("HEALTHCHECK --interval=0s CMD true")
    assert isinstance(check, HealthCheckCommand) and check.health.interval == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK RUN x", 'Unknown type "RUN" in HEALTHCHECK (try CMD)'),
        ("HEALTHCHECK --interval=1d CMD x", 'time: unknown unit "d" in duration "1d"'),
        ("HEALTHCHECK --timeout=5 CMD x", 'time: missing unit in duration "5"'),
        ("HEALTHCHECK --interval=10us CMD x", 'Interval "interval" cannot be less than 1ms'),
        ("HEALTHCHECK --start-interval=-1s CMD x", 'Interval "start-interval" cannot be less than 1ms'),
        ("HEALTHCHECK --retries=-1 CMD x", "--retries cannot be negative (-1)"),
        ("HEALTHCHECK --retries=many CMD x", 'strconv.ParseInt: parsing "many": invalid syntax'),
        ("HEALTHCHECK --intervall=1s CMD x", "unknown flag: --intervall (did you mean interval?)"),
    ],
)
def test_healthcheck_errors(line: str, message: str) -> None:
    assert fails(line) == message


# -- ONBUILD ------------------------------------------------------------------------------


def test_onbuild_keeps_the_trigger_text() -> None:
    onbuild = one("onbuild  copy --chown=1 . /app")
    assert isinstance(onbuild, OnbuildCommand)
    assert (onbuild.expression, onbuild.trigger) == ("copy --chown=1 . /app", "COPY")
    trigger = onbuild.trigger_command()
    assert isinstance(trigger, CopyCommand) and trigger.chown == "1"
    assert onbuild.expand(LEX, {"X": "y"}) is onbuild  # ONBUILD is never expanded
    bad = one("ONBUILD RUN --bogus x")  # like BuildKit, the trigger is checked when it fires
    assert isinstance(bad, OnbuildCommand)
    with pytest.raises(DockerfileError, match="unknown flag: --bogus"):
        bad.trigger_command()


# -- heredoc words ------------------------------------------------------------------------


def test_parse_heredoc_words() -> None:
    for word in ("<<EOF", "<<'EOF'", '<<"EOF"', "<<-EOF", "<<-'EOF'", '<<-"EOF"', "<<E'O'F"):
        heredoc = parse_heredoc(word)
        assert heredoc is not None and heredoc.name == "EOF", word
    for word in ("", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<a b"):
        assert parse_heredoc(word) is None, word
    assert parse_heredoc("<<'EOF'").expand is False  # type: ignore[union-attr]
    assert parse_heredoc("<<E'O'F").expand is False  # type: ignore[union-attr]
    assert parse_heredoc("<<EOF").expand is True  # type: ignore[union-attr]
    from frontends.dockerfile.flags import InstructionSyntaxError

    for word in ("<<'EOF", '<<"EOF', "<<EOF'", '<<EOF"'):
        with pytest.raises(InstructionSyntaxError):
            parse_heredoc(word)


def test_commands_are_frozen_and_carry_location() -> None:
    run = one("RUN   echo hi   ")
    assert isinstance(run, RunCommand)
    assert (run.line, run.end_line, run.original, run.name) == (2, 2, "RUN   echo hi", "run")
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.line = 3  # type: ignore[misc]
