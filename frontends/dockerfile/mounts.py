"""`RUN --mount=…` values, read and checked the way BuildKit's `commands_runmount.go` does.

A mount spec is one CSV record of `key=value` fields (`type=cache,target=/root/.cache`).
BuildKit reads it twice: at parse time only to reject a `from=` that uses a variable, and
again at dispatch time with every value expanded against the stage's ARG/ENV, when it
validates everything. Shipyard keeps that split: `parse_mount(spec, None)` validates a
spec whose values hold no `$` right away (the same errors, just earlier) and keeps the
fields that do need expansion as written (`unexpanded=True`);
`parse_mount(spec, expander)` is the dispatch-time reading the lowering should use.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from frontends.dockerfile.flags import InstructionSyntaxError, parse_bool, parse_uint, ram_in_bytes, suggest
from frontends.dockerfile.shell_lexer import go_quote

__all__ = [
    "MOUNT_TYPES",
    "SHARING_MODES",
    "RunMount",
    "parse_mount",
    "split_csv_record",
]

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING_MODES = ("shared", "private", "locked")
_ALL_KEYS = (
    "type", "from", "source", "target", "readonly", "id", "sharing", "required", "size",
    "mode", "uid", "gid", "src", "dst", "destination", "ro", "rw", "readwrite", "env",
)  # fmt: skip
_FROM_VARIABLE = re.compile(r"\$[^\n]")


@dataclass(frozen=True, slots=True)
class RunMount:
    """One `--mount` of a RUN step.

    `readonly` already holds BuildKit's default (bind, secret and ssh mounts are
    read-only, cache and tmpfs ones writable); `sharing` is `shared` for a cache mount
    that names none. Defaults that depend on the working directory or on path cleaning
    (cache id = target, secret target = /run/secrets/<id>) are the lowering's job.
    """

    type: str = "bind"
    target: str = ""
    source: str = ""
    from_: str = ""
    readonly: bool = True
    id: str = ""
    sharing: str = ""
    required: bool = False
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    env: str | None = None
    spec: str = ""
    unexpanded: bool = False


def split_csv_record(text: str) -> list[str]:
    """The first record of `text` as Go's `encoding/csv` reads it (comma, strict quotes)."""
    if text == "" or text == "\n":
        raise InstructionSyntaxError("failed to parse csv mounts: EOF")
    line = text.split("\n", 1)[0]
    fields: list[str] = []
    pos = 0
    n = len(line)
    while True:
        if pos < n and line[pos] == '"':
            pos += 1
            buf: list[str] = []
            while True:
                q = line.find('"', pos)
                if q < 0:
                    raise InstructionSyntaxError(
                        f"failed to parse csv mounts: parse error on line 1, column {n + 1}: "
                        'extraneous or missing " in quoted-field'
                    )
                buf.append(line[pos:q])
                pos = q + 1
                if pos < n and line[pos] == '"':
                    buf.append('"')
                    pos += 1
                elif pos < n and line[pos] == ",":
                    fields.append("".join(buf))
                    pos += 1
                    break
                elif pos >= n:
                    fields.append("".join(buf))
                    return fields
                else:
                    raise InstructionSyntaxError(
                        f"failed to parse csv mounts: parse error on line 1, column {pos}: "
                        'extraneous or missing " in quoted-field'
                    )
            continue
        comma = line.find(",", pos)
        field = line[pos:] if comma < 0 else line[pos:comma]
        bare = field.find('"')
        if bare >= 0:
            raise InstructionSyntaxError(
                f"failed to parse csv mounts: parse error on line 1, column {pos + bare + 1}: "
                'bare " in non-quoted-field'
            )
        fields.append(field)
        if comma < 0:
            return fields
        pos = comma + 1


class _Mount:
    """The mutable state of one reading of a spec."""

    __slots__ = (
        "env", "from_", "gid", "id", "mode", "readonly", "required", "ro_auto", "sharing",
        "size", "source", "target", "type", "uid", "unexpanded",
    )  # fmt: skip

    def __init__(self) -> None:
        self.type = "bind"
        self.from_ = ""
        self.source = ""
        self.target = ""
        self.readonly = False
        self.ro_auto = True
        self.id = ""
        self.sharing = ""
        self.required = False
        self.mode: int | None = None
        self.uid: int | None = None
        self.gid: int | None = None
        self.size: int | None = None
        self.env: str | None = None
        self.unexpanded = False


def _bool(key: str, value: str) -> bool:
    try:
        return parse_bool(value)
    except ValueError:
        raise InstructionSyntaxError(f"invalid value for {key}: {value}") from None


