"""RUN --mount, --network/--security and heredocs as the Dockerfile frontend lowers them.

The graph and the image history are what BuildKit's dockerfile2llb would produce:
mount defaults (targets against WORKDIR, cache ids, secret and ssh targets,
SSH_AUTH_SOCK), heredoc command lines and history strings, step names; and the
cache-key and entitlement rules the solver applies to them.
"""

from __future__ import annotations

import pytest

from engine.errors import DockerfileError, ImageNotFoundError
from engine.graph.ops import SCRATCH, ExecOp, FileOp, LocalSource, MkfileAction, Mount
from engine.graph.vertex import walk
from engine.oci.image import Image, ImageConfig
from engine.solver.keys import bind_sources_by_input, content_parts, definition_parts
from engine.solver.session import EntitlementError, check_entitlements, parse_allow_flags, parse_secret_flag
from frontends.base import ResolvedImage
from frontends.dockerfile.lowering import BuildParams, lower_dockerfile
from frontends.dockerfile.parser import parse_dockerfile

BASE = Image(config=ImageConfig(cmd=("sh",)))


class StoreResolver:
    def resolve(self, ref: str) -> ResolvedImage:
        if ref.startswith("busybox"):
            return ResolvedImage(f"docker.io/library/{ref}", "sha256:" + "f" * 64, BASE)
        raise ImageNotFoundError(f"image {ref!r} is not in the local image store")


def lower(text: str):  # type: ignore[no-untyped-def]
    return lower_dockerfile(parse_dockerfile(text), BuildParams(context_path="/ctx"), StoreResolver())


def last_exec(text: str) -> tuple[ExecOp, object]:
    built = lower(text)
    vertex = built.target
    assert isinstance(vertex.op, ExecOp)
    return vertex.op, built


def extra(op: ExecOp) -> list[Mount]:
    return [m for m in op.mounts if m is not op.root_mount()]


# --------------------------------------------------------------------------- mounts


def test_bind_and_cache_targets_are_relative_to_workdir_with_buildkit_defaults() -> None:
    op, built = last_exec(
        "FROM busybox AS src\nRUN make\nFROM busybox\nWORKDIR /app\n"
        "RUN --mount=target=ctx --mount=type=cache,target=node_modules,sharing=locked "
        "--mount=from=src,source=out/../bin/,target=/b,rw --mount=type=tmpfs,target=/t,size=1k true\n"
    )
    ctx, cache, stage, tmpfs = extra(op)
    assert (ctx.type, ctx.target, ctx.selector, ctx.readonly) == ("bind", "/app/ctx", "/", True)
    assert isinstance(built.target.inputs[ctx.input].op, LocalSource)
    assert (cache.type, cache.target, cache.cache_id, cache.sharing, cache.input) == (
        "cache", "/app/node_modules", "node_modules", "locked", SCRATCH,
    )  # fmt: skip
    assert (stage.target, stage.selector, stage.readonly) == ("/b", "/bin", False)
    assert isinstance(built.target.inputs[stage.input].op, ExecOp)
    assert (tmpfs.type, tmpfs.target, tmpfs.tmpfs_size) == ("tmpfs", "/t", 1024)


def test_mount_target_root_is_an_error_with_its_line() -> None:
    with pytest.raises(DockerfileError) as info:
        lower("FROM busybox\n\nRUN --mount=type=cache true\n")
    assert info.value.line == 3 and info.value.message == 'invalid mount target "/"'


def test_secret_defaults_follow_buildkit() -> None:
    op, _ = last_exec(
        "FROM busybox\nWORKDIR /w\n"
        "RUN --mount=type=secret,id=a --mount=type=secret,target=/x/b.txt --mount=type=secret,id=c,env=C "
        "--mount=type=secret,source=d,env=D,target=rel,mode=0444,uid=5,required true\n"
    )
    a, b, c, d = extra(op)
    assert (a.secret_id, a.target, a.mode, a.uid, a.required, a.env) == ("a", "/run/secrets/a", 0o400, 0, False, "")
    assert (b.secret_id, b.target) == ("b.txt", "/x/b.txt")
    assert (c.secret_id, c.target, c.env) == ("c", "", "C")  # env only: no file
    assert (d.secret_id, d.target, d.env, d.mode, d.uid, d.required) == ("d", "/rel", "D", 0o444, 5, True)
    assert not any("C=" in e or "D=" in e for e in op.env)  # values are never in the op


