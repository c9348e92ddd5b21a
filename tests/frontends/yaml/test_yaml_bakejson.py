"""Reading docker buildx bake's JSON form."""

from __future__ import annotations

from frontends.yaml.model import OutputSpec, SecretSpec

BAKE = """\
{
  "variable": {
    "TAG": {"default": "dev"},
    "PLATFORMS": {"default": ["linux/amd64"], "type": "list"}
  },
  "group": {
    "default": {"targets": ["app"]},
    "all": {"targets": ["default", "matrix"], "description": "everything"}
  },
  "target": {
    "_common": {"platforms": ["linux/amd64"], "labels": {"team": "core"}, "pull": true},
    "base": {"context": "base", "dockerfile-inline": "FROM scratch"},
    "app": {
      "inherits": ["_common"],
      "context": ".",
      "contexts": {"base": "target:base"},
      "cache-from": ["type=registry,ref=r.io/cache"],
      "cache-to": ["type=inline"],
      "output": ["type=docker,dest=app.tar"],
      "secret": ["id=tok,env=TOKEN"],
      "no-cache": true,
      "no-cache-filter": ["deps"],
      "tags": ["app:${TAG}"],
      "args": {"DROPPED": null, "N": 1}
    },
    "matrix": {
      "matrix": {"v": ["1", "2"]},
      "name": "m-${v}",
      "dockerfile-inline": "FROM scratch",
      "args": {"V": "${v}"}
    }
  }
}
"""


def test_bake_json_targets_groups_variables(repo):
    repo.write("docker-bake.json", BAKE)
    bake = repo.load("docker-bake.json", variables={"TAG": "1"})
    root = str(repo.root)
    assert list(bake.targets) == ["base", "app", "m-1", "m-2"]
    assert bake.expand(["all"]) == ["app", "m-1", "m-2"]
    assert bake.group_descriptions == {"all": "everything"}
    app = bake.targets["app"]
    assert app.context == root and app.tags == ("app:1",)
    assert app.args == (("N", "1"),)  # null: fall back to the Dockerfile's default
    assert app.labels == (("team", "core"),) and app.platforms == ("linux/amd64",)
    assert app.cache_from == ("type=registry,ref=r.io/cache",) and app.cache_to == ("type=inline",)
    assert app.outputs == (OutputSpec("docker", (("dest", f"{root}/app.tar"),)),)
    assert app.secrets == (SecretSpec("tok", env="TOKEN"),)
    assert app.no_cache and app.no_cache_filter == ("deps",)
    assert bake.targets["base"].dockerfile_inline == "FROM scratch"
    assert bake.targets["m-2"].args == (("V", "2"),)


def test_bake_json_errors_are_located(repo):
    repo.write("docker-bake.json", '{"target": {"a": {"attest": ["type=sbom"]}}}')
    assert (
        repo.error("docker-bake.json")
        == "docker-bake.json:1:19: target.a.attest: bake attribute 'attest' is not supported"
    )
    repo.write("docker-bake.json", '{"target": {"a": {"cache-form": []}}}')
    assert repo.error("docker-bake.json") == (
        "docker-bake.json:1:19: target.a.cache-form: unknown key 'cache-form' (did you mean cache-from?)"
    )
    repo.write("docker-bake.json", '{"targets": {}}')
    assert (
        repo.error("docker-bake.json")
        == "docker-bake.json:1:2: targets: unknown bake key 'targets' (did you mean target?)"
    )
    repo.write("docker-bake.json", '{"target": {"a": {}, "a": {}}}')
    assert (
        repo.error("docker-bake.json") == "docker-bake.json:1:22: target.a: duplicate key 'a' (first defined at line 1)"
    )
    repo.write("docker-bake.hcl", 'target "a" {}')
    assert repo.error("docker-bake.hcl").startswith("docker-bake.hcl: HCL bake files are not supported")
