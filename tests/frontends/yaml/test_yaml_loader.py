"""The YAML loader on the proposal's full example and on each feature of the schema."""

from __future__ import annotations

import json
import os

import pytest

from frontends.yaml.loader import list_entries, print_resolved
from frontends.yaml.model import OutputSpec, SecretSpec


def line_of(repo, needle: str) -> int:
    lines = (repo.root / "build.yaml").read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if line.startswith(needle))


def test_full_example_resolves(example):
    bake = example.load(environ={"GIT_SHORT_SHA": "abc123"})
    root = str(example.root)
    assert list(bake.targets) == [
        "base-py3.11", "base-py3.12", "base-py3.13", "api", "worker", "frontend-assets", "web",
        "test-py3.11", "test-py3.12", "test-py3.13", "migrations", "api-docs",
    ]  # fmt: skip
    assert bake.groups["base"] == ("base-py3.11", "base-py3.12", "base-py3.13")
    assert bake.groups["test"] == ("test-py3.11", "test-py3.12", "test-py3.13")
    assert bake.groups["ci"] == ("default", "test")
    assert bake.expand(["ci"]) == ["api", "worker", "web", "test-py3.11", "test-py3.12", "test-py3.13"]
    assert bake.files[0] == os.path.join(root, "build.yaml")
    assert bake.files[1] == os.path.join(root, "services/api/build.yaml")

    base = bake.targets["base-py3.12"]
    assert base.context == os.path.join(root, "libs/common")
    assert base.dockerfile == "" and base.description == "python runtime + common wheels"
    assert base.steps[0].value.startswith("python:3.12-slim@sha256:")
    assert base.steps[2].mounts[0].to_canonical() == {
        "type": "cache",
        "target": "/var/cache/apt",
        "id": "apt",
        "sharing": "locked",
    }
    assert dict(base.steps[4].mounts[0].options)["id"] == "pip-py3.12"
    from_line = line_of(example, '      - from: "python')
    assert base.steps[0].location == f"build.yaml:{from_line}:9"
    assert base.matrix == (("py", "3.12"),)

    api = bake.targets["api"]
    assert api.dockerfile == os.path.join(root, "services/api/Dockerfile")
    assert api.args == (("APP_MODULE", "api.main:app"),)
    assert api.tags == ("127.0.0.1:5000/acme/api:abc123",)
    assert api.contexts == (("base", "target:base-py3.12"),)
    assert api.references() == ("base-py3.12",)
    assert api.platforms == ("linux/amd64", "linux/arm64")  # _service's list replaces the default's
    assert api.labels == (
        ("org.opencontainers.image.source", "https://example.invalid/acme/monorepo"),
        ("org.opencontainers.image.vendor", "acme"),
    )
    assert api.outputs == (OutputSpec("image", (("name", "127.0.0.1:5000/acme/api:abc123"),)),)
    assert api.cache_from == (f"type=local,src={root}/.buildcache",)
    assert api.cache_to == (f"type=local,dest={root}/.buildcache,mode=max",)
    assert api.location == f"build.yaml:{line_of(example, '  api:')}:3"

    assert bake.targets["worker"].secrets == (SecretSpec("pypi_token", env="PYPI_TOKEN"),)
    assert dict(bake.targets["web"].contexts) == {"assets": "target:frontend-assets", "base": "target:base-py3.12"}
    assert bake.targets["frontend-assets"].result == "/src/dist"
    test = bake.targets["test-py3.11"]
    assert test.context == root and test.contexts == (("base", "target:base-py3.11"),)
    assert test.steps[3].network == "none"
    assert test.outputs == (OutputSpec("local", (("dest", f"{root}/reports/py3.11"), ("from", "/out"))),)
    migrations = bake.targets["migrations"]
    assert migrations.needs == ("test-py3.11", "test-py3.12", "test-py3.13")
    assert migrations.entitlements == ("network.host",)
    assert migrations.dockerfile_inline == "FROM base\nCOPY migrations/ /migrations/\n"
    assert bake.targets["api-docs"].context == os.path.join(root, "services/api/docs")  # relative to the fragment
    assert bake.variables["PY_VERSIONS"].value == ("3.11", "3.12", "3.13")
    assert bake.variables["TAG"].value == "abc123" and bake.variables["TAG"].default == "dev"


