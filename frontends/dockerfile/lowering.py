"""Dockerfile → build graph: stages become chains of vertices, configs travel beside them.

Only the stages reachable from the target are dispatched (and only their base images
resolved), in dependency order; a stage that nothing needs is never lowered, so its
RUNs never run. Each instruction that changes the filesystem (RUN, COPY, ADD,
WORKDIR) adds a vertex on top of the stage's current one; the others change the
image config and history only.
"""

from __future__ import annotations

import dataclasses
import graphlib
import os
import posixpath
from dataclasses import dataclass, field
from typing import Mapping

from engine.errors import DockerfileError, ShipyardError
from engine.graph.ops import (
    CopyAction,
    ExecOp,
    FileOp,
    ImageSource,
    LocalSource,
    MkdirAction,
    Mount,
    Owner,
    ScratchSource,
    VertexMeta,
)
from engine.graph.vertex import GraphBuilder, Vertex
from engine.oci.image import HistoryEntry, Image, ImageConfig
from frontends.base import ImageResolver, LoweredBuild, StepInfo
from frontends.dockerfile.imageconfig import (
    CONFIG_COMMANDS,
    apply_config_command,
    command_line,
    with_default_path,
)
from frontends.dockerfile.instructions import (
    AddCommand,
    ArgCommand,
    CmdCommand,
    Command,
    CopyCommand,
    RunCommand,
    Stage,
    WorkdirCommand,
)
from frontends.dockerfile.limits import BudgetedLex, check_keys
from frontends.dockerfile.parser import Dockerfile
from frontends.dockerfile.shell_lexer import ShellLex

HISTORY_COMMENT = "buildkit.dockerfile.v0"
PROXY_ARGS = ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
LAYER_COMMANDS = (RunCommand, CopyCommand, AddCommand, WorkdirCommand)


@dataclass(frozen=True)
class BuildParams:
    context_path: str
    target: str = ""
    build_args: Mapping[str, str] = field(default_factory=dict)
    exclude_patterns: tuple[str, ...] = ()
    os: str = "linux"
    arch: str = "amd64"
    named_contexts: Mapping[str, str] = field(default_factory=dict)
    """`--build-context name=DIR|docker-image://REF|oci-layout://PATH`, as given."""
    target_contexts: Mapping[str, tuple[Vertex, Image]] = field(default_factory=dict)
    """For `target:NAME` named contexts (bake files): NAME's lowered vertex and image config."""


@dataclass
class _StageState:
    stage: Stage
    vertex: Vertex
    config: ImageConfig
    history: list[HistoryEntry]
    base_image: Image
    args: dict[str, str | None] = field(default_factory=dict)
    cmd_set: bool = False
    display: str = ""
    total: int = 0
    position: int = 1
    author: str = ""


def predefined_args(params: BuildParams) -> dict[str, str]:
    """BuildKit's automatic platform ARGs (this engine builds for the host platform)."""
    platform = f"{params.os}/{params.arch}"
    return {
        "BUILDPLATFORM": platform,
        "BUILDOS": params.os,
        "BUILDARCH": params.arch,
        "BUILDVARIANT": "",
        "TARGETPLATFORM": platform,
        "TARGETOS": params.os,
        "TARGETARCH": params.arch,
        "TARGETVARIANT": "",
        "TARGETSTAGE": params.target,
    }


