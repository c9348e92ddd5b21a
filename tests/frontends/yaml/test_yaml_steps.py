"""Inline steps: every kind's canonical value, and the mounts read like `RUN --mount`."""

from __future__ import annotations

from frontends.dockerfile.mounts import parse_mount
from frontends.yaml.model import MountSpec


def test_every_step_kind(repo):
    repo.write(
        "build.yaml",
        """\
        version: 1
        targets:
          t:
            steps:
              - from: busybox:local
              - arg: { VERSION: "1.0", BARE: null }
              - arg: OTHER=2
              - env: { A: 1, B: "two words" }
              - workdir: /app
              - user: 1000
              - label: { org.example.a: b }
              - run: [sh, -c, "echo hi"]
                network: host
              - run: |
                  echo one
                  echo two
                mounts:
                  - type=cache,target=/c,id=c,sharing=private
                  - { type: bind, target: /src, from: other, source: /x, rw: true }
                  - { type: secret, id: tok, env: TOKEN }
                  - { type: tmpfs, target: /tmp, size: 64m }
              - copy: { src: a.txt, dest: /a/, from: other, chown: "1:1", chmod: 0644, link: true, exclude: ["*.pyc"], parents: true }
              - add: { src: [b.tar.gz], dest: /b/ }
              - expose: [8080, 53/udp]
              - expose: 9000
              - entrypoint: [/bin/app]
              - cmd: serve --port 8080
              - healthcheck: { test: curl -f localhost, interval: 30s, retries: 3 }
              - healthcheck: { test: [/bin/check, --fast], start_period: 1m30s }
              - healthcheck: NONE
        """,
    )
    steps = repo.load().targets["t"].steps
    got = [(s.kind, s.value) for s in steps]
    assert got == [
        ("from", "busybox:local"),
        ("arg", {"VERSION": "1.0", "BARE": None}),
        ("arg", {"OTHER": "2"}),
        ("env", {"A": "1", "B": "two words"}),
        ("workdir", "/app"),
        ("user", "1000"),
        ("label", {"org.example.a": "b"}),
        ("run", ["sh", "-c", "echo hi"]),
        ("run", "echo one\necho two\n"),
        (
            "copy",
            {
                "src": ["a.txt"],
                "dest": "/a/",
                "from": "other",
                "chown": "1:1",
                "chmod": "0644",
                "link": True,
                "parents": True,
                "exclude": ["*.pyc"],
            },
        ),
        ("add", {"src": ["b.tar.gz"], "dest": "/b/"}),
        ("expose", ["8080", "53/udp"]),
        ("expose", ["9000"]),
        ("entrypoint", ["/bin/app"]),
        ("cmd", "serve --port 8080"),
        ("healthcheck", {"test": ["CMD-SHELL", "curl -f localhost"], "interval": "30s", "retries": 3}),
        ("healthcheck", {"test": ["CMD", "/bin/check", "--fast"], "start_period": "1m30s"}),
        ("healthcheck", {"test": ["NONE"]}),
    ]
    assert steps[7].network == "host" and steps[8].network == ""
    mounts = steps[8].mounts
    assert mounts[0] == MountSpec("cache", "/c", (("id", "c"), ("sharing", "private")))
    assert mounts[1] == MountSpec("bind", "/src", (("from", "other"), ("readonly", "false"), ("source", "/x")))
    assert mounts[2] == MountSpec("secret", "", (("env", "TOKEN"), ("id", "tok")))
    assert mounts[3].to_canonical() == {"type": "tmpfs", "target": "/tmp", "size": "64m"}
    for mount in mounts:  # each reads back through the Dockerfile frontend's RUN --mount parser
        parsed = parse_mount(mount.to_csv(), None)
        assert parsed.type == mount.type and parsed.target == mount.target
    assert parse_mount(mounts[1].to_csv(), None).readonly is False
    assert steps[0].location == "build.yaml:5:9"


def test_mount_csv_quotes_commas():
    mount = MountSpec("bind", "/a,b", (("source", 'x"y'),))
    assert mount.to_csv() == 'type=bind,"target=/a,b","source=x""y"'
    parsed = parse_mount(mount.to_csv(), None)
    assert parsed.target == "/a,b" and parsed.source == 'x"y'


def test_target_network_and_steps_canonical(repo):
    repo.write(
        "build.yaml",
        "version: 1\ntargets:\n  t:\n    network: none\n    steps: [{from: x}, {run: make, network: default}]\n",
    )
    t = repo.load().targets["t"]
    assert t.network == "none" and t.steps[1].network == ""
    assert t.to_canonical()["steps"] == [{"from": "x"}, {"run": "make"}]