def test_ssh_mounts_default_targets_and_auth_sock() -> None:
    op, _ = last_exec("FROM busybox\nRUN --mount=type=ssh --mount=type=ssh,id=gh,target=/s,mode=0666 true\n")
    first, second = extra(op)
    assert (first.ssh_id, first.target, first.mode) == ("default", "/run/buildkit/ssh_agent.0", 0o600)
    assert (second.ssh_id, second.target, second.mode) == ("gh", "/s", 0o666)
    assert "SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0" in op.env
    op, _ = last_exec("FROM busybox\nENV SSH_AUTH_SOCK=/mine\nRUN --mount=type=ssh true\n")
    assert [e for e in op.env if e.startswith("SSH_AUTH_SOCK=")] == ["SSH_AUTH_SOCK=/mine"]
    with pytest.raises(DockerfileError, match="ssh does not support source"):
        lower("FROM busybox\nRUN --mount=type=ssh,source=x true\n")


def test_mount_values_are_expanded_with_stage_variables() -> None:
    op, _ = last_exec("FROM busybox\nARG D=/cache\nENV N=npm\nRUN --mount=type=cache,id=$N,target=${D}/$N true\n")
    (cache,) = extra(op)
    assert (cache.cache_id, cache.target) == ("npm", "/cache/npm")


def test_mount_from_a_later_unrelated_stage_is_dispatched_first() -> None:
    built = lower("FROM busybox AS a\nRUN echo a > /a\nFROM busybox AS b\nRUN --mount=from=a,target=/m cat /m/a\n")
    runs = [v.op.args[-1] for v in walk([built.target]) if isinstance(v.op, ExecOp)]
    assert runs == ["echo a > /a", "cat /m/a"]


def test_history_and_step_name_do_not_show_mounts_or_secret_values() -> None:
    _, built = last_exec("FROM busybox\nARG V=1\nRUN --mount=type=secret,id=t,env=TOKEN echo $V $TOKEN\n")
    assert built.image.history[-1].created_by == "RUN |1 V=1 /bin/sh -c echo $V $TOKEN # buildkit"
    assert built.steps[-1].name == "[2/2] RUN --mount=type=secret,id=t,env=TOKEN echo 1 ****"


# --------------------------------------------------------------------------- network, security


def test_network_and_security_modes_reach_the_op_and_need_entitlements() -> None:
    built = lower("FROM busybox\nRUN --network=none true\nRUN --network=host true\nRUN --security=insecure true\n")
    ops = [v.op for v in walk([built.target]) if isinstance(v.op, ExecOp)]
    assert [(o.network, o.security) for o in ops] == [("none", "sandbox"), ("host", "sandbox"), ("default", "insecure")]
    with pytest.raises(EntitlementError) as info:
        check_entitlements(walk([built.target]), built.meta, frozenset())
    assert str(info.value).startswith('Dockerfile:3: RUN --network=host needs the "network.host" entitlement')
    with pytest.raises(EntitlementError, match="Dockerfile:4: .*security.insecure"):
        check_entitlements(walk([built.target]), built.meta, frozenset({"network.host"}))
    check_entitlements(walk([built.target]), built.meta, parse_allow_flags(["network.host,security.insecure"]))


def test_unknown_entitlement_and_secret_flag_forms() -> None:
    with pytest.raises(Exception, match="unknown entitlement"):
        parse_allow_flags(["device"])
    assert parse_secret_flag("id=a,src=/x").path == "/x"
    assert parse_secret_flag("id=a,env=VAR").env == "VAR"


# --------------------------------------------------------------------------- heredocs


def test_single_heredoc_runs_its_body_through_the_shell() -> None:
    op, built = last_exec("FROM busybox\nRUN <<EOF\necho one\necho two\nEOF\n")
    assert op.args == ("/bin/sh", "-c", "echo one\necho two\n")
    assert built.image.history[-1].created_by == "RUN /bin/sh -c echo one\necho two\n # buildkit"
    assert built.steps[-1].name == "[2/2] RUN <<EOF (echo one...)"