def test_print_and_list(example):
    bake = example.load()
    printed = json.loads(print_resolved(bake, ["ci", "migrations"]))
    assert printed["group"] == {
        "ci": {"targets": ["default", "test"]},
        "default": {"targets": ["api", "worker", "web"]},
        "test": {"targets": ["test-py3.11", "test-py3.12", "test-py3.13"]},
    }
    assert list(printed["target"]) == [
        "api",
        "worker",
        "web",
        "test-py3.11",
        "test-py3.12",
        "test-py3.13",
        "migrations",
    ]
    assert printed["target"]["api"] == bake.targets["api"].to_canonical()
    assert list(json.loads(print_resolved(bake, []))["target"]) == ["api", "worker", "web"]  # the default group
    targets = list_entries(bake, "targets").splitlines()
    assert targets[0].split() == ["TARGET", "DESCRIPTION"]
    assert any(line.startswith("base-py3.12") and line.endswith("python runtime + common wheels") for line in targets)
    groups = list_entries(bake, "groups")
    assert "ci       default, test" in groups
    variables = list_entries(bake, "variables").splitlines()
    assert variables[0].split() == ["VARIABLE", "TYPE", "VALUE", "DESCRIPTION"]
    assert "PY_VERSIONS  list    3.11,3.12,3.13" in variables
    with pytest.raises(Exception, match="unknown target or group 'apii' \\(did you mean api\\?\\)"):
        print_resolved(bake, ["apii"])


def test_default_file_lookup(repo):
    repo.write("shipyard.yaml", "version: 1\ntargets:\n  a: {dockerfile_inline: 'FROM scratch'}\n")
    assert list(repo.load().targets) == ["a"]
    repo.write("build.yaml", "version: 1\ntargets:\n  b: {dockerfile_inline: 'FROM scratch'}\n")
    assert list(repo.load().targets) == ["b"]  # build.yaml first
    os.remove(repo.root / "build.yaml")
    os.remove(repo.root / "shipyard.yaml")
    assert "no build file: looked for build.yaml" in repo.error()


def test_variables_env_var_and_list(repo):
    repo.write(
        "build.yaml",
        """\
        version: 1
        variables:
          TAG: { default: dev, env: GIT_SHA }
          REGISTRY: local
          PLATFORMS: [a, b]
          EMPTY: {}
        targets:
          t:
            dockerfile_inline: FROM scratch
            tags: ["${REGISTRY}/t:${TAG}", "${EMPTY:-none}", "${MISSING-x}"]
        """,
    )
    bake = repo.load()
    assert bake.targets["t"].tags[:3] == ("local/t:dev", "none", "x")
    assert bake.variables["PLATFORMS"].type == "list"
    bake = repo.load(environ={"GIT_SHA": "123", "REGISTRY": "reg.io", "TAG": "not-this"})
    assert bake.targets["t"].tags[0] == "reg.io/t:123"  # `env:` names the variable's env var; else its own name
    bake = repo.load(environ={"GIT_SHA": "123"}, variables={"TAG": "cli", "PLATFORMS": "x,y"})
    assert bake.targets["t"].tags[0] == "local/t:cli"
    assert bake.variables["PLATFORMS"].value == ("x", "y")
    assert repo.load(variables={"PLATFORMS": '["p", 3]'}).variables["PLATFORMS"].value == ("p", "3")


def test_unknown_var_on_command_line(repo):
    repo.write("build.yaml", "version: 1\nvariables:\n  TAG: dev\n")
    assert "--var: --var.TAGG: unknown variable 'TAGG' (did you mean TAG?)" == repo.error(variables={"TAGG": "x"})


def test_list_variable_as_matrix_axis_and_map_values(repo):
    repo.write(
        "build.yaml",
        """\
        version: 1
        variables:
          PYS: { default: ["3.11", "3.12"], type: list }
        targets:
          t:
            matrix:
              py: ${PYS}
              os: [{name: deb, image: "debian:12"}, {name: alp, image: "alpine:3"}]
            name: t-${os.name}-py${py}
            steps:
              - from: ${os.image}
              - run: echo ${target.name} ${target.short} $$HOME $HOME
            args: { PY: "${py}" }
        """,
    )
    bake = repo.load(variables={"PYS": "3.13"})
    assert list(bake.targets) == ["t-deb-py3.13", "t-alp-py3.13"]
    t = bake.targets["t-alp-py3.13"]
    assert t.steps[0].value == "alpine:3"
    assert t.steps[1].value == "echo t-alp-py3.13 t $HOME $HOME"
    assert t.args == (("PY", "3.13"),)
    assert bake.groups["t"] == ("t-deb-py3.13", "t-alp-py3.13")


