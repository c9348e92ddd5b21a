"""One resolved bake target → build graph, through the Dockerfile frontend.

All three ways to write a target — `dockerfile:`, `dockerfile_inline:` and inline
`steps:` — go through the same parser and lowering, so they produce the same ops and
the same cache keys as the equivalent Dockerfile (a step and the instruction it
stands for share the cache). Inline steps are rendered to Dockerfile text with every
value quoted so that it means exactly what the YAML said: no `$VAR` expansion, no
word splitting, no continuation lines. Each rendered line remembers the step it came
from, so errors and step locations name `build.yaml:LINE:COL`, never the rendering.

A `target:NAME` context resolves to the other target's lowered vertex and image config
(for a `result:` target, the tree under its result path), handed in by the planner, which
lowers targets in dependency order into one graph.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import DockerfileError, ShipyardError
from engine.graph.ops import SCRATCH, CopyAction, FileOp, VertexMeta
from engine.graph.vertex import Vertex
from engine.oci.image import Image
from frontends.base import ImageResolver, StepInfo
from frontends.yaml.model import MountSpec, StepSpec, TargetSpec

STEP_KINDS = (
    "from", "run", "copy", "add", "env", "arg", "workdir", "user", "label", "expose", "entrypoint", "cmd", "healthcheck",
)  # fmt: skip
NETWORK_MODES = ("default", "none", "host")
_KEY = re.compile(r"^[^\s='\"$\\]+$")
_PORT = re.compile(r"^[0-9]+(-[0-9]+)?(/(tcp|udp|sctp))?$", re.IGNORECASE)
_SIMPLE = re.compile(r"^[^\s'\"\\]+$")
_DURATION_KEYS = ("interval", "timeout", "start_period", "start_interval")


class TargetError(ShipyardError):
    """A target that cannot be lowered; the message names its file:line:col."""

    exit_code = 1


@dataclass(frozen=True)
class LoweredTarget:
    """One target in the shared graph."""

    name: str
    vertex: Vertex
    """What the target produces: the image's root filesystem, or (`result:`) the result tree."""
    image: Image
    """The image config and history (an empty image for a `result:` target)."""
    meta: dict[str, list[VertexMeta]]
    steps: tuple[StepInfo, ...]
    source: str
    """The Dockerfile text lowered (rendered, for inline steps)."""
    exclude_patterns: tuple[str, ...]
    no_cache_vertices: frozenset[str] = frozenset()
    """Vertices of the stages named in `no_cache_filter`."""
    is_result: bool = False
    """A `result:` target: a filesystem tree, not an image."""


# --------------------------------------------------------------------------- rendering steps


@dataclass(frozen=True)
class RenderedSteps:
    text: str
    lines: tuple[int, ...]
    """For each rendered line (1-based index - 1), the index of the step it came from."""


def _fail(step: StepSpec, message: str) -> TargetError:
    where = f"{step.location}: " if step.location else ""
    return TargetError(f"{where}{step.kind}: {message}")


def _text(step: StepSpec, value: Any, what: str) -> str:
    """A scalar as text (YAML numbers and booleans spelled as YAML would)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise _fail(step, f"{what} must be a string, not {type(value).__name__}")
    return value


def _one_line(step: StepSpec, value: str, what: str) -> str:
    if "\n" in value or "\r" in value:
        raise _fail(step, f"{what} cannot contain a newline")
    return value


def lex_quote(value: str) -> str:
    """Quote for the Dockerfile word lexer: single quotes keep `$`, `\\` and spaces literal."""
    return "'" + value.replace("'", "'\\''") + "'"


def flag_quote(value: str) -> str:
    """Quote a `--flag=value` word: inside double quotes the parser takes `\\` as an escape."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _csv_field(field: str) -> str:
    if any(c in field for c in ',"\n\r') or field != field.strip():
        return '"' + field.replace('"', '""') + '"'
    return field


def _pairs(step: StepSpec, value: Any, what: str) -> list[tuple[str, str]]:
    """A mapping (or a list of `K=V` strings) as ordered pairs."""
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = []
        for item in value:
            key, sep, rest = _text(step, item, what).partition("=")
            items.append((key, rest if sep else None))
    elif isinstance(value, str):
        key, sep, rest = value.partition("=")
        items = [(key, rest if sep else None)]
    else:
        raise _fail(step, f"want a mapping of {what}s")
    out = []
    for key, raw in items:
        if not _KEY.match(key):
            raise _fail(step, f"invalid {what} name {key!r}")
        out.append((key, None if raw is None else _one_line(step, _text(step, raw, what), f"{what} {key}")))
    if not out:
        raise _fail(step, f"at least one {what} is required")
    return out


