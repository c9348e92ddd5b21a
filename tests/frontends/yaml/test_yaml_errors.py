"""One test per class of build-file error: each message names `file:line:col` and the key path."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

from frontends.yaml import yamlsafe
from frontends.yaml.errors import BuildFileError
from frontends.yaml.interpolate import MAX_TOTAL_BYTES, MAX_VALUE_BYTES
from frontends.yaml.yamlsafe import MAX_FILE_BYTES


def build(repo, body: str) -> None:
    repo.write("build.yaml", "version: 1\n" + textwrap.dedent(body))


def test_unknown_key_with_suggestion(repo):
    build(repo, "targets:\n  api:\n    dockerfil: Dockerfile\n")
    assert repo.error() == "build.yaml:4:5: targets.api.dockerfil: unknown key 'dockerfil' (did you mean dockerfile?)"


def test_unknown_top_level_key(repo):
    build(repo, "target:\n  api: {}\n")
    assert repo.error() == "build.yaml:2:1: target: unknown key 'target' (did you mean targets?)"


def test_wrong_type(repo):
    build(repo, "targets:\n  api:\n    tags: web:latest\n")
    assert repo.error() == "build.yaml:4:11: targets.api.tags: expected a list, got a string"


def test_wrong_type_in_a_list(repo):
    build(repo, "targets:\n  api:\n    platforms: [linux/amd64, {os: linux}]\n")
    assert repo.error() == "build.yaml:4:30: targets.api.platforms[1]: expected a string, got a mapping"


def test_bad_enum_with_suggestion(repo):
    build(repo, "targets:\n  api:\n    entitlements: [network.hots]\n")
    assert repo.error() == (
        "build.yaml:4:20: targets.api.entitlements[0]: 'network.hots' is not one of network.host, "
        "security.insecure (did you mean network.host?)"
    )


def test_duplicate_yaml_key_names_both_lines(repo):
    build(repo, "targets:\n  api: {dockerfile_inline: FROM scratch}\n  web: {}\n  api: {}\n")
    assert repo.error() == "build.yaml:5:3: targets.api: duplicate key 'api' (first defined at line 3)"


def test_yaml_syntax_error(repo):
    build(repo, "targets:\n  api: {tags: [a, b}\n")
    message = repo.error()
    assert message.startswith("build.yaml:3:20: targets.api.tags[2]: YAML syntax error: while parsing a flow sequence")


def test_bad_variable_pattern(repo):
    build(repo, "variables:\n  PY: { default: '3.12', pattern: '^3\\.[0-9+$' }\n")
    message = repo.error()
    assert message.startswith("build.yaml:3:35: variables.PY.pattern: invalid pattern '^3\\\\.[0-9+$': ")


def test_variable_value_against_pattern(repo):
    build(repo, "variables:\n  PY: { default: '2.7', pattern: '^3\\.[0-9]+$' }\n")
    assert (
        repo.error()
        == "build.yaml:3:18: variables.PY: value '2.7' (from default) does not match pattern '^3\\\\.[0-9]+$'"
    )
    build(repo, "variables:\n  PY: { default: '3.12', pattern: '^3\\.[0-9]+$' }\n")
    assert repo.error(variables={"PY": "4"}) == (
        "build.yaml:3:7: variables.PY: value '4' (from --var) does not match pattern '^3\\\\.[0-9]+$'"
    )
    assert "(from environment variable PY)" in repo.error(environ={"PY": "x"})


def test_missing_name_with_matrix(repo):
    build(repo, "targets:\n  test:\n    matrix: { py: ['3.11', '3.12'] }\n    dockerfile_inline: FROM scratch\n")
    assert repo.error() == (
        "build.yaml:4:5: targets.test.matrix: a matrix target needs a `name` template to make its names unique, "
        'e.g. name: "test-${py}"'
    )


def test_unknown_target_reference(repo):
    build(
        repo,
        """\
        targets:
          frontend-assets: {dockerfile_inline: FROM scratch}
          web:
            dockerfile_inline: FROM scratch
            contexts: { assets: "target:frontend-asset" }
        """,
    )
    assert repo.error() == (
        "build.yaml:6:25: targets.web.contexts.assets: unknown target 'frontend-asset' (did you mean frontend-assets?)"
    )


def test_reference_to_a_matrix_needs_one_of_its_targets(repo):
    build(
        repo,
        """\
        targets:
          base: {matrix: {py: ['1', '2']}, name: 'base-${py}', dockerfile_inline: FROM scratch}
          app: {dockerfile_inline: FROM base, contexts: {base: 'target:base'}}
        """,
    )
    assert (
        repo.error()
        == "build.yaml:4:56: targets.app.contexts.base: target:base is a matrix (base-1, base-2): name one of its targets"
    )


def test_reference_to_an_abstract_target(repo):
    build(repo, "targets:\n  _a: {}\n  b: {dockerfile_inline: FROM x, needs: [_a]}\n")
    assert repo.error() == (
        "build.yaml:4:42: targets.b.needs[0]: '_a' is an abstract target (its name starts with '_'): it is only for inherits"
    )


def test_inherits_cycle_prints_the_cycle(repo):
    build(
        repo,
        """\
        targets:
          a: {inherits: [b], dockerfile_inline: FROM scratch}
          b: {inherits: [c]}
          c: {inherits: [a]}
        """,
    )
    assert repo.error() == "build.yaml:5:18: targets.c.inherits[0]: inherits cycle: a -> b -> c -> a"


def test_unknown_inherits(repo):
    build(repo, "targets:\n  a: {inherits: _servce}\n  _service: {}\n")
    assert (
        repo.error()
        == "build.yaml:3:17: targets.a.inherits: unknown target '_servce' in inherits (did you mean _service?)"
    )


def test_target_reference_cycle_prints_the_cycle(repo):
    build(
        repo,
        """\
        targets:
          base:
            matrix: { py: ['3.11', '3.12'] }
            name: base-py${py}
            dockerfile_inline: FROM scratch
            needs: ["test-py${py}"]
          test:
            matrix: { py: ['3.11', '3.12'] }
            name: test-py${py}
            dockerfile_inline: FROM base
            contexts: { base: "target:base-py${py}" }
        """,
    )
    assert repo.error() == (
        "build.yaml:12:23: targets.test.contexts.base: target cycle: base-py3.11 -> test-py3.11 -> base-py3.11"
    )


def test_self_reference_is_a_cycle(repo):
    build(repo, "targets:\n  a: {dockerfile_inline: FROM x, contexts: {x: 'target:a'}}\n")
    assert repo.error() == "build.yaml:3:48: targets.a.contexts.x: target cycle: a -> a"


def test_duplicate_target_across_includes_names_both_files(repo):
    build(repo, "include: ['services/*/build.yaml']\n")
    repo.write("services/a/build.yaml", "targets:\n  api: {dockerfile_inline: FROM scratch}\n")
    repo.write("services/b/build.yaml", "targets:\n  web: {}\n  api: {}\n")
    assert repo.error() == (
        "services/b/build.yaml:3:3: targets.api: target 'api' is defined twice: here and at services/a/build.yaml:2:3"
    )


def test_include_cycle(repo):
    build(repo, "include: [a.yaml]\n")
    repo.write("a.yaml", "include: [b.yaml]\n")
    repo.write("b.yaml", "include: [a.yaml]\n")
    assert repo.error() == "b.yaml:1:11: include[0]: include cycle: build.yaml -> a.yaml -> b.yaml -> a.yaml"


def test_fragment_rules(repo):
    build(repo, "include: [a.yaml]\n")
    repo.write("a.yaml", "defaults: {tags: [x]}\n")
    assert (
        repo.error() == "a.yaml:1:1: defaults: `defaults` belongs in the main build file, not in an included fragment"
    )
    repo.write("a.yaml", "variables: {V: x}\n")
    build(repo, "include: [a.yaml]\nvariables: {V: y}\n")
    assert repo.error() == "a.yaml:1:13: variables.V: variable 'V' is defined twice: first at build.yaml:3:13"
    build(repo, "include: ['${DIR}/a.yaml']\n")
    assert repo.error() == (
        "build.yaml:2:11: include[0]: include paths cannot use variables: they are read before variables are resolved"
    )


def test_missing_include(repo):
    build(repo, "include: [nope.yaml]\n")
    assert repo.error() == "build.yaml:2:11: include[0]: included file 'nope.yaml' not found"


def test_version_missing_or_wrong(repo):
    repo.write("build.yaml", "targets: {}\n")
    assert repo.error() == "build.yaml:1:1: version: missing `version: 1` (the build file schema version)"
    repo.write("build.yaml", "version: 2\n")
    assert repo.error() == "build.yaml:1:10: version: unsupported version 2: this shipyard reads version 1"


def test_group_errors(repo):
    build(repo, "groups:\n  default: [api, nope]\ntargets:\n  api: {dockerfile_inline: FROM x}\n")
    assert repo.error() == "build.yaml:3:18: groups.default[1]: unknown target or group 'nope'"
    build(repo, "groups:\n  a: [b]\n  b: [a]\n")
    assert repo.error() == "build.yaml:4:3: groups.b: group cycle: a -> b -> a"
    build(repo, "groups:\n  api: []\ntargets:\n  api: {dockerfile_inline: FROM x}\n")
    assert repo.error() == "build.yaml:3:3: groups.api: 'api' is both a group and a target"


def test_step_shape_errors(repo):
    build(repo, "targets:\n  t:\n    steps:\n      - from: x\n      - cpy: {src: a, dest: /}\n")
    assert repo.error() == (
        "build.yaml:6:9: targets.t.steps[1]: expected one of the keys from, run, copy, add, env, arg, workdir, user, "
        "label, expose, entrypoint, cmd, healthcheck (did you mean copy?)"
    )
    build(repo, "targets:\n  t:\n    steps:\n      - from: x\n      - {run: a, copy: {src: a, dest: /}}\n")
    assert repo.error() == "build.yaml:6:18: targets.t.steps[1].copy: unknown key 'copy'"
    build(repo, "targets:\n  t:\n    steps:\n      - from: x\n      - copy: {src: a}\n")
    assert repo.error() == "build.yaml:6:15: targets.t.steps[1].copy: missing required key 'dest'"
    build(
        repo,
        "targets:\n  t:\n    steps:\n      - from: x\n      - run: make\n        mounts: [{type: cache, target: /c, sharing: lockd}]\n",
    )
    assert repo.error() == (
        "build.yaml:7:53: targets.t.steps[1].mounts[0].sharing: 'lockd' is not one of shared, private, locked "
        "(did you mean locked?)"
    )
    build(
        repo,
        "targets:\n  t:\n    steps:\n      - from: x\n      - run: make\n        mounts: ['type=secret,id=a,source=b']\n",
    )
    assert (
        repo.error() == "build.yaml:7:18: targets.t.steps[1].mounts[0]: invalid mount: both source and id can't be set"
    )
    build(repo, "targets:\n  t:\n    steps:\n      - run: make\n")
    assert repo.error() == "build.yaml:5:9: targets.t.steps[0]: the first step must be `from`"
    build(repo, "targets:\n  t:\n    steps:\n      - from: x\n      - add: {src: 'https://x.invalid/a.tgz', dest: /}\n")
    assert repo.error() == (
        "build.yaml:6:14: targets.t.steps[1].add.src[0]: add takes files from the build context only, not 'https://x.invalid/a.tgz'"
    )
    build(repo, "targets:\n  t:\n    steps:\n      - from: x\n      - expose: [80/tcpp]\n")
    assert (
        repo.error()
        == "build.yaml:6:17: targets.t.steps[1].expose: invalid port '80/tcpp': want PORT, PORT/tcp, PORT/udp or a range"
    )


def test_recipe_conflict(repo):
    build(repo, "targets:\n  t:\n    dockerfile: D\n    steps: [{from: x}]\n")
    assert (
        repo.error()
        == "build.yaml:5:5: targets.t.steps: give one of dockerfile, dockerfile_inline or steps, not dockerfile and steps"
    )


def test_alias_and_canonical_key_together(repo):
    build(repo, "targets:\n  t:\n    cache_from: [a]\n    cache-from: [b]\n")
    assert (
        repo.error() == "build.yaml:5:5: targets.t.cache-from: 'cache-from' and 'cache_from' are the same key; give one"
    )


def test_output_and_cache_errors(repo):
    build(repo, "targets:\n  t:\n    dockerfile_inline: FROM x\n    outputs: ['type=locl,dest=x']\n")
    assert repo.error() == (
        "build.yaml:5:15: targets.t.outputs[0]: output type 'locl' is not one of image, registry, oci, docker, local, tar "
        "(did you mean local?)"
    )
    build(repo, "targets:\n  t:\n    dockerfile_inline: FROM x\n    outputs: [{type: oci}]\n")
    assert repo.error() == "build.yaml:5:15: targets.t.outputs[0]: a oci output needs dest="
    build(repo, "targets:\n  t:\n    dockerfile_inline: FROM x\n    cache_to: ['type=local,src=x']\n")
    assert repo.error() == "build.yaml:5:16: targets.t.cache_to[0]: a local cache_to needs dest="
    build(repo, "targets:\n  t:\n    dockerfile_inline: FROM x\n    secrets: ['id=a,src=x,env=Y']\n")
    assert repo.error() == "build.yaml:5:15: targets.t.secrets[0]: a secret takes src or env, not both"


def test_interpolation_errors(repo):
    build(repo, "variables:\n  TAG: dev\ntargets:\n  t:\n    dockerfile_inline: FROM x\n    tags: ['app:${TGA}']\n")
    assert repo.error() == (
        "build.yaml:7:12: targets.t.tags[0]: unknown variable 'TGA' in ${TGA} (did you mean TAG?) (write $${TGA} for a literal)"
    )
    build(repo, "variables:\n  L: [a]\ntargets:\n  t:\n    dockerfile_inline: FROM x\n    tags: ['app:${L}']\n")
    assert repo.error() == (
        "build.yaml:7:12: targets.t.tags[0]: list variable L can only be used as a whole matrix axis (`axis: ${L}`)"
    )
    build(repo, "targets:\n  t:\n    dockerfile_inline: FROM x\n    tags: ['app:${oops']\n")
    assert repo.error() == "build.yaml:5:12: targets.t.tags[0]: unterminated ${ in 'app:${oops'"


def test_interpolation_blow_up_is_bounded(repo):
    """A value built from references to a big value stops at the cap, before the string is built."""
    build(
        repo, "variables:\n  X: x\ntargets:\n  t:\n    dockerfile_inline: FROM x\n    tags: ['${X}${X}${X}${X}${X}']\n"
    )
    big = "y" * (MAX_VALUE_BYTES // 4)
    started = time.monotonic()
    assert (
        repo.error(variables={"X": big})
        == f"build.yaml:7:12: targets.t.tags[0]: interpolated value exceeds {MAX_VALUE_BYTES} bytes"
    )
    assert time.monotonic() - started < 1


def test_interpolation_total_is_bounded(repo):
    """Each value under the cap, but a matrix multiplies them: the total budget stops it."""
    build(
        repo,
        """\
        variables:
          X: x
        targets:
          t:
            matrix: { i: [I] }
            name: t-${i}
            dockerfile_inline: FROM x
            labels: { a: '${X}' }
        """.replace("I", ", ".join(str(i) for i in range(80))),
    )
    big = "y" * (MAX_VALUE_BYTES - 10)
    assert repo.error(variables={"X": big}) == (
        f"build.yaml:9:18: targets.t.labels.a: interpolation produces more than {MAX_TOTAL_BYTES} bytes in all"
    )


def test_matrix_too_large(repo):
    axis = ",".join(map(str, range(40)))
    build(repo, f"targets:\n  t:\n    matrix: {{a: [{axis}], b: [{axis}]}}\n    name: t-${{a}}-${{b}}\n")
    assert repo.error() == "build.yaml:4:5: targets.t.matrix: matrix expands to more than 1000 targets"


def test_matrix_name_collision(repo):
    build(repo, "targets:\n  t:\n    matrix: {a: [x, y]}\n    name: t\n    dockerfile_inline: FROM x\n")
    assert (
        repo.error()
        == "build.yaml:5:11: targets.t.name: matrix names collide: 't' for {'a': 'x'} and {'a': 'y'}; use every axis in `name`"
    )


def test_set_errors(repo):
    build(repo, "targets:\n  t: {dockerfile_inline: FROM x}\n")
    assert repo.error(sets=["t.no_cache=maybe"]) == "--set: --set 't.no_cache=maybe': no_cache takes true or false"
    assert repo.error(sets=["t.steps=x"]).startswith("--set: --set 't.steps=x': want TARGET.KEY=VALUE with KEY one of")
    assert repo.error(sets=["t.outputs=type=nope"]) == (
        "--set: targets.t.outputs[0]: output type 'nope' is not one of image, registry, oci, docker, local, tar"
    )


def _billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["version: 1", 'x-a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"x-a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    lines.append(f"targets:\n  t:\n    dockerfile_inline: FROM x\n    tags: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def test_alias_bomb_refused_fast_in_little_memory(repo):
    repo.write("build.yaml", _billion_laughs())
    import tracemalloc

    tracemalloc.start()
    started = time.monotonic()
    try:
        message = repo.error()
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert re.match(r"build\.yaml:7:\d+: x-a5\[\d+\]: ", message), message
    assert "YAML document too large: more than 200000 nodes once aliases are expanded" in message
    assert elapsed < 1
    assert peak < 16 * 1024 * 1024


def test_many_aliases_refused(repo):
    text = "version: 1\nx-a: &a 1\nx-list: [" + ", ".join(["*a"] * (yamlsafe.MAX_ALIASES + 1)) + "]\n"
    repo.write("build.yaml", text)
    assert repo.error().endswith(
        f"x-list[{yamlsafe.MAX_ALIASES}]: too many YAML aliases (limit {yamlsafe.MAX_ALIASES})"
    )


def test_oversized_file_refused_before_reading(repo):
    path = repo.root / "build.yaml"
    with open(path, "wb") as f:
        f.truncate(1 << 30)  # a sparse 1 GiB file: reading it would be slow and big
    started = time.monotonic()
    assert repo.error() == f"build.yaml: file is {1 << 30} bytes, over the {MAX_FILE_BYTES} byte limit for build files"
    assert time.monotonic() - started < 0.5


def test_deep_nesting_refused(repo):
    repo.write("build.yaml", "version: 1\nx-deep: " + "[" * 200 + "]" * 200 + "\n")
    assert repo.error().startswith("build.yaml:2:")
    assert "nested deeper than 64 levels" in repo.error()


def test_unsafe_tags_refused(repo):
    repo.write("build.yaml", "version: 1\nx-evil: !!python/object/apply:os.system ['touch /tmp/pwned']\n")
    assert (
        repo.error() == "build.yaml:2:9: x-evil: unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'"
    )


def test_not_utf8(repo):
    (repo.root / "build.yaml").write_bytes(b"version: 1\nx-a: \xff\n")
    assert repo.error() == "build.yaml:2:6: not UTF-8 text (byte 16)"


def test_errors_are_shipyard_errors_with_one_line():
    from engine.errors import ShipyardError

    err = BuildFileError("reason", "f.yaml", 3, 4, "targets.a")
    assert isinstance(err, ShipyardError) and str(err) == "f.yaml:3:4: targets.a: reason" and "\n" not in str(err)


@pytest.mark.timeout(60)
def test_alias_bomb_memory_in_a_fresh_process(tmp_path):
    """The whole loader, in its own interpreter: peak RSS stays small while refusing the bomb.

    (VmHWM, not getrusage: Linux folds the forking parent's high-water mark into ru_maxrss.)"""
    (tmp_path / "build.yaml").write_text(_billion_laughs(levels=12, width=12))
    code = textwrap.dedent(
        """
        import sys
        from frontends.yaml.errors import BuildFileError
        from frontends.yaml.loader import load_bake
        try:
            load_bake(None, cwd=sys.argv[1], environ={})
        except BuildFileError as exc:
            print(exc)
        with open("/proc/self/status") as f:
            print(next(line.split()[1] for line in f if line.startswith("VmHWM:")))
        """
    )
    root = os.path.join(os.path.dirname(__file__), "..", "..", "..")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=root, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stderr
    message, peak_kib = proc.stdout.splitlines()
    assert "YAML document too large" in message
    assert int(peak_kib) < 64 * 1024
