"""Lowering bake targets: inline steps mean exactly what the YAML says, and lower like a Dockerfile."""

from __future__ import annotations

import pytest

from engine.graph.ops import CopyAction, ExecOp, FileOp, ImageSource
from engine.graph.vertex import walk
from frontends.dockerfile.lowering import BuildParams, lower_dockerfile
from frontends.dockerfile.parser import parse_dockerfile
from frontends.yaml.lowering import TargetError, lower_target, render_steps
from frontends.yaml.model import MountSpec, StepSpec, TargetSpec
from tests.frontends.dockerfile.test_dockerfile_lowering import StoreResolver


def steps_target(*steps: StepSpec, **kw) -> TargetSpec:  # type: ignore[no-untyped-def]
    return TargetSpec(kw.pop("name", "t"), kw.pop("context", "/ctx"), location="build.yaml:2:3", steps=steps, **kw)


def ops(vertex, kind):  # type: ignore[no-untyped-def]
    return [v.op for v in walk([vertex]) if isinstance(v.op, kind)]


def test_step_values_reach_the_ops_verbatim() -> None:
    tricky = "it's \"$HOME\" \\n ${X:-y} `id`"
    target = steps_target(
        StepSpec("from", "busybox:local", location="build.yaml:4:9"),
        StepSpec("env", {"A": tricky, "B": "two words"}, location="build.yaml:5:9"),
        StepSpec("label", {"org.example.x": "$label"}, location="build.yaml:6:9"),
        StepSpec("workdir", "/w $d", location="build.yaml:7:9"),
        StepSpec("copy", {"src": ["a b.txt", "$c", "*.py"], "dest": "./it's/", "chown": "1:2"}, location="build.yaml:8:9"),
        StepSpec(
            "run",
            "echo $A",
            mounts=(MountSpec("cache", "/c,d", (("id", "x$y'z"), ("sharing", "locked"))),),
            network="none",
            location="build.yaml:9:9",
        ),
        StepSpec("run", ["printf", "%s\n", "$A"], location="build.yaml:12:9"),
        StepSpec("cmd", ["sh", "-c", "echo $A"], location="build.yaml:13:9"),
    )
    built = lower_target(target, StoreResolver(), {})
    (copy,) = [a for op in ops(built.vertex, FileOp) for a in op.actions if isinstance(a, CopyAction)]
    assert copy.src == ("/a b.txt", "/$c", "/*.py") and copy.dest == "/w $d/it's/"
    assert copy.owner is not None and (copy.owner.user, copy.owner.group) == ("1", "2")
    shell, exec_form = ops(built.vertex, ExecOp)
    assert shell.args == ("/bin/sh", "-c", "echo $A") and shell.network == "none" and shell.cwd == "/w $d"
    assert f"A={tricky}" in shell.env and "B=two words" in shell.env
    cache = next(m for m in shell.mounts if m.type == "cache")
    assert (cache.target, cache.cache_id, cache.sharing) == ("/c,d", "x$y'z", "locked")
    assert exec_form.args == ("printf", "%s\n", "$A")
    assert built.image.config.labels == (("org.example.x", "$label"),)
    assert built.image.config.cmd == ("sh", "-c", "echo $A")
    assert built.image.config.working_dir == "/w $d"


def test_multi_line_run_is_one_shell_script_and_steps_show_as_written() -> None:
    script = "set -e\necho one \\\n  two\ncat <<EOF\n$HOME\nEOF\n"
    target = steps_target(StepSpec("from", "busybox:local", location="b.yaml:4:9"), StepSpec("run", script, location="b.yaml:5:9"))
    built = lower_target(target, StoreResolver(), {})
    (run,) = ops(built.vertex, ExecOp)
    assert run.args == ("/bin/sh", "-c", script)
    assert [(s.name, s.location) for s in built.steps] == [
        ("[t 1/2] FROM busybox:local", "b.yaml:4:9"),
        ("[t 2/2] RUN set -e ...", "b.yaml:5:9"),
    ]


