"""Make a minimal busybox root filesystem from Debian's busybox-static.

Used by the demo, the tests and the benchmarks: Docker Hub is out of reach, so the
base image is built locally from a Debian package and `shipyard import`ed.
Usage: python scripts/busybox_rootfs.py DEST_DIR
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

BUSYBOX = "/bin/busybox"

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\ndaemon:x:1:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n"


def make_busybox_rootfs(dest: Path) -> Path:
    if not os.path.exists(BUSYBOX):
        raise SystemExit("busybox-static is not installed (apt-get install busybox-static)")
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
    (dest / "etc" / "passwd").write_text(PASSWD)
    (dest / "etc" / "group").write_text(GROUP)
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    make_busybox_rootfs(Path(sys.argv[1]))