def _list(step: StepSpec, value: Any, what: str) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [_text(step, v, what) for v in value]
    return [_text(step, value, what)]


def _heredoc(body: str) -> tuple[str, list[str]]:
    """(delimiter, body lines) for a quoted heredoc that passes `body` through untouched."""
    lines = body.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    delimiter = "SHIPYARD_EOF"
    n = 0
    while delimiter in lines or any(line.strip() == delimiter for line in lines):
        n += 1
        delimiter = f"SHIPYARD_EOF_{n}"
    return delimiter, lines


def _plain_shell_ok(command: str) -> bool:
    """Whether `command` reads back unchanged as a shell-form instruction on one line."""
    stripped = command.strip()
    return bool(
        stripped
        and stripped == command
        and "\n" not in command
        and "\r" not in command
        and not command.startswith(("[", "-"))
        and "<<" not in command
        and not command.endswith("\\")
    )


def _mount_flag(step: StepSpec, mount: MountSpec) -> str:
    fields = [("type", mount.type), ("target", mount.target), *mount.options]
    parts = []
    for key, value in fields:
        if not _KEY.match(key):
            raise _fail(step, f"invalid mount option {key!r}")
        text = _one_line(step, _text(step, value, f"mount {key}"), f"mount {key}")
        # Values are read raw when the RUN is parsed and through the word lexer when it is
        # lowered: quote only what the lexer would change (plain values read the same both ways).
        quoted = lex_quote(text) if any(c in text for c in "$\\'\"") else text
        parts.append(_csv_field(f"{key}={quoted}"))
    return "--mount=" + flag_quote(",".join(parts))


def _render_from(step: StepSpec) -> str:
    value = step.value
    platform = alias = ""
    if isinstance(value, Mapping):
        ref = value.get("image", value.get("from", value.get("ref", "")))
        platform = _text(step, value.get("platform", ""), "platform")
        alias = _text(step, value.get("as", value.get("name", "")), "stage name")
    else:
        ref = value
    ref = _text(step, ref, "image")
    if not ref or not _SIMPLE.match(ref):
        raise _fail(step, f"invalid image reference {ref!r}")
    words = ["FROM"]
    if platform:
        if not _SIMPLE.match(platform):
            raise _fail(step, f"invalid platform {platform!r}")
        words.append(f"--platform={platform}")
    words.append(ref)
    if alias:
        if not _SIMPLE.match(alias):
            raise _fail(step, f"invalid stage name {alias!r}")
        words += ["AS", alias]
    return " ".join(words)


def _render_run(step: StepSpec) -> list[str]:
    flags = [_mount_flag(step, m) for m in step.mounts]
    if step.network:
        if step.network not in NETWORK_MODES:
            raise _fail(step, f"network must be one of {', '.join(NETWORK_MODES)}, not {step.network!r}")
        flags.append(f"--network={step.network}")
    head = " ".join(["RUN", *flags])
    value = step.value
    if isinstance(value, (list, tuple)):
        if not value:
            raise _fail(step, "the command is empty")
        return [f"{head} {json.dumps([_text(step, v, 'argument') for v in value], ensure_ascii=False)}"]
    command = _text(step, value, "command")
    if not command.strip():
        raise _fail(step, "the command is empty")
    if _plain_shell_ok(command):
        return [f"{head} {command}"]
    delimiter, lines = _heredoc(command)
    return [f"{head} <<'{delimiter}'", *lines, delimiter]


