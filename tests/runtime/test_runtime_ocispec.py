"""The generated OCI config: BuildKit's runc-worker layout with Docker's defaults."""

from __future__ import annotations

from engine.runtime.base import DEFAULT_PATH, BindMount, ProcessSpec, TmpfsMount, process_env
from engine.runtime.caps import DOCKER_DEFAULT_CAPS, held_capabilities
from engine.runtime.ocispec import MASKED_PATHS, READONLY_PATHS, build_config


def config(spec: ProcessSpec, cgroup: bool = True) -> dict:
    return build_config("/rootfs", spec, hosts_file="/s/hosts", resolv_file="/s/resolv.conf", cgroup_mount=cgroup).to_oci()


def test_default_step_is_sandboxed_like_docker() -> None:
    doc = config(ProcessSpec(args=("sh", "-c", "true")))
    process = doc["process"]
    assert process["terminal"] is False
    assert process["noNewPrivileges"] is False
    assert process["user"] == {"uid": 0, "gid": 0}
    assert process["cwd"] == "/"
    assert process["env"] == [f"PATH={DEFAULT_PATH}"]
    caps = process["capabilities"]
    assert set(caps["bounding"]) == set(DOCKER_DEFAULT_CAPS)
    assert caps["effective"] == caps["permitted"] == caps["bounding"]
    assert "inheritable" not in caps and "ambient" not in caps
    assert "CAP_SYS_ADMIN" not in caps["bounding"]
    assert process["rlimits"][0]["type"] == "RLIMIT_NOFILE"
    assert doc["root"] == {"path": "/rootfs", "readonly": False}
    assert doc["hostname"] == "buildkitsandbox"
    linux = doc["linux"]
    assert [ns["type"] for ns in linux["namespaces"]] == ["pid", "ipc", "uts", "mount"]
    assert linux["maskedPaths"] == list(MASKED_PATHS)
    assert linux["readonlyPaths"] == list(READONLY_PATHS)
    assert linux["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    destinations = [m["destination"] for m in doc["mounts"]]
    assert destinations == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
        "/etc/resolv.conf", "/etc/hosts",
    ]  # fmt: skip
    etc = {m["destination"]: m for m in doc["mounts"] if m["destination"].startswith("/etc/")}
    assert etc["/etc/hosts"] == {"destination": "/etc/hosts", "type": "bind", "source": "/s/hosts", "options": ["rbind", "ro"]}
    sysfs = next(m for m in doc["mounts"] if m["destination"] == "/sys")
    assert "ro" in sysfs["options"]


def test_network_none_adds_a_network_namespace() -> None:
    doc = config(ProcessSpec(args=("true",), network="none"))
    assert "network" in [ns["type"] for ns in doc["linux"]["namespaces"]]


def test_insecure_has_all_held_caps_no_masks_writable_sys() -> None:
    doc = config(ProcessSpec(args=("true",), security="insecure"))
    assert set(doc["process"]["capabilities"]["bounding"]) == set(held_capabilities())
    assert doc["linux"]["maskedPaths"] == [] and doc["linux"]["readonlyPaths"] == []
    assert doc["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    sysfs = next(m for m in doc["mounts"] if m["destination"] == "/sys")
    assert "rw" in sysfs["options"]


def test_non_root_user_keeps_bounding_set_only() -> None:
    doc = config(ProcessSpec(args=("true",), uid=1000, gid=1000, additional_gids=(50, 60)))
    assert doc["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [50, 60]}
    caps = doc["process"]["capabilities"]
    assert caps["effective"] == caps["permitted"] == []
    assert set(caps["bounding"]) == set(DOCKER_DEFAULT_CAPS)


def test_step_mounts_follow_defaults_and_later_ones_replace_earlier() -> None:
    spec = ProcessSpec(
        args=("true",),
        mounts=(
            BindMount("/host/src", "/src/"),
            TmpfsMount("/tmp", size=1 << 20),
            BindMount("/host/hosts", "/etc/hosts", readonly=False),
        ),
        cwd="/src/./sub/..",
        readonly_rootfs=True,
    )
    doc = config(spec, cgroup=False)
    mounts = doc["mounts"]
    destinations = [m["destination"] for m in mounts]
    assert destinations == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/etc/resolv.conf", "/etc/hosts", "/src", "/tmp"]
    by_dest = {m["destination"]: m for m in mounts}
    assert by_dest["/etc/hosts"]["source"] == "/host/hosts"
    assert by_dest["/etc/hosts"]["options"] == ["rbind", "rw"]
    assert by_dest["/src"]["options"] == ["rbind", "ro"]
    assert by_dest["/tmp"] == {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=1048576"]}
    assert doc["process"]["cwd"] == "/src"
    assert doc["root"]["readonly"] is True


def test_path_default_only_when_missing() -> None:
    assert process_env(ProcessSpec(args=("x",), env=("A=1",))) == (f"PATH={DEFAULT_PATH}", "A=1")
    assert process_env(ProcessSpec(args=("x",), env=("PATH=/bin", "A=1"))) == ("PATH=/bin", "A=1")