def test_inherits_last_wins_maps_merge_and_recipe_replaces(repo):
    repo.write(
        "build.yaml",
        """\
        version: 1
        defaults:
          platforms: [linux/amd64]
          args: { FROM_DEFAULTS: "1" }
        targets:
          _a:
            dockerfile: a.Dockerfile
            args: { X: a, Y: a }
            tags: [a]
            target: stage-a
          _b:
            args: { X: b, DROP: b }
            tags: [b]
          child:
            inherits: [_a, _b]
            args: { DROP: null, Z: c }
          stepper:
            inherits: _a
            steps: [ {from: scratch} ]
        """,
    )
    bake = repo.load()
    assert list(bake.targets) == ["child", "stepper"]  # abstract targets are never built
    child = bake.targets["child"]
    assert dict(child.args) == {"FROM_DEFAULTS": "1", "X": "b", "Y": "a", "Z": "c"}
    assert child.tags == ("b",)  # last inherits wins; lists are replaced whole
    assert child.target == "stage-a"
    assert child.dockerfile == str(repo.root / "a.Dockerfile")  # relative to the context
    assert child.platforms == ("linux/amd64",)
    stepper = bake.targets["stepper"]
    assert stepper.dockerfile == "" and stepper.steps[0].value == "scratch"


def test_contexts_kinds_and_paths(repo):
    repo.write(
        "build.yaml",
        """\
        version: 1
        include: [sub/fragment.yaml]
        targets:
          dep: { dockerfile_inline: FROM scratch, result: /out/ }
        """,
    )
    repo.write(
        "sub/fragment.yaml",
        """\
        targets:
          t:
            dockerfile_inline: FROM scratch
            additional_contexts:
              tgt: target:dep
              img: docker-image://busybox@sha256:abcd
              layout: oci-layout://./layout@sha256:1234
              tagged: oci-layout://../other:v1
              dir: ../shared
              home: .
              git: https://example.invalid/repo.git
        """,
    )
    bake = repo.load()
    root = str(repo.root)
    assert dict(bake.targets["t"].contexts) == {
        "dir": f"{root}/shared",
        "git": "https://example.invalid/repo.git",
        "home": f"{root}/sub",
        "img": "docker-image://busybox@sha256:abcd",
        "layout": f"oci-layout://{root}/sub/layout@sha256:1234",
        "tagged": f"oci-layout://{root}/other:v1",
        "tgt": "target:dep",
    }
    assert bake.targets["t"].context == f"{root}/sub"  # default context: the defining file's directory
    assert bake.targets["dep"].result == "/out"


def test_outputs_cache_secrets_forms(repo):
    repo.write(
        "build.yaml",
        """\
        version: 1
        targets:
          t:
            dockerfile_inline: FROM scratch
            output:
              - type=oci,dest=out/img.tar
              - out/dir
              - { type: registry, name: "r.io/x:1", push: true }
              - 'type=image,"name=a,b"'
            cache-from: [ r.io/cache, "type=local,src=c" ]
            cache-to: [ { type: registry, ref: r.io/cache, mode: max, compression: zstd } ]
            secret:
              - id=a,src=secret.txt
              - type=env,id=B
              - { id: c, src: /abs/c }
            ssh: [default]
            no-cache: true
            no-cache-filter: [stage1]
            network: host
        """,
    )
    t = repo.load().targets["t"]
    root = str(repo.root)
    assert t.outputs == (
        OutputSpec("oci", (("dest", f"{root}/out/img.tar"),)),
        OutputSpec("local", (("dest", f"{root}/out/dir"),)),
        OutputSpec("registry", (("name", "r.io/x:1"), ("push", "true"))),
        OutputSpec("image", (("name", "a,b"),)),
    )
    assert t.cache_from == ("type=registry,ref=r.io/cache", f"type=local,src={root}/c")
    assert t.cache_to == ("type=registry,compression=zstd,mode=max,ref=r.io/cache",)
    assert t.secrets == (
        SecretSpec("a", src=f"{root}/secret.txt"),
        SecretSpec("B", env="B"),
        SecretSpec("c", src="/abs/c"),
    )
    assert t.ssh == ("default",) and t.no_cache and t.no_cache_filter == ("stage1",) and t.network == "host"
    assert t.to_canonical()["cache_to"] == ["type=registry,compression=zstd,mode=max,ref=r.io/cache"]


def test_groups_nest_and_needs_expand(repo):
    repo.write(
        "build.yaml",
        """\
        version: 1
        groups:
          all: { targets: [one, inner], description: everything }
          inner: [two]
        targets:
          one: { dockerfile_inline: FROM scratch, needs: [inner] }
          two: { dockerfile_inline: FROM scratch }
        """,
    )
    bake = repo.load()
    assert bake.expand(["all"]) == ["one", "two"]
    assert bake.targets["one"].needs == ("two",)
    assert "all    one, inner  everything" in list_entries(bake, "groups")


