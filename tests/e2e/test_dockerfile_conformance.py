"""One Dockerfile per feature of the reference, asserting on the built filesystem and image config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Shipyard, steps, write


def _config(sy: Shipyard, meta: dict) -> dict:
    digest = meta["containerimage.config.digest"].split(":")[1]
    return json.loads((sy.root / "blobs" / "sha256" / digest).read_text())


def _build(sy: Shipyard, tmp_path: Path, dockerfile: str, *args: str, files: dict[str, str] | None = None, name: str = "ctx"):
    ctx = tmp_path / name
    write(ctx / "Dockerfile", dockerfile)
    for rel, text in (files or {}).items():
        write(ctx / rel, text)
    out = tmp_path / f"{name}-out"
    proc, meta = sy.build(ctx, "--output", f"type=local,dest={out}", "--metadata-file", str(tmp_path / f"{name}.json"), *args)
    meta = json.loads((tmp_path / f"{name}.json").read_text())
    return out, meta


@pytest.fixture
def sy(runc_shipyard: Shipyard) -> Shipyard:
    return runc_shipyard


def test_expansion_operators(sy: Shipyard, tmp_path: Path) -> None:
    out, _ = _build(
        sy,
        tmp_path,
        "FROM busybox:local\n"
        "ENV V=hello.tar.gz EMPTY=\n"
        "WORKDIR /x\n"
        "RUN printf '%s\\n' \"$V\" > /dev/null\n"
        "COPY <<EOF /ops\n"
        "${V} ${V:-d} ${UNSET:-dflt} ${EMPTY:-e1} ${EMPTY-e2} ${V:+alt} ${UNSET+alt2} ${V#*.} ${V##*.} ${V%.*} ${V%%.*} ${V/l/L} ${V//l/L}\n"
        "EOF\n",
    )
    assert (out / "ops").read_text() == "hello.tar.gz hello.tar.gz dflt e1  alt  tar.gz gz hello.tar hello heLlo.tar.gz heLLo.tar.gz\n"


def test_required_variable_error_names_the_line(sy: Shipyard, tmp_path: Path) -> None:
    ctx = write(tmp_path / "req" / "Dockerfile", "FROM busybox:local\nWORKDIR ${NOPE:?is required}\n").parent
    proc, _ = sy.build(ctx, check=False)
    assert proc.returncode != 0
    assert "Dockerfile:2" in proc.stderr and "NOPE" in proc.stderr and "Traceback" not in proc.stderr


def test_arg_scoping(sy: Shipyard, tmp_path: Path) -> None:
    out, meta = _build(
        sy,
        tmp_path,
        "ARG BASE=busybox:local\nARG GLOBAL=g1\nARG OVERRIDE=default\n"
        "FROM ${BASE}\n"
        "RUN echo \"global-unseen=[$GLOBAL]\" > /a\n"
        "ARG GLOBAL\nARG OVERRIDE\nARG STAGE=s1\nENV STAGE=from-env\n"
        "RUN echo \"$GLOBAL $OVERRIDE $STAGE\" >> /a && env | grep -c '^GLOBAL=' >> /a\n"
        "ARG TARGETPLATFORM\nARG TARGETARCH\nARG BUILDPLATFORM\nARG TARGETSTAGE\n"
        "RUN echo \"$TARGETPLATFORM $TARGETARCH $BUILDPLATFORM [$TARGETSTAGE]\" >> /a\n",
        "--build-arg",
        "OVERRIDE=cli",
        "--build-arg",
        "HTTP_PROXY=http://127.0.0.1:9",
    )
    assert (out / "a").read_text().splitlines() == [
        "global-unseen=[]",
        "g1 cli from-env",
        "1",
        "linux/amd64 amd64 linux/amd64 []",
    ]
    history = [h.get("created_by", "") for h in _config(sy, meta)["history"]]
    assert not any("PROXY" in h for h in history)
    assert "ARG OVERRIDE=cli" in history


def test_copy_chown_by_name_chmod_symbolic_and_wildcards(sy: Shipyard, tmp_path: Path) -> None:
    out, _ = _build(
        sy,
        tmp_path,
        "FROM busybox:local\n"
        "COPY --chown=app:staff a.txt /owned/\n"
        "COPY --chown=1000 a.txt /numeric/\n"
        "COPY --chmod=u+x,g-r a.txt /sym/\n"
        "COPY --chmod=0640 *.txt /wild/\n"
        "COPY dir /contents\n"
        "COPY dir/ /contents-slash/\n"
        "RUN stat -c '%u:%g %a' /owned/a.txt /numeric/a.txt /sym/a.txt /wild/b.txt > /stats\n",
        files={"a.txt": "a", "b.txt": "b", "dir/inner.txt": "inner"},
    )
    assert (out / "stats").read_text().split("\n")[:4] == ["1000:50 644", "1000:1000 644", "0:0 704", "0:0 640"]
    assert sorted(p.name for p in (out / "wild").iterdir()) == ["a.txt", "b.txt"]
    assert (out / "contents" / "inner.txt").read_text() == "inner"
    assert (out / "contents-slash" / "inner.txt").read_text() == "inner"


def test_copy_parents_and_exclude(sy: Shipyard, tmp_path: Path) -> None:
    out, _ = _build(
        sy,
        tmp_path,
        "FROM busybox:local\nCOPY --parents src/a/x.py src/b/y.py /keep/\nCOPY --exclude=*.log logs/ /logs/\n",
        files={"src/a/x.py": "x", "src/b/y.py": "y", "logs/keep.txt": "k", "logs/drop.log": "d"},
    )
    assert (out / "keep" / "src" / "a" / "x.py").read_text() == "x"
    assert (out / "keep" / "src" / "b" / "y.py").read_text() == "y"
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["keep.txt"]


def test_image_config_instructions_and_inheritance(sy: Shipyard, tmp_path: Path) -> None:
    _, meta = _build(
        sy,
        tmp_path,
        "FROM busybox:local AS base\nLABEL base.label=kept shared=base\nENV BASEVAR=1\nSTOPSIGNAL SIGUSR1\nUSER app\n"
        "FROM base\nLABEL shared=child\nMAINTAINER someone@example.com\nENV LEGACY value with spaces\n"
        "EXPOSE 8000-8002/tcp 53/UDP\nVOLUME [\"/data\"]\nVOLUME /logs /cache\n"
        'SHELL ["/bin/sh", "-ec"]\nCMD echo shell form\n'
        "HEALTHCHECK --interval=5s --timeout=2s --start-period=1s --retries=4 CMD wget -q -O- http://127.0.0.1/ || exit 1\n",
    )
    config = _config(sy, meta)
    c = config["config"]
    assert c["Labels"] == {"base.label": "kept", "shared": "child"}
    assert "BASEVAR=1" in c["Env"] and "LEGACY=value with spaces" in c["Env"]
    assert c["StopSignal"] == "SIGUSR1" and c["User"] == "app"
    assert set(c["ExposedPorts"]) == {"8000/tcp", "8001/tcp", "8002/tcp", "53/udp"}
    assert set(c["Volumes"]) == {"/data", "/logs", "/cache"}
    assert c["Shell"] == ["/bin/sh", "-ec"]
    assert c["Cmd"] == ["/bin/sh", "-ec", "echo shell form"]
    assert c["Healthcheck"] == {
        "Test": ["CMD-SHELL", "wget -q -O- http://127.0.0.1/ || exit 1"],
        "Interval": 5_000_000_000,
        "Timeout": 2_000_000_000,
        "StartPeriod": 1_000_000_000,
        "Retries": 4,
    }
    assert config["author"] == "someone@example.com"
    _, none_meta = _build(sy, tmp_path, "FROM busybox:local\nHEALTHCHECK NONE\n", name="none")
    assert _config(sy, none_meta)["config"]["Healthcheck"] == {"Test": ["NONE"]}


def test_onbuild_triggers_run_in_the_child(sy: Shipyard, tmp_path: Path) -> None:
    base = write(
        tmp_path / "base" / "Dockerfile",
        "FROM busybox:local\nONBUILD RUN echo triggered > /trigger\nONBUILD COPY child.txt /from-child.txt\n",
    ).parent
    sy.build(base, "-t", "onbuild-base:1")
    out, meta = _build(
        sy, tmp_path, "FROM onbuild-base:1\nRUN cat /trigger /from-child.txt > /both\n", files={"child.txt": "child\n"}
    )
    assert (out / "both").read_text() == "triggered\nchild\n"
    assert "OnBuild" not in _config(sy, meta)["config"]
    names = [s["name"] for s in meta["shipyard.steps"]]
    assert names[1:] == ["[2/4] RUN echo triggered > /trigger", "[3/4] COPY child.txt /from-child.txt", "[4/4] RUN cat /trigger /from-child.txt > /both"]


def test_named_build_contexts(sy: Shipyard, tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    write(extra / "data.txt", "from a named context\n")
    layout_ctx = write(tmp_path / "layoutsrc" / "Dockerfile", "FROM busybox:local\nRUN echo from-layout > /layout.txt\n").parent
    layout = tmp_path / "layout"
    sy.build(layout_ctx, "--output", f"type=oci,dest={layout},tar=false", "-t", "lay:v1")
    out, _ = _build(
        sy,
        tmp_path,
        "FROM busybox:local AS replaced\nRUN exit 1\n"
        "FROM lay AS fromlayout\n"
        "FROM busybox:local\n"
        "COPY --from=extra data.txt /data.txt\n"
        "COPY --from=fromlayout /layout.txt /layout.txt\n"
        "COPY --from=replaced /data.txt /replaced.txt\n",
        "--build-context",
        f"extra={extra}",
        "--build-context",
        f"lay=oci-layout://{layout}:v1",
        "--build-context",
        f"replaced={extra}",
    )
    assert (out / "data.txt").read_text() == "from a named context\n"
    assert (out / "layout.txt").read_text() == "from-layout\n"
    assert (out / "replaced.txt").read_text() == "from a named context\n"


def test_from_platform_host_only(sy: Shipyard, tmp_path: Path) -> None:
    out, _ = _build(sy, tmp_path, "FROM --platform=$BUILDPLATFORM busybox:local\nRUN uname -m > /arch\n")
    assert (out / "arch").read_text().strip() == "x86_64"
    ctx = write(tmp_path / "arm" / "Dockerfile", "FROM --platform=linux/arm64 busybox:local\nRUN true\n").parent
    proc, _ = sy.build(ctx, check=False)
    assert proc.returncode != 0 and "Dockerfile:1" in proc.stderr and "linux/arm64" in proc.stderr


def test_no_cache_filter_reruns_only_that_stage(sy: Shipyard, tmp_path: Path) -> None:
    dockerfile = "FROM busybox:local AS a\nRUN echo a > /a\nFROM busybox:local AS b\nRUN echo b > /b\nFROM busybox:local\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n"
    _build(sy, tmp_path, dockerfile)
    _, meta = _build(sy, tmp_path, dockerfile, "--no-cache-filter", "a")
    s = steps(meta)
    assert not s["[a 2/2] RUN echo a > /a"]
    assert s["[b 2/2] RUN echo b > /b"]


def test_workdir_relative_and_created(sy: Shipyard, tmp_path: Path) -> None:
    out, meta = _build(sy, tmp_path, "FROM busybox:local\nWORKDIR /a\nWORKDIR b\nWORKDIR c\nRUN pwd > /pwd\n")
    assert (out / "pwd").read_text() == "/a/b/c\n"
    assert _config(sy, meta)["config"]["WorkingDir"] == "/a/b/c"


def test_exec_and_shell_forms(sy: Shipyard, tmp_path: Path) -> None:
    out, _ = _build(
        sy,
        tmp_path,
        'FROM busybox:local\nENV W=world\nRUN ["sh", "-c", "echo exec $W > /exec"]\nRUN echo shell $W > /shell\n'
        "RUN [\"echo\", \"$W\"] > /not-json-with-redirect || true\n",
    )
    assert (out / "exec").read_text() == "exec world\n"
    assert (out / "shell").read_text() == "shell world\n"
