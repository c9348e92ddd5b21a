"""Shared fixtures: a busybox root filesystem made from Debian's busybox-static."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

BUSYBOX = "/bin/busybox"


def make_busybox_rootfs(dest: Path) -> Path:
    """A minimal root filesystem: static busybox, its applet links, /etc/passwd and group."""
    if not os.path.exists(BUSYBOX):
        pytest.fail("busybox-static is not installed (apt-get install busybox-static)")
    for sub in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root", "proc", "sys", "dev", "var"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list-full"], check=True, capture_output=True, text=True).stdout.split()
    for applet in applets:
        link = dest / applet
        if applet == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/bin/busybox", link)
    (dest / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
        "app:x:1000:1000:app:/home/app:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (dest / "etc" / "group").write_text("root:x:0:\ndaemon:x:1:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n")
    return dest


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (namespaces, overlayfs, runc)")