def _render_copy(step: StepSpec) -> str:
    value = step.value
    options: Mapping[str, Any]
    if isinstance(value, Mapping):
        options = value
        sources = _list(step, value.get("src", value.get("source", [])), "source")
        dest = _text(step, value.get("dest", value.get("destination", "")), "dest")
    elif isinstance(value, (list, tuple)) and len(value) >= 2:
        options = {}
        *sources, dest = [_text(step, v, "path") for v in value]
    else:
        raise _fail(step, "want {src: [...], dest: PATH}")
    if not sources or not dest:
        raise _fail(step, "src and dest are required")
    known = {"src", "source", "dest", "destination", "from", "chown", "chmod", "link", "exclude", "parents"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise _fail(step, f"unknown option {unknown[0]!r}")
    for path in [*sources, dest]:
        _one_line(step, path, "a path")
    if step.kind == "add":
        for src in sources:
            if "://" in src or src.startswith("git@"):
                raise _fail(step, f"only local sources can be added ({src!r}); use a Dockerfile for URLs and git")
    words = [step.kind.upper()]
    if options.get("from"):
        if step.kind == "add":
            raise _fail(step, "from is only valid for copy")
        words.append("--from=" + flag_quote(_one_line(step, _text(step, options["from"], "from"), "from")))
    for key in ("chown", "chmod"):
        if options.get(key):
            words.append(f"--{key}=" + flag_quote(lex_quote(_one_line(step, _text(step, options[key], key), key))))
    if options.get("link"):
        words.append("--link")
    if options.get("parents"):
        if step.kind == "add":
            raise _fail(step, "parents is only valid for copy")
        words.append("--parents")
    for pattern in _list(step, options.get("exclude", []), "exclude") if options.get("exclude") else []:
        words.append("--exclude=" + flag_quote(_one_line(step, pattern, "exclude")))
    words.append(json.dumps([lex_quote(p) for p in [*sources, dest]], ensure_ascii=False))
    return " ".join(words)


def _render_exec_or_shell(step: StepSpec) -> str:
    """CMD / ENTRYPOINT: a list is the exec form; a one-line string the shell form."""
    keyword = step.kind.upper()
    value = step.value
    if isinstance(value, (list, tuple)):
        return f"{keyword} {json.dumps([_text(step, v, 'argument') for v in value], ensure_ascii=False)}"
    command = _text(step, value, "command")
    if _plain_shell_ok(command):
        return f"{keyword} {command}"
    return f"{keyword} {json.dumps(['/bin/sh', '-c', command], ensure_ascii=False)}"  # what the shell form makes


def _duration(step: StepSpec, value: Any, key: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value}s"
    text = _text(step, value, key)
    if not _SIMPLE.match(text):
        raise _fail(step, f"invalid {key} {text!r}")
    return text


def _render_healthcheck(step: StepSpec) -> str:
    value = step.value
    if isinstance(value, str) and value.strip().upper() == "NONE":
        return "HEALTHCHECK NONE"
    if not isinstance(value, Mapping):
        raise _fail(step, "want a mapping with test (or NONE)")
    unknown = sorted(set(value) - {"test", "retries", *_DURATION_KEYS})
    if unknown:
        raise _fail(step, f"unknown option {unknown[0]!r}")
    test = value.get("test")
    if isinstance(test, (list, tuple)) and test and str(test[0]).upper() == "NONE":
        return "HEALTHCHECK NONE"
    flags = []
    for key in _DURATION_KEYS:
        if key in value:
            flags.append(f"--{key.replace('_', '-')}={_duration(step, value[key], key)}")
    if "retries" in value:
        retries = value["retries"]
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise _fail(step, "retries must be an integer")
        flags.append(f"--retries={retries}")
    if isinstance(test, (list, tuple)) and test:
        kind = str(test[0]).upper()
        args = [_text(step, v, "test") for v in test[1:]]
        if kind == "CMD":
            command = "CMD " + json.dumps(args, ensure_ascii=False)
        elif kind == "CMD-SHELL" and len(args) == 1:
            command = "CMD " + json.dumps(["/bin/sh", "-c", args[0]], ensure_ascii=False)
        else:
            raise _fail(step, "test must be [CMD, ...], [CMD-SHELL, COMMAND] or a command string")
    elif isinstance(test, str) and test.strip():
        command = "CMD " + (test if _plain_shell_ok(test) else json.dumps(["/bin/sh", "-c", test], ensure_ascii=False))
    else:
        raise _fail(step, "test is required")
    return " ".join(["HEALTHCHECK", *flags, command])


def render_step(step: StepSpec) -> list[str]:
    """The Dockerfile line(s) for one step."""
    kind = step.kind
    if kind not in STEP_KINDS:
        raise _fail(step, f"unknown step kind (want one of {', '.join(STEP_KINDS)})")
    if (step.mounts or step.network) and kind != "run":
        raise _fail(step, "mounts and network apply to run steps only")
    if kind == "from":
        return [_render_from(step)]
    if kind == "run":
        return _render_run(step)
    if kind in ("copy", "add"):
        return [_render_copy(step)]
    if kind in ("env", "label"):
        pairs = _pairs(step, step.value, kind)
        return [kind.upper() + " " + " ".join(f"{k}={lex_quote(v or '')}" for k, v in pairs)]
    if kind == "arg":
        pairs = _pairs(step, step.value, "arg")
        return ["ARG " + " ".join(k if v is None else f"{k}={lex_quote(v)}" for k, v in pairs)]
    if kind in ("workdir", "user"):
        text = _one_line(step, _text(step, step.value, kind), kind)
        if not text:
            raise _fail(step, f"{kind} cannot be empty")
        return [f"{kind.upper()} {lex_quote(text)}"]
    if kind == "expose":
        ports = _list(step, step.value, "port")
        for port in ports:
            if not _PORT.match(port):
                raise _fail(step, f"invalid port {port!r} (want PORT[/tcp|udp|sctp])")
        return ["EXPOSE " + " ".join(ports)]
    if kind in ("cmd", "entrypoint"):
        return [_render_exec_or_shell(step)]
    return [_render_healthcheck(step)]


def render_steps(steps: tuple[StepSpec, ...]) -> RenderedSteps:
    if not steps:
        raise TargetError("steps: at least one step is required")
    if steps[0].kind != "from":
        raise _fail(steps[0], "the first step must be a from step")
    lines: list[str] = []
    owners: list[int] = []
    for index, step in enumerate(steps):
        rendered = render_step(step)
        lines.extend(rendered)
        owners.extend([index] * len(rendered))
    return RenderedSteps("\n".join(lines) + "\n", tuple(owners))


def step_display(step: StepSpec) -> str:
    """How a step shows in progress output: its instruction with plain values."""
    value = step.value
    kind = step.kind.upper()
    if step.kind == "run" and isinstance(value, str):
        lines = [line for line in value.strip().split("\n") if line.strip()]
        return f"RUN {lines[0].strip()}{' ...' if len(lines) > 1 else ''}" if lines else "RUN"
    if step.kind in ("copy", "add") and isinstance(value, Mapping):
        src = value.get("src", value.get("source", []))
        srcs = src if isinstance(src, (list, tuple)) else [src]
        prefix = f"--from={value['from']} " if value.get("from") else ""
        return f"{kind} {prefix}{' '.join(map(str, srcs))} {value.get('dest', value.get('destination', ''))}"
    if isinstance(value, Mapping):
        return f"{kind} " + " ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return f"{kind} " + json.dumps(list(value), ensure_ascii=False)
    return f"{kind} {value}"


# --------------------------------------------------------------------------- lowering a target


def _shown_path(path: str, cwd: str) -> str:
    rel = os.path.relpath(path, cwd)
    return path if rel.startswith("..") else rel


@dataclass(frozen=True)
class _Source:
    text: str
    filename: str
    dockerfile_path: str | None
    steps: RenderedSteps | None = None


def target_steps(spec: TargetSpec) -> tuple[StepSpec, ...]:
    """The target's steps, its `network:` applied to the run steps that set none."""
    if not spec.network or spec.network == "default":
        return spec.steps
    return tuple(dataclasses.replace(s, network=spec.network) if s.kind == "run" and not s.network else s for s in spec.steps)


def _source(spec: TargetSpec, cwd: str) -> _Source:
    if spec.steps:
        return _Source("", spec.location or spec.name, None, render_steps(target_steps(spec)))
    if spec.dockerfile_inline:
        return _Source(spec.dockerfile_inline, "dockerfile_inline", None)
    path = spec.dockerfile or os.path.join(spec.context, "Dockerfile")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        where = f"{spec.location}: " if spec.location else ""
        raise TargetError(f"{where}target {spec.name}: Dockerfile not found: {_shown_path(path, cwd)}") from None
    except UnicodeDecodeError:
        raise TargetError(f"target {spec.name}: {_shown_path(path, cwd)} is not UTF-8 text") from None
    return _Source(text, _shown_path(path, cwd), path)


def dockerfile_text(spec: TargetSpec, cwd: str | None = None) -> str:
    """The Dockerfile text a target lowers (rendered for steps): part of its key."""
    source = _source(spec, cwd or os.getcwd())
    return source.steps.text if source.steps is not None else source.text


def ignore_file_of(spec: TargetSpec, cwd: str | None = None):  # type: ignore[no-untyped-def]
    """The target's `.dockerignore` (beside its Dockerfile, else at the context root)."""
    from frontends.dockerfile.dockerignore import load_ignore

    dockerfile = spec.dockerfile or (os.path.join(spec.context, "Dockerfile") if not (spec.steps or spec.dockerfile_inline) else None)
    return load_ignore(spec.context, dockerfile)


class _Relocator:
    """Maps rendered/inline Dockerfile locations back to where the user wrote them."""

    def __init__(self, spec: TargetSpec, source: _Source) -> None:
        self.spec = spec
        self.source = source

    def step_of(self, line: int) -> StepSpec | None:
        rendered = self.source.steps
        if rendered is None or not 1 <= line <= len(rendered.lines):
            return None
        return target_steps(self.spec)[rendered.lines[line - 1]]

    def location(self, location: str) -> str:
        """`file:line` of the lowered text → the user's location."""
        filename, _, line = location.rpartition(":")
        if not line.isdigit() or filename != self.source.filename:
            return location
        if self.source.steps is not None:
            step = self.step_of(int(line))
            return step.location if step is not None and step.location else location
        if self.source.dockerfile_path is None:  # dockerfile_inline
            return f"{self.spec.location or self.spec.name} dockerfile_inline:{line}"
        return location

    def error(self, exc: ShipyardError) -> TargetError:
        if isinstance(exc, DockerfileError) and exc.filename == self.source.filename:
            if self.source.steps is not None:
                step = self.step_of(exc.line)
                if step is not None:
                    where = f"{step.location}: " if step.location else ""
                    return TargetError(f"{where}target {self.spec.name}: {step.kind}: {exc.message}")
            elif self.source.dockerfile_path is None:
                return TargetError(f"{self.location(f'{exc.filename}:{exc.line}')}: target {self.spec.name}: {exc.message}")
        return TargetError(f"target {self.spec.name}: {exc.user_message()}")

    def name(self, meta_name: str, location: str) -> str:
        """`[2/5] RUN …` → `[NAME 2/5] RUN …`, with an inline step shown as the user wrote it."""
        text = meta_name
        if self.source.steps is not None and meta_name.startswith("["):
            _, _, line = location.rpartition(":")
            step = self.step_of(int(line)) if line.isdigit() else None
            if step is not None:
                prefix, sep, _ = meta_name.partition("] ")
                if sep:
                    text = prefix + sep + step_display(step)
        if text.startswith("["):
            return f"[{self.spec.name} {text[1:]}" if not text.startswith("[internal]") else text
        return text


def lower_target(
    spec: TargetSpec,
    resolver: ImageResolver,
    upstream: Mapping[str, LoweredTarget],
    *,
    cwd: str | None = None,
    os_name: str = "linux",
    arch: str = "amd64",
) -> LoweredTarget:
    """Lower one target; `upstream` holds every target its `target:` contexts name."""
    from frontends.dockerfile.lowering import BuildParams, lower_dockerfile
    from frontends.dockerfile.parser import parse_dockerfile

    cwd = cwd or os.getcwd()
    source = _source(spec, cwd)
    text = source.steps.text if source.steps is not None else source.text
    relocate = _Relocator(spec, source)
    named: dict[str, str] = {}
    targets: dict[str, tuple[Vertex, Image]] = {}
    for name, value in spec.contexts:
        named[name] = value
        if value.startswith("target:"):
            ref = value[len("target:") :]
            other = upstream.get(ref)
            if other is None:
                raise TargetError(f"{spec.location + ': ' if spec.location else ''}target {spec.name}: contexts.{name}: unknown target {ref!r}")
            targets[ref] = (other.vertex, other.image)
    ignore = ignore_file_of(spec, cwd)
    params = BuildParams(
        context_path=spec.context,
        target=spec.target,
        build_args=dict(spec.args),
        exclude_patterns=ignore.patterns,
        os=os_name,
        arch=arch,
        named_contexts=named,
        target_contexts=targets,
    )
    try:
        dockerfile = parse_dockerfile(text, source.filename)
        lowered = lower_dockerfile(dockerfile, params, resolver)
    except ShipyardError as exc:
        raise relocate.error(exc) from None
    meta = {
        digest: [dataclasses.replace(m, name=relocate.name(m.name, m.location), location=relocate.location(m.location)) for m in metas]
        for digest, metas in lowered.meta.items()
    }
    steps = tuple(
        dataclasses.replace(s, name=relocate.name(s.name, s.location), location=relocate.location(s.location)) for s in lowered.steps
    )
    image = lowered.image
    vertex = lowered.target
    is_result = bool(spec.result)
    if spec.labels:
        labels = dict(image.config.labels)
        labels.update(spec.labels)
        image = dataclasses.replace(image, config=dataclasses.replace(image.config, labels=tuple(labels.items())))
    if is_result:
        path = "/" + spec.result.strip("/")
        vertex = Vertex(FileOp((CopyAction(0, (path,), "/", allow_wildcard=False),), base=SCRATCH), (lowered.target,))
        meta.setdefault(vertex.digest, []).append(VertexMeta(f"[{spec.name} result] {path}", spec.location, spec.name))
        image = Image(architecture=arch, os=os_name)
    filtered = {s.lower() for s in spec.no_cache_filter}
    uncached = frozenset(s.vertex for s in steps if s.stage.lower() in filtered and s.keyword != "FROM")
    return LoweredTarget(spec.name, vertex, image, meta, steps, text, tuple(ignore.patterns), uncached, is_result)
