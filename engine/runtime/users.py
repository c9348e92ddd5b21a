"""Turn a Dockerfile `USER` value into ids, the way Docker and runc do.

Semantics of runc's `user.GetExecUser` (which Docker uses): "" is root; a user is
matched by name, or by number in /etc/passwd; a number with no passwd entry is
still allowed (gid 0, home "/"); an explicit group is matched by name or number in
/etc/group (a number need not exist); without an explicit group the user's
supplementary groups are the /etc/group entries that list the user's name.

The files are read from the rootfs through `resolve_in_root`, so a hostile image
whose /etc/passwd is a symlink to the host's cannot make us read outside it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import NamedTuple

from engine.errors import ShipyardError
from engine.fs.safepath import resolve_in_root

MAX_ID = 2**31 - 1
MAX_FILE_BYTES = 16 << 20


class UserLookupError(ShipyardError):
    """A USER that names no entry in the image's passwd or group file."""


@dataclass(frozen=True)
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


class _PasswdEntry(NamedTuple):
    name: str
    uid: int
    gid: int
    home: str


class _GroupEntry(NamedTuple):
    name: str
    gid: int
    members: tuple[str, ...]


def _read_rootfs_file(rootfs: str, path: str) -> list[list[str]] | None:
    """The colon-split lines of a file in the rootfs, or None when it does not exist."""
    host = resolve_in_root(rootfs, path)
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise UserLookupError(f"cannot read {path} in the image: {os.strerror(exc.errno or 0)}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserLookupError(f"{path} in the image is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise UserLookupError(f"{path} in the image is too large")
    rows = []
    for raw in data.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def _parse_id(text: str) -> int | None:
    if not text.isdigit() or not text.isascii():
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def _passwd(rows: list[list[str]]) -> list[_PasswdEntry]:
    entries = []
    for row in rows:
        if len(row) < 4:
            continue
        uid, gid = _parse_id(row[2]), _parse_id(row[3])
        if uid is None or gid is None:
            continue
        entries.append(_PasswdEntry(row[0], uid, gid, row[5] if len(row) > 5 and row[5] else "/"))
    return entries


def _groups(rows: list[list[str]]) -> list[_GroupEntry]:
    entries = []
    for row in rows:
        if len(row) < 3:
            continue
        gid = _parse_id(row[2])
        if gid is None:
            continue
        members = tuple(m.strip() for m in row[3].split(",") if m.strip()) if len(row) > 3 else ()
        entries.append(_GroupEntry(row[0], gid, members))
    return entries


def _numeric(text: str, what: str, user: str) -> int | None:
    if not text.isdigit():
        return None
    value = _parse_id(text)
    if value is None:
        raise UserLookupError(f"{what} {text} in user {user!r} is out of range")
    return value


def resolve_user(rootfs: str, user: str) -> ResolvedUser:
    """The uid, gid, supplementary gids and home directory `user` means in `rootfs`."""
    user_part, _, group_part = user.partition(":")
    uid_arg = _numeric(user_part, "uid", user)
    gid_arg = _numeric(group_part, "gid", user)

    passwd_rows = _read_rootfs_file(rootfs, "/etc/passwd")
    uid, gid, home = 0, 0, "/"
    matched_name = ""
    entry: _PasswdEntry | None = None
    for candidate in _passwd(passwd_rows or []):
        if user_part == "":
            hit = candidate.uid == 0
        elif uid_arg is not None:
            hit = candidate.uid == uid_arg
        else:
            hit = candidate.name == user_part
        if hit:
            entry = candidate
            break
    if entry is not None:
        matched_name, uid, gid, home = entry.name, entry.uid, entry.gid, entry.home
    elif user_part != "":
        if uid_arg is None:
            raise UserLookupError(f"unable to find user {user_part}: no matching entries in passwd file")
        uid = uid_arg

    additional: tuple[int, ...] = ()
    if group_part != "" or matched_name:
        group_rows = _read_rootfs_file(rootfs, "/etc/group")
        groups = _groups(group_rows or [])
        if group_part != "":
            found = next(
                (g for g in groups if (g.gid == gid_arg if gid_arg is not None else g.name == group_part)),
                None,
            )
            if found is not None:
                gid = found.gid
            elif gid_arg is not None:
                gid = gid_arg
            else:
                raise UserLookupError(f"unable to find group {group_part}: no matching entries in group file")
        else:
            seen: list[int] = []
            for group in groups:
                if matched_name in group.members and group.gid not in seen:
                    seen.append(group.gid)
            additional = tuple(seen)
    return ResolvedUser(uid=uid, gid=gid, additional_gids=additional, home=home)
