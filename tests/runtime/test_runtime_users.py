"""resolve_user: Docker/runc semantics for USER, read from the rootfs only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.runtime.users import ResolvedUser, UserLookupError, resolve_user


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("", ResolvedUser(0, 0, (), "/root")),
        ("root", ResolvedUser(0, 0, (), "/root")),
        ("0", ResolvedUser(0, 0, (), "/root")),
        ("app", ResolvedUser(1000, 1000, (50,), "/home/app")),
        ("1000", ResolvedUser(1000, 1000, (50,), "/home/app")),
        ("app:staff", ResolvedUser(1000, 50, (), "/home/app")),
        ("app:50", ResolvedUser(1000, 50, (), "/home/app")),
        ("app:4242", ResolvedUser(1000, 4242, (), "/home/app")),
        ("1000:1000", ResolvedUser(1000, 1000, (), "/home/app")),
        ("1234", ResolvedUser(1234, 0, (), "/")),
        ("1234:staff", ResolvedUser(1234, 50, (), "/")),
        ("nobody", ResolvedUser(65534, 65534, (), "/nonexistent")),
        ("daemon:root", ResolvedUser(1, 0, (), "/usr/sbin")),
    ],
)
def test_docker_user_semantics(busybox_rootfs: Path, user: str, expected: ResolvedUser) -> None:
    assert resolve_user(str(busybox_rootfs), user) == expected


def test_unknown_user_is_a_clear_error(busybox_rootfs: Path) -> None:
    with pytest.raises(UserLookupError, match="^unable to find user ghost: no matching entries in passwd file$"):
        resolve_user(str(busybox_rootfs), "ghost")


def test_unknown_group_is_a_clear_error(busybox_rootfs: Path) -> None:
    with pytest.raises(UserLookupError, match="^unable to find group wheel: no matching entries in group file$"):
        resolve_user(str(busybox_rootfs), "app:wheel")


def _mini_rootfs(tmp_path: Path, passwd: str | None, group: str | None) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    if passwd is not None:
        (root / "etc" / "passwd").write_text(passwd)
    if group is not None:
        (root / "etc" / "group").write_text(group)
    return root


def test_without_passwd_numeric_ids_still_work_and_names_fail(tmp_path: Path) -> None:
    root = _mini_rootfs(tmp_path, None, None)
    assert resolve_user(str(root), "") == ResolvedUser(0, 0, (), "/")
    assert resolve_user(str(root), "42:7") == ResolvedUser(42, 7, (), "/")
    with pytest.raises(UserLookupError, match="unable to find user app"):
        resolve_user(str(root), "app")


def test_several_supplementary_groups_in_file_order_without_duplicates(tmp_path: Path) -> None:
    root = _mini_rootfs(
        tmp_path,
        "dev:x:1001:1001::/home/dev:/bin/sh\n",
        "# comment\ndev:x:1001:\nwheel:x:10:root,dev\naudio:x:29:dev\nwheel2:x:10:dev\nother:x:7:root\n",
    )
    assert resolve_user(str(root), "dev") == ResolvedUser(1001, 1001, (10, 29), "/home/dev")


def test_passwd_symlink_cannot_escape_the_rootfs(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("evil:x:666:666::/evil:/bin/sh\n")
    root = _mini_rootfs(tmp_path, None, "")
    os.symlink(f"../../../../../../..{outside}/passwd", root / "etc" / "passwd")
    with pytest.raises(UserLookupError, match="unable to find user evil"):
        resolve_user(str(root), "evil")
    # The same path inside the root is what the link really names.
    inside = root / outside.relative_to("/")
    inside.mkdir(parents=True)
    (inside / "passwd").write_text("evil:x:777:778::/in:/bin/sh\n")
    assert resolve_user(str(root), "evil") == ResolvedUser(777, 778, (), "/in")


def test_passwd_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    root = _mini_rootfs(tmp_path, None, None)
    os.mkfifo(root / "etc" / "passwd")
    with pytest.raises(UserLookupError, match="not a regular file"):
        resolve_user(str(root), "app")


def test_out_of_range_uid_is_an_error(busybox_rootfs: Path) -> None:
    with pytest.raises(UserLookupError, match="out of range"):
        resolve_user(str(busybox_rootfs), "99999999999")