def test_tab_stripping_and_quoted_delimiters_are_left_as_buildkit_leaves_them() -> None:
    op, _ = last_exec("FROM busybox\nRUN <<-EOF\n\techo $HOME\nEOF\n")
    assert op.args[-1] == "echo $HOME\n"  # tabs stripped, never expanded by the frontend
    op, _ = last_exec("FROM busybox\nRUN <<'EOF'\necho $HOME\nEOF\n")
    assert op.args[-1] == "echo $HOME\n"


def test_shebang_heredoc_is_a_file_mounted_at_dev_pipes() -> None:
    op, built = last_exec("FROM busybox\nRUN <<EOT\n#!/usr/bin/env python3\nprint(1)\nEOT\n")
    assert op.args == ("/bin/sh", "-c", "/dev/pipes/EOT")
    (pipes,) = extra(op)
    assert (pipes.target, pipes.readonly, pipes.type) == ("/dev/pipes", True, "bind")
    script = built.target.inputs[pipes.input].op
    assert isinstance(script, FileOp) and script.base == SCRATCH
    assert script.actions == (MkfileAction("/EOT", b"#!/usr/bin/env python3\nprint(1)\n", 0o755),)
    assert built.image.history[-1].created_by == "RUN /bin/sh -c /dev/pipes/EOT # buildkit"


def test_a_tab_indented_shebang_with_chomp_is_not_a_shebang() -> None:
    op, _ = last_exec("FROM busybox\nRUN <<-EOT\n\t#!/bin/sh\n\techo hi\nEOT\n")
    assert op.args == ("/bin/sh", "-c", "#!/bin/sh\necho hi\n")  # BuildKit tests the raw body


def test_heredocs_with_a_command_go_to_the_shell_whole() -> None:
    op, built = last_exec('FROM busybox\nRUN <<A cat > /x <<-"B"\nline $a\nA\n\tline $b\nB\n')
    assert op.args == ("/bin/sh", "-c", '<<A cat > /x <<-"B"\nline $a\nA\n\tline $b\nB')
    assert built.steps[-1].name == '[2/2] RUN <<A cat > /x <<-"B"'
    op, _ = last_exec("FROM busybox\nRUN python3 <<EOF\nprint(1)\nEOF\n")
    assert op.args == ("/bin/sh", "-c", "python3 <<EOF\nprint(1)\nEOF")


def test_heredoc_uses_the_stage_shell() -> None:
    op, _ = last_exec('FROM busybox\nSHELL ["/bin/ash", "-eo", "pipefail", "-c"]\nRUN <<EOF\nfalse | true\nEOF\n')
    assert op.args == ("/bin/ash", "-eo", "pipefail", "-c", "false | true\n")


# --------------------------------------------------------------------------- keys


def test_bind_mounts_key_on_content_unless_the_input_is_also_something_else() -> None:
    op = ExecOp(
        args=("true",),
        mounts=(
            Mount("/", 0),
            Mount("/a", 1, "/x", readonly=True),
            Mount("/b", 1, "/y", readonly=True),
            Mount("/c", 2, "/", type="cache", cache_id="c"),
            Mount("/d", 0, "/etc", readonly=True),
        ),
    )
    sources = bind_sources_by_input(op)
    assert list(sources) == [1]
    assert sources[1][0].src == ("/x", "/y") and not sources[1][0].allow_wildcard


def test_exec_with_a_stage_bind_gets_a_content_key() -> None:
    built = lower("FROM busybox AS a\nRUN make\nFROM busybox\nRUN --mount=from=a,source=/out,target=/o cat /o/x\n")
    vertex = built.target
    keys = {v.digest: f"key-{i}" for i, v in enumerate(walk([vertex]))}
    parts = definition_parts(vertex, [keys[i.digest] for i in vertex.inputs], lambda v, a: "local")
    assert parts is not None
    content = content_parts(parts, vertex, lambda index, actions: f"content-of-{index}-{actions[0].src}")
    assert content is not None
    assert dict(content.inputs)["input 1 content"] == "content-of-1-('/out',)"
    assert dict(content.inputs)["input 0"] == dict(parts.inputs)["input 0"]
