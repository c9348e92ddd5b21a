"""YAML text to plain values that remember where they came from, with hard limits.

PyYAML's loaders are convenient and unsafe for build files in three ways: a duplicate
key silently keeps the last value (a classic config bug), anchors and aliases can
describe an exponentially large document in a few hundred bytes ("billion laughs"),
and the constructed values forget their line numbers. So this module drives libyaml's
parser (`yaml.CSafeLoader`, C speed, no Python object construction) event by event and
builds the document itself:

- mappings become `YMap` (a dict) and sequences `YList` (a list) that keep the
  `file:line:col` of each key and value, and the text a non-string scalar was written
  as (`1.10`, `0755`, `on`), so a label or an arg keeps its spelling;
- a duplicate key is an error naming both lines; `<<` merge keys work as in YAML 1.1;
- an alias is never copied: the aliased value is shared, and its *expanded* size is
  added to a running node count that is capped (`MAX_NODES`), so a billion-laughs file
  is refused after a few hundred events, in bounded memory;
- the file size, alias count and nesting depth are capped too (the nesting cap keeps
  every later recursive walk far from Python's recursion limit);
- only the YAML core tags are accepted (never `!!python/...` or custom tags).
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

import yaml

from frontends.yaml.errors import BuildFileError

__all__ = [
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "Loc",
    "Source",
    "YList",
    "YMap",
    "fail",
    "format_path",
    "parse_yaml",
    "read_text",
    "scalar_text",
]

MAX_FILE_BYTES = 4 * 1024 * 1024
"""A build file larger than this is refused before it is read (monorepo files are KiB)."""
MAX_NODES = 200_000
"""Nodes of one document counted with every alias expanded."""
MAX_ALIASES = 10_000
MAX_DEPTH = 64

_TAG = "tag:yaml.org,2002:"
_MERGE = object()
"""Marks a pending `<<` key in a mapping frame."""


class Source:
    """One file (or command-line origin) values come from.

    `display` is the name used in messages, `base` the directory that relative paths in
    it are resolved against (a fragment's own directory; the working directory for
    `--set` values).
    """

    __slots__ = ("base", "display", "path")

    def __init__(self, path: str, display: str, base: str) -> None:
        self.path = path
        self.display = display
        self.base = base

    def __repr__(self) -> str:
        return f"Source({self.display!r})"


class Loc:
    """A position in a source; lines and columns count from 1."""

    __slots__ = ("col", "line", "source")

    def __init__(self, source: Source, line: int = 0, col: int = 0) -> None:
        self.source = source
        self.line = line
        self.col = col

    def __str__(self) -> str:
        if not self.line:
            return self.source.display
        return f"{self.source.display}:{self.line}:{self.col}"

    __repr__ = __str__


class YMap(dict):  # type: ignore[type-arg]
    """A mapping with the location of itself, of each key and of each value."""

    __slots__ = ("klocs", "loc", "raw", "vlocs")

    def __init__(self, loc: Loc) -> None:
        super().__init__()
        self.loc = loc
        self.klocs: dict[str, Loc] = {}
        self.vlocs: dict[str, Loc] = {}
        self.raw: dict[str, str] = {}

    def put(self, key: str, value: Any, kloc: Loc, vloc: Loc, raw: str | None = None) -> None:
        self[key] = value
        self.klocs[key] = kloc
        self.vlocs[key] = vloc
        if raw is None:
            self.raw.pop(key, None)
        else:
            self.raw[key] = raw

    def copy_entry(self, other: YMap, key: str, as_key: str | None = None) -> None:
        """Copy `other[key]` (value, locations, spelling) into this map as `as_key`."""
        name = key if as_key is None else as_key
        self.put(
            name,
            other[key],
            other.klocs.get(key, other.loc),
            other.vlocs.get(key, other.loc),
            other.raw.get(key),
        )

    def without(self, *keys: str) -> YMap:
        out = YMap(self.loc)
        for key in self:
            if key not in keys:
                out.copy_entry(self, key)
        return out

    def key_loc(self, key: str) -> Loc:
        return self.klocs.get(key, self.loc)

    def value_loc(self, key: str) -> Loc:
        return self.vlocs.get(key, self.loc)


class YList(list):  # type: ignore[type-arg]
    """A sequence with the location of itself and of each item."""

    __slots__ = ("ilocs", "loc", "raw")

    def __init__(self, loc: Loc) -> None:
        super().__init__()
        self.loc = loc
        self.ilocs: list[Loc] = []
        self.raw: dict[int, str] = {}

    def add(self, value: Any, loc: Loc, raw: str | None = None) -> None:
        if raw is not None:
            self.raw[len(self)] = raw
        self.append(value)
        self.ilocs.append(loc)

    def item_loc(self, index: int) -> Loc:
        return self.ilocs[index] if 0 <= index < len(self.ilocs) else self.loc


def scalar_text(container: YMap | YList, key: Any) -> str:
    """A scalar child as the user wrote it (`1.10` stays `1.10`, `on` stays `on`)."""
    value = container[key]
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    raw = container.raw.get(key)
    if raw is not None:
        return raw
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def format_path(path: tuple[Any, ...] | list[Any]) -> str:
    """`("targets", "api", "steps", 2)` → `targets.api.steps[2]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out and ("." in part or not part or " " in part):
            out += f"[{part!r}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def fail(reason: str, loc: Loc | None = None, path: tuple[Any, ...] | list[Any] = ()) -> NoReturn:
    if loc is None:
        raise BuildFileError(reason, key_path=format_path(path))
    raise BuildFileError(reason, loc.source.display, loc.line, loc.col, format_path(path))


def read_text(source: Source, limit: int = MAX_FILE_BYTES) -> str:
    """The file's text; an oversized or non-regular file is refused before reading it."""
    try:
        fd = os.open(source.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        fail("file not found", Loc(source))
    except OSError as exc:
        fail(f"cannot open: {exc.strerror}", Loc(source))
    try:
        import stat

        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            fail("not a regular file", Loc(source))
        if st.st_size > limit:
            fail(
                f"file is {st.st_size} bytes, over the {limit} byte limit for build files",
                Loc(source),
            )
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                fail(f"file is over the {limit} byte limit for build files", Loc(source))
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        fail(
            f"not UTF-8 text (byte {exc.start})",
            Loc(source, line, exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1),
        )


def _loc(source: Source, mark: Any) -> Loc:
    if mark is None:
        return Loc(source)
    return Loc(source, mark.line + 1, mark.column + 1)


class _Frame:
    __slots__ = (
        "anchor",
        "container",
        "key",
        "kloc",
        "kraw",
        "loc",
        "merges",
        "weight",
    )

    def __init__(self, container: YMap | YList, anchor: str | None, loc: Loc) -> None:
        self.container = container
        self.anchor = anchor
        self.weight = 1
        self.key: Any = None
        self.kloc: Loc | None = None
        self.kraw: str | None = None
        self.merges: list[tuple[YMap, Loc]] = []
        self.loc = loc


class _Builder:
    def __init__(self, loader: Any, source: Source) -> None:
        self.loader = loader
        self.source = source
        self.anchors: dict[str, tuple[Any, int, str | None]] = {}
        self.count = 0
        self.aliases = 0
        self.stack: list[_Frame] = []
        self.root: Any = None
        self.done = False

    def path(self) -> tuple[Any, ...]:
        """The key path of the value being built (for errors)."""
        out: list[Any] = []
        for frame in self.stack:
            if isinstance(frame.container, YList):
                out.append(len(frame.container))
            elif frame.key is _MERGE:
                out.append("<<")
            elif frame.key is not None:
                out.append(frame.key)
        return tuple(out)

    def fail(self, reason: str, loc: Loc, extra: tuple[Any, ...] = ()) -> NoReturn:
        fail(reason, loc, self.path() + extra)

    def _grow(self, n: int, loc: Loc) -> None:
        self.count += n
        if self.count > MAX_NODES:
            self.fail(
                f"YAML document too large: more than {MAX_NODES} nodes once aliases are expanded (alias bomb?)",
                loc,
            )

    def scalar(self, event: Any) -> tuple[Any, str | None, bool]:
        """(value, raw text for non-strings, is-merge-key)."""
        loc = _loc(self.source, event.start_mark)
        tag = event.tag
        value = event.value
        if tag is None or tag == "!":
            tag = self.loader.resolve(yaml.ScalarNode, value, event.implicit)
        if tag == _TAG + "str" or tag == _TAG + "timestamp" or tag == _TAG + "value":
            return value, None, False
        if tag == _TAG + "merge":
            return value, None, True
        try:
            if tag == _TAG + "null":
                return None, value, False
            if tag == _TAG + "bool":
                return self.loader.bool_values[value.lower()], value, False
            if tag == _TAG + "int":
                return (
                    self.loader.construct_yaml_int(yaml.ScalarNode(tag, value)),
                    value,
                    False,
                )
            if tag == _TAG + "float":
                return (
                    self.loader.construct_yaml_float(yaml.ScalarNode(tag, value)),
                    value,
                    False,
                )
        except (ValueError, KeyError, TypeError, OverflowError):
            self.fail(f"invalid {tag.removeprefix(_TAG)} value {value[:40]!r}", loc)
        self.fail(f"unsupported YAML tag {tag!r}", loc)

    def add(
        self,
        value: Any,
        weight: int,
        loc: Loc,
        raw: str | None,
        is_merge: bool = False,
        scalar_key: bool = False,
    ) -> None:
        if not self.stack:
            self.root = value
            self.done = True
            return
        frame = self.stack[-1]
        frame.weight += weight
        container = frame.container
        if isinstance(container, YList):
            container.add(value, loc, raw)
            return
        assert isinstance(container, YMap)
        if frame.key is None:
            if not scalar_key:
                self.fail("mapping keys must be plain scalars", loc)
            frame.key = _MERGE if is_merge else (value if raw is None else raw)
            if frame.key is None:
                frame.key = ""
            frame.kloc = loc
            return
        key = frame.key
        frame.key = None
        if key is _MERGE:
            sources = value if isinstance(value, YList) else [value]
            for item in sources:
                if not isinstance(item, YMap):
                    self.fail("a `<<` merge key takes a mapping or a list of mappings", loc, ("<<",))
                frame.merges.append((item, loc))
            return
        if not isinstance(key, str):
            key = str(key)
        if key in container:
            first = container.klocs[key]
            assert frame.kloc is not None
            self.fail(f"duplicate key {key!r} (first defined at line {first.line})", frame.kloc, (key,))
        assert frame.kloc is not None
        container.put(key, value, frame.kloc, loc, raw)

    def close(self, end_loc: Loc) -> None:
        frame = self.stack.pop()
        container = frame.container
        if isinstance(container, YMap) and frame.merges:
            for source, _ in frame.merges:
                for key in source:
                    if key not in container:
                        container.copy_entry(source, key)
        if frame.anchor is not None:
            self.anchors[frame.anchor] = (container, frame.weight, None)
        self.add(container, frame.weight, frame.loc, None)

    def build(self) -> Any:
        loader = self.loader
        while not self.done:
            event = loader.get_event()
            loc = _loc(self.source, event.start_mark)
            if isinstance(event, yaml.ScalarEvent):
                self._grow(1, loc)
                value, raw, is_merge = self.scalar(event)
                if event.anchor is not None:
                    self.anchors[event.anchor] = (value, 1, raw)
                self.add(
                    value,
                    1,
                    loc,
                    raw,
                    is_merge=is_merge and event.anchor is None,
                    scalar_key=True,
                )
            elif isinstance(event, yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    self.fail(f"too many YAML aliases (limit {MAX_ALIASES})", loc)
                found = self.anchors.get(event.anchor)
                if found is None:
                    self.fail(f"unknown YAML alias *{event.anchor}", loc)
                value, weight, raw = found
                self._grow(weight, loc)
                self.add(
                    value,
                    weight,
                    loc,
                    raw,
                    scalar_key=not isinstance(value, (YMap, YList)),
                )
            elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                self._grow(1, loc)
                if len(self.stack) >= MAX_DEPTH:
                    self.fail(f"nested deeper than {MAX_DEPTH} levels", loc)
                is_map = isinstance(event, yaml.MappingStartEvent)
                tag = event.tag
                if tag not in (None, "!", _TAG + ("map" if is_map else "seq")):
                    self.fail(f"unsupported YAML tag {tag!r}", loc)
                if self.stack and isinstance(self.stack[-1].container, YMap) and self.stack[-1].key is None:
                    self.fail("mapping keys must be plain scalars", loc)
                container: YMap | YList = YMap(loc) if is_map else YList(loc)
                self.stack.append(_Frame(container, event.anchor, loc))
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                self.close(loc)
            else:
                self.fail(f"unexpected YAML event {type(event).__name__}", loc)
        return self.root


def parse_yaml(text: str, source: Source) -> Any:
    """Parse one YAML document (None when the text holds none)."""
    loader = yaml.CSafeLoader(text)
    builder = _Builder(loader, source)
    try:
        loader.get_event()  # StreamStart
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # DocumentStart
        root = builder.build()
        loader.get_event()  # DocumentEnd
        if not loader.check_event(yaml.StreamEndEvent):
            event = loader.peek_event()
            fail("expected one YAML document, found more", _loc(source, event.start_mark))
        return root
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = " ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        fail(f"YAML syntax error: {reason}", _loc(source, mark), builder.path())
    except yaml.YAMLError as exc:
        position = getattr(exc, "position", None)
        loc = Loc(source)
        if isinstance(position, int) and 0 <= position <= len(text):
            line_start = text.rfind("\n", 0, position) + 1
            loc = Loc(source, text.count("\n", 0, position) + 1, position - line_start + 1)
        reason = getattr(exc, "reason", "") or "invalid YAML"
        fail(f"YAML error: {reason}", loc, builder.path())
    finally:
        loader.dispose()