class Lowering:
    def __init__(self, dockerfile: Dockerfile, params: BuildParams, resolver: ImageResolver) -> None:
        self.df = dockerfile
        self.params = params
        self.resolver = resolver
        self.lex = BudgetedLex(dockerfile.escape)  # total expansion is capped (frontends.dockerfile.limits)
        self.graph = GraphBuilder()
        self.filename = dockerfile.filename
        self._states: dict[int, _StageState] = {}
        self._context: Vertex | None = None
        self._images: dict[str, tuple[Vertex, Image, str]] = {}
        self.steps: list[tuple[int, int, StepInfo]] = []
        self.global_args = self._global_args()

    # ------------------------------------------------------------------ helpers

    def error(self, message: str, line: int) -> DockerfileError:
        return DockerfileError(message, self.filename, line)

    def _global_args(self) -> dict[str, str | None]:
        values: dict[str, str | None] = dict(predefined_args(self.params))
        for cmd in self.df.meta_args:
            for pair in cmd.args:
                env = {k: v for k, v in values.items() if v is not None}
                if pair.key in self.params.build_args:
                    values[pair.key] = self.params.build_args[pair.key]
                elif pair.value is not None:
                    values[pair.key] = self._expand(pair.value, env, cmd.line)
                else:
                    values.setdefault(pair.key, None)
        return values

    def _expand(self, word: str, env: Mapping[str, str], line: int) -> str:
        try:
            return self.lex.process_word(word, env)
        except DockerfileError as exc:
            raise self.error(exc.message, line) from None

    def _context_vertex(self) -> Vertex:
        if self._context is None:
            path = os.path.abspath(self.params.context_path)
            self._context = self.graph.add(
                LocalSource("context", path, self.params.exclude_patterns),
                meta=VertexMeta("[internal] load build context"),
            )
        return self._context

    def _image(self, ref: str, line: int) -> tuple[Vertex, Image, str]:
        if ref not in self._images:
            try:
                resolved = self.resolver.resolve(ref)
            except ShipyardError as exc:
                raise self.error(exc.user_message(), line) from None
            vertex = self.graph.add(
                ImageSource(resolved.ref, resolved.manifest_digest, f"{self.params.os}/{self.params.arch}")
            )
            self._images[ref] = (vertex, resolved.image, resolved.ref)
        return self._images[ref]

    # ------------------------------------------------------------------ stages

    def _stage_index(self, name: str, before: int | None = None) -> int | None:
        wanted = name.lower()
        for stage in self.df.stages:
            if before is not None and stage.index >= before:
                break
            if stage.name and stage.name == wanted:
                return stage.index
        return None

    def _expanded_stage(self, stage: Stage) -> Stage:
        env = {k: v for k, v in self.global_args.items() if v is not None}
        try:
            return stage.expand(self.lex, env, self.filename)
        except DockerfileError as exc:
            raise self.error(exc.message, stage.line) from None

    def _dependencies(self, stage: Stage) -> list[int]:
        deps: list[int] = []
        base = None if self._named_value(stage.base) else self._stage_index(stage.base, before=stage.index)
        if base is not None:
            deps.append(base)
        for cmd in stage.commands:
            if isinstance(cmd, CopyCommand) and cmd.from_:
                index = self._from_index(cmd.from_, stage.index, cmd.line)
                if index is not None:
                    deps.append(index)
            elif isinstance(cmd, RunCommand):  # RUN --mount=from=<stage>
                for mount in cmd.mounts:
                    index = self._from_index(mount.from_, stage.index, cmd.line) if mount.from_ else None
                    if index is not None:
                        deps.append(index)
        return deps

    def _from_index(self, ref: str, current: int, line: int) -> int | None:
        if self._named_value(ref):
            return None  # a named context of that name replaces the stage, as in BuildKit
        if ref.isdigit():
            index = int(ref)
            if index >= current:
                raise self.error(f"invalid from flag value {ref}: refers to current or future build stage", line)
            return index
        return self._stage_index(ref)

    def _target(self) -> int:
        if not self.df.stages:
            raise self.error("the Dockerfile has no FROM instruction", 1)
        if not self.params.target:
            return len(self.df.stages) - 1
        index = self._stage_index(self.params.target)
        if index is None:
            raise ShipyardError(f'target stage "{self.params.target}" could not be found')
        return index

    def _order(self, target: int, stages: list[Stage]) -> list[int]:
        """Reachable stages, dependencies first; a cycle is an error naming it."""
        graph: dict[int, set[int]] = {}
        pending = [target]
        while pending:
            index = pending.pop()
            if index in graph:
                continue
            deps = set(self._dependencies(stages[index]))
            graph[index] = deps
            pending.extend(deps)
        try:
            return list(graphlib.TopologicalSorter(graph).static_order())
        except graphlib.CycleError as exc:
            cycle = exc.args[1]
            names = [stages[i].name or f"stage-{i}" for i in cycle]
            raise self.error(
                f"circular dependency detected on stage: {' -> '.join(names)}", stages[cycle[0]].line
            ) from None

    # ------------------------------------------------------------------ lowering

    def lower(self) -> LoweredBuild:
        target = self._target()
        stages = [self._expanded_stage(s) for s in self.df.stages]
        for index in self._order(target, stages):
            self._dispatch_stage(stages[index], len(stages) > 1)
        state = self._states[target]
        image = dataclasses.replace(
            state.base_image,
            architecture=self.params.arch,
            os=self.params.os,
            config=state.config,
            history=tuple(state.history),
            author=state.author or state.base_image.author,
        )
        steps = tuple(info for _, _, info in sorted(self.steps, key=lambda s: (s[0], s[1])))
        return LoweredBuild(
            target=state.vertex,
            image=image,
            meta=self.graph.meta,
            steps=steps,
            stage=state.stage.name or f"stage-{target}",
        )

    def _step(self, state: _StageState, cmd_text: str, line: int) -> VertexMeta:
        prefix = f"[{state.display} {state.position}/{state.total}]" if state.display else f"[{state.position}/{state.total}]"
        return VertexMeta(f"{prefix} {cmd_text}", f"{self.filename}:{line}", state.display)

    def _record_step(self, state: _StageState, meta: VertexMeta, vertex: Vertex, order: int, keyword: str) -> None:
        self.steps.append(
            (state.stage.index, order, StepInfo(vertex.digest, meta.name, meta.location, state.display, keyword))
        )

    def _dispatch_stage(self, stage: Stage, multi: bool) -> None:
        display = stage.name or (f"stage-{stage.index}" if multi else "")
        total = 1 + sum(1 for c in stage.commands if isinstance(c, LAYER_COMMANDS))
        named = self._named_context(stage.base, stage.line, as_stage=True)
        base_index = None if named else self._stage_index(stage.base, before=stage.index)
        if named is not None:
            vertex, base_image, shown = named
        elif base_index is not None:
            parent = self._states[base_index]
            vertex, base_image = parent.vertex, dataclasses.replace(
                parent.base_image, config=parent.config, history=tuple(parent.history)
            )
            shown = stage.base
        elif stage.base.lower() == "scratch":
            vertex = self.graph.add(ScratchSource())
            base_image = Image(architecture=self.params.arch, os=self.params.os)
            shown = "scratch"
        else:
            if not stage.base:
                raise self.error("base name (FROM) should not be blank", stage.line)
            vertex, base_image, shown = self._image(stage.base, stage.line)
        self._check_platform(stage)
        triggers = self._onbuild_triggers(stage, base_image.config.on_build)
        total += sum(1 for c in triggers if isinstance(c, LAYER_COMMANDS))
        config = with_default_path(dataclasses.replace(base_image.config, on_build=()))
        state = _StageState(stage, vertex, config, list(base_image.history), base_image, display=display, total=total)
        self._states[stage.index] = state
        from_meta = self._step(state, f"FROM {shown}", stage.line)
        self.graph.meta.setdefault(vertex.digest, []).append(from_meta)
        self._record_step(state, from_meta, vertex, 0, "FROM")
        state.position = 2
        for order, cmd in enumerate(triggers + list(stage.commands), start=1):
            self._dispatch(state, cmd, order)

    def _check_platform(self, stage: Stage) -> None:
        """Only the host platform can run here: `--platform` may name it (e.g. $BUILDPLATFORM)."""
        if not stage.platform:
            return
        wanted = stage.platform.lower()
        host = f"{self.params.os}/{self.params.arch}"
        if wanted not in (host, f"{host}/", self.params.arch) and not wanted.startswith(host + "/v"):
            raise self.error(
                f"FROM --platform={stage.platform}: cannot build for {stage.platform} here "
                f"(no emulation; the host platform is {host})",
                stage.line,
            )

    def _onbuild_triggers(self, stage: Stage, triggers: tuple[str, ...]) -> list[Command]:
        """The base's ONBUILD triggers, parsed now (as BuildKit does) and run first in this stage."""
        from frontends.dockerfile.parser import parse_instruction

        commands: list[Command] = []
        for text in triggers:
            try:
                commands.append(parse_instruction(text, self.filename, stage.line, self.df.escape))
            except DockerfileError as exc:
                raise self.error(f"ONBUILD trigger of the base image: {exc.message}", stage.line) from None
        return commands

    def _env(self, state: _StageState) -> dict[str, str]:
        """What `$VAR` sees: the stage's ARGs, overridden by ENV."""
        env = {k: v for k, v in state.args.items() if v is not None}
        for item in state.config.env:
            key, _, value = item.partition("=")
            env[key] = value
        return env

    def _history(self, state: _StageState, created_by: str, empty: bool) -> None:
        state.history.append(HistoryEntry(created_by=created_by, comment=HISTORY_COMMENT, empty_layer=empty))

    def _dispatch(self, state: _StageState, cmd: Command, order: int) -> None:
        if isinstance(cmd, ArgCommand):
            self._dispatch_arg(state, cmd)
            return
        env = self._env(state)
        if isinstance(cmd, RunCommand):
            self._dispatch_run(state, cmd, env, order)
            return
        if cmd.EXPANDS:
            cmd = cmd.expand(self.lex, env, self.filename)
        if isinstance(cmd, (CopyCommand, AddCommand)):
            self._dispatch_copy(state, cmd, order)
        elif isinstance(cmd, WorkdirCommand):
            self._dispatch_workdir(state, cmd, order)
        elif isinstance(cmd, CONFIG_COMMANDS):
            change = apply_config_command(state.config, cmd, cmd_set=state.cmd_set, filename=self.filename)
            state.config = change.config
            check_keys("ENV", len(state.config.env), self.filename, cmd.line)
            check_keys("LABEL", len(state.config.labels), self.filename, cmd.line)
            if change.author is not None:
                state.author = change.author
            if isinstance(cmd, CmdCommand):
                state.cmd_set = True
            if change.created_by:
                self._history(state, change.created_by, True)
        else:
            raise self.error(f"{cmd.NAME.upper()} is not supported yet", cmd.line)

    def _dispatch_arg(self, state: _StageState, cmd: ArgCommand) -> None:
        shown: list[str] = []
        for pair in cmd.args:
            key = pair.key
            if key in self.params.build_args:
                value: str | None = self.params.build_args[key]
            elif pair.value is not None:
                value = self._expand(pair.value, self._env(state), cmd.line)
            else:
                value = self.global_args.get(key)
            state.args[key] = value
            shown.append(key if value is None else f"{key}={value}")
        check_keys("ARG", len(state.args), self.filename, cmd.line)
        self._history(state, "ARG " + " ".join(shown), True)

    def _build_args_in_env(self, state: _StageState) -> list[tuple[str, str]]:
        """Stage ARGs with a value that no ENV overrides: they reach RUN's environment."""
        env_keys = {item.partition("=")[0] for item in state.config.env}
        return [(k, v) for k, v in state.args.items() if v is not None and k not in env_keys]

    def _proxy_env(self) -> tuple[str, ...]:
        out = []
        for key, value in self.params.build_args.items():
            if key.upper() in PROXY_ARGS:
                out.append(f"{key}={value}")
        return tuple(sorted(out))

    def _dispatch_run(self, state: _StageState, cmd: RunCommand, env: dict[str, str], order: int) -> None:
        cmd = cmd.expand(self.lex, env, self.filename)
        from frontends.dockerfile.runmounts import lower_run_mounts

        cwd = state.config.working_dir or "/"
        args = self._build_args_in_env(state)
        env_keys = {item.partition("=")[0] for item in state.config.env} | {k for k, _ in args}
        words, extra_inputs, extra_mounts, summary = self._run_heredocs(cmd)
        inputs, mounts, mount_env = lower_run_mounts(
            cmd.mounts,
            source_for=lambda from_, line: self._mount_source(state, from_, line),
            cwd=cwd,
            filename=self.filename,
            line=cmd.line,
            env_keys=env_keys,
            first_input=1 + len(extra_inputs),
        )
        argv = command_line(words, cmd.prepend_shell, state.config)
        exec_env = tuple(state.config.env) + tuple(f"{k}={v}" for k, v in args) + tuple(mount_env)
        op = ExecOp(
            args=argv,
            env=exec_env,
            cwd=cwd,
            user=state.config.user,
            mounts=(Mount(target="/", input=0),) + tuple(extra_mounts) + tuple(mounts),
            network=cmd.network,  # type: ignore[arg-type]
            security=cmd.security,  # type: ignore[arg-type]
            proxy_env=self._proxy_env(),
        )
        shown = self._run_display(cmd, summary, env)
        meta = self._step(state, shown, cmd.line)
        state.vertex = self.graph.add(op, [state.vertex, *extra_inputs, *inputs], meta)
        self._record_step(state, meta, state.vertex, order, "RUN")
        state.position += 1
        prefix = f"|{len(args)} " + " ".join(f"{k}={v}" for k, v in args) + " " if args else ""
        self._history(state, f"RUN {prefix}{' '.join(argv)} # buildkit", False)

    def _run_heredocs(self, cmd: RunCommand) -> tuple[tuple[str, ...], list[Vertex], list[Mount], str]:
        """BuildKit's RUN heredocs: (command words, extra inputs, their mounts, name summary).

        `RUN <<EOF` alone runs the body through the stage's shell (as one `-c` script);
        a body starting with `#!` is written to `/dev/pipes/<name>` (mode 0755, a
        read-only mount) and executed. Any other form (`RUN python3 <<EOF`,
        `RUN <<A cat > /x <<B`) goes to the shell whole, the bodies appended after the
        command line with their delimiters, so the shell feeds them as here-documents
        (and expands them unless the delimiter was quoted). Bodies are never expanded by
        the frontend, as in BuildKit.
        """
        if not cmd.heredocs:
            return cmd.cmd, [], [], ""
        if len(cmd.cmd) != 1 or not cmd.prepend_shell:
            raise self.error(f"parsing produced an invalid run command: {list(cmd.cmd)}", cmd.line)
        from engine.graph.ops import SCRATCH, MkfileAction
        from frontends.dockerfile.instructions import heredoc_or_none

        first = cmd.heredocs[0]
        if heredoc_or_none(cmd.cmd[0]) is None:
            full = cmd.cmd[0] + "".join("\n" + h.content + h.name for h in cmd.heredocs)
            return (full,), [], [], ""
        summary = self._summarize_heredoc(first.content)
        if not first.content.startswith("#!"):
            return (first.data,), [], [], summary
        script = self.graph.add(
            FileOp((MkfileAction("/" + first.name, first.data.encode(), 0o755),), base=SCRATCH),
            meta=VertexMeta("[internal] preparing inline document"),
        )
        pipes = Mount(target="/dev/pipes", input=1, selector="/", readonly=True, type="bind")
        return (posixpath.join("/dev/pipes/", first.name),), [script], [pipes], summary

    @staticmethod
    def _summarize_heredoc(doc: str) -> str:
        """BuildKit's summary of a heredoc in a step name: its first line, `...` if more."""
        lines = doc.strip().replace("\r\n", "\n").split("\n")
        return lines[0] + ("..." if len(lines) > 1 else "")

    def _run_display(self, cmd: RunCommand, summary: str, env: dict[str, str]) -> str:
        """The step name BuildKit gives a RUN: its text (plus a heredoc's first line),
        variables expanded with quotes kept and unknown ones left as written; a
        secret exposed with `env=` shows as `****`."""
        text = cmd.original + (f" ({summary})" if summary else "")
        if "$" not in text:
            return text
        shown_env = dict(env)
        for mount in cmd.mounts:
            if mount.type == "secret" and mount.env:
                shown_env[mount.env] = "****"
        lex = ShellLex(self.df.escape, skip_unset_env=True, raw_quotes=True)
        try:
            return lex.process_word(text, shown_env)
        except DockerfileError:
            return text

    def _named_value(self, name: str) -> str | None:
        """The `--build-context` given for `name` (exact, else case-insensitive), if any."""
        contexts = self.params.named_contexts
        if name in contexts:
            return contexts[name]
        lowered = {k.lower(): v for k, v in contexts.items()}
        return lowered.get(name.lower())

    def _named_context(self, name: str, line: int, *, as_stage: bool) -> tuple[Vertex, Image, str] | None:
        """A `--build-context`: an image (docker-image://, oci-layout://) or a local directory.

        Used as a stage (`FROM name`), a local directory becomes a filesystem (its files
        copied onto scratch, owned by root as context files are); used as a source
        (`COPY --from`, `RUN --mount from=`) it is read in place.
        """
        value = self._named_value(name)
        if value is None:
            return None
        if value.startswith(("docker-image://", "oci-layout://")):
            return self._image(value, line)
        if value.startswith("target:"):
            found = self.params.target_contexts.get(value[len("target:") :])
            if found is None:
                raise self.error(f"build context {name}={value}: target: contexts exist only in bake files", line)
            return found[0], found[1], value
        if "://" in value or value.startswith("git@"):
            raise self.error(f"build context {name}={value}: remote contexts are not supported", line)
        path = os.path.abspath(value)
        if not os.path.isdir(path):
            raise self.error(f"build context {name}={value}: {path} is not a directory", line)
        local = self.graph.add(LocalSource(f"context:{name}", path))
        if not as_stage:
            return local, Image(architecture=self.params.arch, os=self.params.os), f"context {name}"
        copy = FileOp((CopyAction(1, ("/",), "/"),))
        vertex = self.graph.add(copy, [self.graph.add(ScratchSource()), local])
        return vertex, Image(architecture=self.params.arch, os=self.params.os), f"context {name}"

    def _mount_source(self, state: _StageState, from_: str, line: int) -> Vertex:
        """What a RUN --mount (or COPY --from) reads: the context, a named context, a stage, or an image."""
        if not from_:
            return self._context_vertex()
        named = self._named_context(from_, line, as_stage=False)
        if named is not None:
            return named[0]
        index = self._from_index(from_, state.stage.index, line)
        if index is not None:
            return self._states[index].vertex
        return self._image(from_, line)[0]

    def _dest(self, state: _StageState, dest: str) -> str:
        """COPY's destination made absolute against WORKDIR; a trailing `/` (or `.`) is kept."""
        dir_intent = dest.endswith("/") or dest in (".", "") or dest.endswith("/.")
        if not dest.startswith("/"):
            dest = posixpath.join(state.config.working_dir or "/", dest)
        dest = posixpath.normpath(dest)
        if dest.startswith("//"):
            dest = "/" + dest.lstrip("/")
        if dir_intent and not dest.endswith("/"):
            dest += "/"
        return dest

    def _dispatch_copy(self, state: _StageState, cmd: CopyCommand | AddCommand, order: int) -> None:
        """COPY and ADD (BuildKit's `dispatchCopy`): one FileOp with a copy per kind of source.

        Local sources (the context, a stage, an image, a named context) share one copy
        action; each git repository, URL and heredoc gets its own input and action: a
        `GitSource` copied from `/`, an `HttpSource` copied from `/<file name>`, a file
        made on scratch by a mkfile (0644) for a heredoc. With `--link` (and no
        `--chmod`, as in BuildKit) the copy goes onto scratch and is merged onto the
        stage, so its cache key does not depend on the layers below it.
        """
        from engine.graph.ops import SCRATCH, MergeOp, MkfileAction

        is_add = isinstance(cmd, AddCommand)
        keyword = cmd.NAME.upper()
        env = self._env(state)
        if cmd.source_contents:
            heredoc_lex = ShellLex(self.df.escape, skip_process_quotes=True)
            cmd = cmd.expand_heredocs(lambda word: heredoc_lex.process_word(word, env), self.filename)
        owner = None
        if cmd.chown:
            user, _, group = cmd.chown.partition(":")
            owner = Owner(user, group)
        mode, mode_str = self._copy_chmod(cmd)
        self._check_copy_checksum(cmd)
        dest = self._dest(state, cmd.dest)
        total = len(cmd.sources) + len(cmd.source_contents)
        if total > 1 and not dest.endswith("/") and (cmd.source_contents or any(self._is_remote(s, cmd.line) for s in cmd.sources)):
            from engine.fs.copy import MULTIPLE_SOURCES_MESSAGE

            raise self.error(MULTIPLE_SOURCES_MESSAGE, cmd.line)
        link = cmd.link and not cmd.chmod
        shown = self._copy_display(cmd, env)
        meta = self._step(state, shown, cmd.line)
        inputs: list[Vertex] = []
        offset = 0 if link else 1
        actions: list[CopyAction] = []
        common = dict(dest=dest, owner=owner, mode=mode, mode_str=mode_str, exclude_patterns=cmd.exclude)

        def input_index(vertex: Vertex) -> int:
            for i, existing in enumerate(inputs):
                if existing.digest == vertex.digest:
                    return i + offset
            inputs.append(vertex)
            return len(inputs) - 1 + offset

        local: list[str] = []

        def flush_local() -> None:
            if not local:
                return
            from_ = cmd.from_ if isinstance(cmd, CopyCommand) else ""
            source = self._mount_source(state, from_, cmd.line)
            actions.append(
                CopyAction(
                    source=input_index(source),
                    src=tuple("/" + s.lstrip("/") if s not in ("", ".") else "/" for s in local),
                    attempt_unpack=is_add and cmd.unpack is not False,
                    parents=isinstance(cmd, CopyCommand) and cmd.parents,
                    **common,  # type: ignore[arg-type]
                )
            )
            local.clear()

        for src in cmd.sources:
            git = self._git_ref(src, cmd.line)
            if git is not None:
                if not is_add:
                    raise self.error("source can't be a git ref for COPY", cmd.line)
                flush_local()
                vertex = self._git_source(git, cmd, meta)  # type: ignore[arg-type]
                actions.append(
                    CopyAction(
                        source=input_index(vertex),
                        src=("/",),
                        follow_symlinks=False,
                        allow_wildcard=False,
                        allow_empty_wildcard=False,
                        **common,  # type: ignore[arg-type]
                    )
                )
            elif self._is_http(src):
                if not is_add:
                    raise self.error("source can't be a URL for COPY", cmd.line)
                flush_local()
                vertex, filename = self._http_source(src, cmd, meta)  # type: ignore[arg-type]
                actions.append(
                    CopyAction(
                        source=input_index(vertex),
                        src=("/" + filename,),
                        follow_symlinks=False,
                        dir_contents_only=False,
                        allow_wildcard=False,
                        allow_empty_wildcard=False,
                        attempt_unpack=bool(cmd.unpack),  # type: ignore[union-attr]
                        **common,  # type: ignore[arg-type]
                    )
                )
            else:
                local.append(src)
        flush_local()
        for content in cmd.source_contents:
            path = "/" + content.path.lstrip("/")
            document = self.graph.add(
                FileOp((MkfileAction(path, content.data.encode("utf-8", "surrogateescape"), 0o644),), base=SCRATCH),
                meta=VertexMeta("[internal] preparing inline document"),
            )
            actions.append(
                CopyAction(
                    source=input_index(document),
                    src=(path,),
                    follow_symlinks=False,
                    dir_contents_only=False,
                    allow_wildcard=False,
                    allow_empty_wildcard=False,
                    **common,  # type: ignore[arg-type]
                )
            )
        if link:
            copied = self.graph.add(FileOp(tuple(actions), base=SCRATCH), inputs, meta)
            self._record_step(state, meta, copied, order, keyword)
            link_meta = self._step(state, "LINK " + shown, cmd.line)
            state.vertex = self.graph.add(MergeOp(), [state.vertex, copied], link_meta)
            self._record_step(state, link_meta, state.vertex, order, keyword)
        else:
            state.vertex = self.graph.add(FileOp(tuple(actions)), [state.vertex, *inputs], meta)
            self._record_step(state, meta, state.vertex, order, keyword)
        state.position += 1
        self._history(state, self._copy_history(cmd) + " # buildkit", False)

    def _copy_chmod(self, cmd: CopyCommand | AddCommand) -> tuple[int | None, str]:
        """`--chmod` as (octal mode, symbolic text), checked now as BuildKit's frontend does."""
        if not cmd.chmod:
            return None, ""
        from engine.fs.chmod import ChmodError, parse_chmod

        try:
            parsed = parse_chmod(cmd.chmod)
        except ChmodError as exc:
            raise self.error(str(exc), cmd.line) from None
        return (parsed.mode, "") if parsed.mode is not None else (None, cmd.chmod)

    def _check_copy_checksum(self, cmd: CopyCommand | AddCommand) -> None:
        checksum = getattr(cmd, "checksum", "")
        if not checksum:
            return
        if len(cmd.sources) != 1:
            raise self.error("checksum can't be specified for multiple sources", cmd.line)
        src = cmd.sources[0]
        if self._git_ref(src, cmd.line) is None:
            if not self._is_http(src):
                raise self.error("checksum requires HTTP(S) or Git sources", cmd.line)
            from frontends.dockerfile.addsources import parse_checksum

            try:
                parse_checksum(checksum)
            except ValueError as exc:
                raise self.error(str(exc), cmd.line) from None

    def _git_ref(self, src: str, line: int):  # type: ignore[no-untyped-def]
        from frontends.dockerfile.addsources import SourceError, parse_git_ref

        try:
            return parse_git_ref(src)
        except SourceError as exc:
            raise self.error(str(exc), line) from None

    @staticmethod
    def _is_http(src: str) -> bool:
        from frontends.dockerfile.addsources import is_http_source

        return is_http_source(src)

    def _is_remote(self, src: str, line: int) -> bool:
        return self._git_ref(src, line) is not None or self._is_http(src)

    def _remote_resolver(self, line: int):  # type: ignore[no-untyped-def]
        from frontends.dockerfile.addsources import RemoteResolver

        if not isinstance(self.resolver, RemoteResolver):
            raise self.error("remote ADD sources (URLs, git repositories) cannot be resolved in this build", line)
        return self.resolver

    def _git_source(self, ref, cmd: AddCommand, meta: VertexMeta) -> Vertex:  # type: ignore[no-untyped-def]
        """A `GitSource` for `ADD <git url>`, its ref resolved to a commit by the engine."""
        from engine.graph.ops import GitSource

        keep = cmd.keep_git_dir
        if ref.keep_git_dir is not None:
            if cmd.keep_git_dir and not ref.keep_git_dir:
                raise self.error("inconsistent keep-git-dir configuration", cmd.line)
            keep = ref.keep_git_dir
        checksum = cmd.checksum
        if checksum and ref.checksum and checksum != ref.checksum:
            raise self.error(f'checksum mismatch "{checksum}" != "{ref.checksum}"', cmd.line)
        checksum = ref.checksum or checksum
        git_ref = ref.ref
        try:
            commit = self._remote_resolver(cmd.line).resolve_git(ref.remote, git_ref, checksum)
        except ShipyardError as exc:
            raise self.error(exc.user_message(), cmd.line) from None
        op = GitSource(ref.remote, git_ref, commit, ref.subdir, keep, checksum)
        return self.graph.add(op, meta=meta)

    def _http_source(self, url: str, cmd: AddCommand, meta: VertexMeta) -> tuple[Vertex, str]:
        """An `HttpSource` for `ADD <url>`: its file name from the URL, its content digest resolved."""
        from engine.graph.ops import HttpSource
        from frontends.dockerfile.addsources import url_filename

        filename = url_filename(url)
        try:
            resolved = self._remote_resolver(cmd.line).resolve_http(url, filename, cmd.checksum)
        except ShipyardError as exc:
            raise self.error(exc.user_message(), cmd.line) from None
        op = HttpSource(url, filename, cmd.checksum, resolved.digest, resolved.last_modified)
        return self.graph.add(op, meta=meta), filename

    def _copy_display(self, cmd: CopyCommand | AddCommand, env: dict[str, str]) -> str:
        """BuildKit's step name for COPY/ADD: the text through the word lexer, keyword upper-cased."""
        try:
            text = self.lex.process_word(cmd.original, env)
        except DockerfileError:
            text = cmd.original
        keyword, sep, rest = text.partition(" ")
        return keyword.upper() + sep + rest

    @staticmethod
    def _copy_history(cmd: CopyCommand | AddCommand) -> str:
        """BuildKit's `created_by` for COPY/ADD (before ` # buildkit`)."""
        words = [cmd.NAME.upper()]
        if isinstance(cmd, CopyCommand) and cmd.parents:
            words.append("--parents")
        if cmd.chown:
            words.append("--chown=" + cmd.chown)
        if cmd.chmod:
            words.append("--chmod=" + cmd.chmod)
        words.extend(cmd.sources)
        words.extend("<<" + content.path for content in cmd.source_contents)
        words.append(cmd.dest)
        return " ".join(words)

    def _dispatch_workdir(self, state: _StageState, cmd: WorkdirCommand, order: int) -> None:
        path = cmd.path
        if not path.startswith("/"):
            path = posixpath.join(state.config.working_dir or "/", path)
        path = posixpath.normpath(path)
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        state.config = dataclasses.replace(state.config, working_dir=path)
        meta = self._step(state, cmd.original, cmd.line)
        if path != "/":
            owner = None
            if state.config.user:
                user, _, group = state.config.user.partition(":")
                owner = Owner(user, group)
            state.vertex = self.graph.add(
                FileOp((MkdirAction(path, 0o755, True, owner),)), [state.vertex], meta
            )
        self._record_step(state, meta, state.vertex, order, "WORKDIR")
        state.position += 1
        self._history(state, f"WORKDIR {path}", path == "/")


def lower_dockerfile(dockerfile: Dockerfile, params: BuildParams, resolver: ImageResolver) -> LoweredBuild:
    return Lowering(dockerfile, params, resolver).lower()