def _apply(m: _Mount, key: str, value: str, field: str) -> None:
    if key == "type":
        lowered = value.lower()
        if lowered not in MOUNT_TYPES:
            raise InstructionSyntaxError(suggest(f"unsupported mount type {go_quote(value)}", value, MOUNT_TYPES, True))
        m.type = lowered
    elif key == "from":
        m.from_ = value
    elif key in ("source", "src"):
        m.source = value
    elif key in ("target", "dst", "destination"):
        m.target = value
    elif key in ("readonly", "ro"):
        m.readonly = _bool(key, value)
        m.ro_auto = False
    elif key in ("readwrite", "rw"):
        m.readonly = not _bool(key, value)
        m.ro_auto = False
    elif key == "required":
        if m.type not in ("secret", "ssh"):
            raise InstructionSyntaxError(f"unexpected key '{key}' for mount type '{m.type}'")
        m.required = _bool(key, value)
    elif key == "size":
        if m.type != "tmpfs":
            raise InstructionSyntaxError(f"unexpected key '{key}' for mount type '{m.type}'")
        try:
            m.size = ram_in_bytes(value)
        except ValueError:
            raise InstructionSyntaxError(f"invalid value for {key}: {value}") from None
    elif key == "id":
        m.id = value
    elif key == "sharing":
        lowered = value.lower()
        if lowered not in SHARING_MODES:
            raise InstructionSyntaxError(f"unsupported sharing value {go_quote(value)}")
        m.sharing = lowered
    elif key in ("mode", "uid", "gid"):
        try:
            number = parse_uint(value, 8 if key == "mode" else 10, 32)
        except ValueError:
            raise InstructionSyntaxError(f"invalid value {value} for {key}") from None
        setattr(m, key, number)
    elif key == "env":
        if m.type != "secret":
            raise InstructionSyntaxError(f"unexpected key '{key}' for mount type '{m.type}'")
        m.env = value
    else:
        raise InstructionSyntaxError(suggest(f"unexpected key '{key}' in '{field}'", key, _ALL_KEYS, True))


def parse_mount(spec: str, expander: Callable[[str], str] | None) -> RunMount:
    """Read one `--mount` value; `expander` expands each value (None: parse time)."""
    fields = split_csv_record(spec)
    m = _Mount()
    for field in fields:
        key, has_value, value = field.partition("=")
        key = key.lower()
        if not has_value:
            if key in ("readonly", "ro"):
                m.readonly = True
                m.ro_auto = False
            elif key in ("readwrite", "rw"):
                m.readonly = False
                m.ro_auto = False
            elif key == "required":
                if m.type not in ("secret", "ssh"):
                    raise InstructionSyntaxError(f"unexpected key '{key}' for mount type '{m.type}'")
                m.required = True
            else:
                raise InstructionSyntaxError(f"invalid field '{field}' must be a key=value pair")
            continue
        if expander is not None:
            value = expander(value)
        elif key == "from" and _FROM_VARIABLE.search(value):
            raise InstructionSyntaxError(f"'{key}' doesn't support variable expansion, define alias stage instead")
        elif "$" in value:
            # Needs the stage's variables: keep the text, check it at dispatch time.
            m.unexpanded = True
            if key in ("source", "src"):
                m.source = value
            elif key in ("target", "dst", "destination"):
                m.target = value
            elif key == "id":
                m.id = value
            elif key == "env":
                m.env = value
            continue
        _apply(m, key, value, field)
    if not m.unexpanded:
        _check(m)
    if m.ro_auto:
        m.readonly = m.type not in ("cache", "tmpfs")
    sharing = m.sharing or ("shared" if m.type == "cache" else "")
    return RunMount(
        type=m.type,
        target=m.target,
        source=m.source,
        from_=m.from_,
        readonly=m.readonly,
        id=m.id,
        sharing=sharing,
        required=m.required,
        mode=m.mode,
        uid=m.uid,
        gid=m.gid,
        size=m.size,
        env=m.env,
        spec=spec,
        unexpanded=m.unexpanded,
    )


def _check(m: _Mount) -> None:
    if m.type not in ("secret", "ssh", "cache"):
        for key in ("mode", "uid", "gid"):
            if getattr(m, key) is not None:
                raise InstructionSyntaxError(f'{key} not allowed for "{m.type}" type mounts')
    if m.sharing and m.type != "cache":
        raise InstructionSyntaxError(f"invalid cache sharing set for {m.type} mount")
    if m.type == "secret":
        if m.from_:
            raise InstructionSyntaxError("secret mount should not have a from")
        if m.sharing:
            raise InstructionSyntaxError("secret mount should not define sharing")
        if not m.source and not m.target and not m.id:
            raise InstructionSyntaxError("invalid secret mount. one of source, target required")
        if m.source and m.id:
            raise InstructionSyntaxError("both source and id can't be set")