def test_steps_lower_to_the_same_graph_as_the_equivalent_dockerfile() -> None:
    target = steps_target(
        StepSpec("from", "busybox:local"),
        StepSpec("arg", {"V": "1"}),
        StepSpec("env", {"PATH": "/opt/bin:/usr/bin:/bin"}),
        StepSpec("copy", {"src": ["src/"], "dest": "/opt/src/"}),
        StepSpec("run", "make -C /opt/src", mounts=(MountSpec("cache", "/root/.cache"),)),
        StepSpec("workdir", "/opt"),
        StepSpec("user", "1000"),
        StepSpec("expose", ["8080/tcp"]),
        StepSpec("entrypoint", ["/opt/bin/app"]),
    )
    dockerfile = (
        "FROM busybox:local\nARG V=1\nENV PATH=/opt/bin:/usr/bin:/bin\nCOPY src/ /opt/src/\n"
        "RUN --mount=type=cache,target=/root/.cache make -C /opt/src\nWORKDIR /opt\nUSER 1000\nEXPOSE 8080/tcp\n"
        'ENTRYPOINT ["/opt/bin/app"]\n'
    )
    expected = lower_dockerfile(parse_dockerfile(dockerfile), BuildParams(context_path="/ctx"), StoreResolver())
    built = lower_target(target, StoreResolver(), {})
    assert built.vertex.digest == expected.target.digest
    assert built.image.config == expected.image.config


def test_a_bad_step_is_reported_at_its_yaml_location() -> None:
    target = steps_target(
        StepSpec("from", "busybox:local", location="build.yaml:4:9"),
        StepSpec("copy", {"src": ["x"], "dest": "/y", "from": "nowhere"}, location="build.yaml:5:9"),
    )
    with pytest.raises(TargetError, match=r"^build.yaml:5:9: target t: copy: .*nowhere"):
        lower_target(target, StoreResolver(), {})
    with pytest.raises(TargetError, match=r"^build.yaml:7:9: env: env A cannot contain a newline"):
        render_steps((StepSpec("from", "busybox"), StepSpec("env", {"A": "a\nb"}, location="build.yaml:7:9")))
    with pytest.raises(TargetError, match=r"build.yaml:8:9: run: the first step must be a from step"):
        render_steps((StepSpec("run", "true", location="build.yaml:8:9"),))


def test_a_target_context_is_the_other_targets_vertex_and_image() -> None:
    resolver = StoreResolver()
    base = lower_target(
        steps_target(StepSpec("from", "busybox:local"), StepSpec("env", {"BASE": "1"}), StepSpec("run", "touch /base"), name="base"),
        resolver,
        {},
    )
    assets = lower_target(
        steps_target(StepSpec("from", "busybox:local"), StepSpec("run", "mkdir -p /src/dist"), name="assets", result="/src/dist"),
        resolver,
        {},
    )
    assert assets.is_result and isinstance(assets.vertex.op, FileOp)
    (action,) = assets.vertex.op.actions
    assert isinstance(action, CopyAction) and action.src == ("/src/dist",) and action.dest == "/"
    web = TargetSpec(
        "web",
        "/ctx",
        dockerfile_inline="FROM base\nCOPY --from=assets / /srv/www/\n",
        contexts=(("base", "target:base"), ("assets", "target:assets")),
        location="build.yaml:20:3",
    )
    built = lower_target(web, resolver, {"base": base, "assets": assets})
    copy = built.vertex
    assert copy.inputs[0].digest == base.vertex.digest and copy.inputs[1].digest == assets.vertex.digest
    assert "BASE=1" in built.image.config.env  # the upstream image's config carries over
    assert resolver.asked == ["busybox:local", "busybox:local"]  # no image lookup for target contexts
    assert [isinstance(op, ImageSource) for op in ops(built.vertex, ImageSource)] == [True]


def test_dockerfile_inline_errors_name_the_target() -> None:
    target = TargetSpec("mig", "/ctx", dockerfile_inline="FROM busybox\nFROBNICATE x\n", location="build.yaml:30:3")
    with pytest.raises(TargetError, match=r"^build.yaml:30:3 dockerfile_inline:2: target mig: unknown instruction: FROBNICATE"):
        lower_target(target, StoreResolver(), {})


def test_target_network_applies_to_run_steps_without_their_own() -> None:
    target = steps_target(
        StepSpec("from", "busybox:local"), StepSpec("run", "true"), StepSpec("run", "false", network="host"), network="none"
    )
    first, second = ops(lower_target(target, StoreResolver(), {}).vertex, ExecOp)
    assert (first.network, second.network) == ("none", "host")