def test_anchors_x_keys_and_merge_keys(repo):
    repo.write(
        "build.yaml",
        """\
        version: 1
        x-common: &common
          platforms: [linux/amd64]
          args: { A: "1" }
        targets:
          t:
            <<: *common
            x-note: ignored ${NOT_A_VARIABLE}
            dockerfile_inline: FROM scratch
            args: { B: 0755 }
        """,
    )
    t = repo.load().targets["t"]
    assert t.platforms == ("linux/amd64",)
    assert t.args == (("B", "0755"),)  # explicit keys win over merged ones; numbers keep their spelling


def test_set_overrides(example):
    bake = example.load(
        sets=[
            "*.platform=linux/arm64",
            "base-py3.12.args.PIP=1",
            "api.tags+=extra:1",
            "test-*.no-cache=true",
            "web.context=elsewhere",
            "worker.dockerfile_inline=FROM scratch",
            "api.labels.org.example.x=y",
        ]
    )
    assert {t.platforms for t in bake.targets.values()} == {("linux/arm64",)}
    assert bake.targets["base-py3.12"].args == (("PIP", "1"),)
    assert bake.targets["api"].tags == ("127.0.0.1:5000/acme/api:dev", "extra:1")
    assert all(bake.targets[n].no_cache for n in bake.groups["test"])
    assert not bake.targets["api"].no_cache
    assert bake.targets["web"].context == os.path.join(example.root, "elsewhere")
    worker = bake.targets["worker"]
    assert worker.dockerfile == "" and worker.dockerfile_inline == "FROM scratch"
    assert dict(bake.targets["api"].labels)["org.example.x"] == "y"
    assert "no target matches 'nope'" in example.error(sets=["nope.tags=x"])
    assert "(did you mean tags?)" in example.error(sets=["api.tagz=x"])


def test_several_files_merge_like_bake(repo):
    repo.write(
        "a.yaml", "version: 1\ntargets:\n  t: {dockerfile_inline: FROM scratch, args: {A: '1', B: '1'}, tags: [a]}\n"
    )
    repo.write(
        "b.yaml", "version: 1\ntargets:\n  t: {args: {B: '2'}, tags: [b]}\n  u: {dockerfile_inline: FROM scratch}\n"
    )
    bake = repo.load("a.yaml", "b.yaml")
    assert bake.targets["t"].args == (("A", "1"), ("B", "2")) and bake.targets["t"].tags == ("b",)
    assert list(bake.targets) == ["t", "u"]


def test_include_globs_and_diamonds(repo):
    repo.write("build.yaml", "version: 1\ninclude: ['svc/*/build.yaml', svc/a/build.yaml, 'none/*.yaml']\n")
    repo.write("svc/a/build.yaml", "include: [../common.yaml]\ntargets:\n  a: {dockerfile_inline: FROM scratch}\n")
    repo.write("svc/b/build.yaml", "include: [../common.yaml]\ntargets:\n  b: {dockerfile_inline: FROM scratch}\n")
    repo.write("svc/common.yaml", "variables:\n  V: x\ngroups:\n  default: [a]\n")
    repo.write("svc/b/extra.yaml", "groups:\n  default: [b]\n")
    with open(repo.root / "svc/b/build.yaml", "a") as f:
        f.write("include: [extra.yaml]\n")
    assert "duplicate key 'include'" in repo.error()
    repo.write(
        "svc/b/build.yaml", "include: [../common.yaml, extra.yaml]\ntargets:\n  b: {dockerfile_inline: FROM scratch}\n"
    )
    bake = repo.load()
    assert sorted(bake.targets) == ["a", "b"]
    assert bake.groups["default"] == ("a", "b")  # fragments add to a group
    assert len(bake.files) == 5 and "V" in bake.variables


def test_does_not_touch_the_dockerfile_or_context(repo):
    """Loading resolves paths but never requires them to exist (a partial checkout can still --print)."""
    repo.write("build.yaml", "version: 1\ntargets:\n  t: {context: missing/dir}\n")
    t = repo.load().targets["t"]
    assert t.dockerfile == str(repo.root / "missing/dir/Dockerfile")


def test_fragment_included_by_a_sibling_loads_once(repo):
    repo.write("build.yaml", "version: 1\ninclude: [a.yaml, b.yaml]\n")
    repo.write("a.yaml", "include: [b.yaml]\ntargets:\n  a: {dockerfile_inline: FROM scratch}\n")
    repo.write("b.yaml", "targets:\n  b: {dockerfile_inline: FROM scratch}\n")
    bake = repo.load()
    assert sorted(bake.targets) == ["a", "b"] and len(bake.files) == 3
