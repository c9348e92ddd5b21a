"""Build checks: BuildKit's lint rules (`frontend/dockerfile/linter`) over a parsed Dockerfile.

BuildKit finds most of its warnings while it converts a Dockerfile to LLB: the rules
that need to know which variables exist (UndefinedVar, JSONArgsRecommended,
WorkdirRelativePath, …) fire as each instruction of a reachable stage is dispatched.
Shipyard's lowering builds a graph, not warnings, so this module replays the part of
that dispatch the rules depend on — ARG and ENV scoping, the base image's ENV and
SHELL, which stages the target reaches — without resolving anything it does not have:
a base image that is not in the local store simply contributes no variables (and the
build then fails on it anyway). The same replay gives `--call=outline` its facts
(`analyze`), so the outline and the checks can never disagree about an ARG.

Rules, names, messages and URLs are BuildKit's. `# check=skip=…;error=true;experimental=…`
(or the build arg `BUILDKIT_DOCKERFILE_CHECK`, which replaces the directive) selects
them; experimental rules (CopyIgnoredFile, InvalidDefinitionDescription) run only when
enabled, as in BuildKit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import DockerfileError, ShipyardError
from frontends.dockerfile.flags import InstructionSyntaxError, parse_bool
from frontends.dockerfile.instructions import (
    AddCommand,
    ArgCommand,
    CmdCommand,
    Command,
    CopyCommand,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    HealthCheckCommand,
    LabelCommand,
    MaintainerCommand,
    RunCommand,
    ShellCommand,
    Stage,
    WorkdirCommand,
    go_lower,
    go_upper,
)
from frontends.dockerfile.mounts import RunMount
from frontends.dockerfile.parser import Dockerfile
from frontends.dockerfile.shell_lexer import ExpansionError, ShellLex, go_quote

if TYPE_CHECKING:
    from frontends.base import ImageResolver

__all__ = [
    "RULES",
    "Analysis",
    "ArgInfo",
    "CheckConfig",
    "CheckError",
    "CheckWarning",
    "MountNeed",
    "Rule",
    "StageFacts",
    "analyze",
    "check_config",
    "definition_comments",
    "failure_message",
    "parse_check_options",
    "run_checks",
    "stage_description",
]

CHECK_BUILD_ARG = "BUILDKIT_DOCKERFILE_CHECK"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NON_ENV_ARGS = frozenset(("BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"))
_RESERVED_STAGE_NAMES = ("context", "scratch")
_SECRET = re.compile(
    r"(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)", re.IGNORECASE
)
_NOT_SECRET = re.compile(r"(?:_|^)public(?:_|$)", re.IGNORECASE)
_DIRECTIVE_LINE = re.compile(r"#[\t\n\v\f\r ]*(syntax|escape|check)[\t\n\v\f\r ]*=", re.IGNORECASE)
_PLATFORM_PART = re.compile(r"[A-Za-z0-9_-]+")
_KNOWN_OS = frozenset(
    ("aix", "android", "darwin", "dragonfly", "freebsd", "illumos", "ios", "js", "linux", "netbsd", "openbsd",
     "plan9", "solaris", "wasip1", "windows")
)  # fmt: skip
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386", "armhf": "arm", "armel": "arm"}


# -- rules ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    description: str
    url: str
    experimental: bool = False


def _rule(name: str, slug: str, description: str, experimental: bool = False) -> Rule:
    return Rule(name, description, f"https://docs.docker.com/go/dockerfile/rule/{slug}/", experimental)


RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        _rule("StageNameCasing", "stage-name-casing", "Stage names should be lowercase"),
        _rule("FromAsCasing", "from-as-casing", "The 'as' keyword should match the case of the 'from' keyword"),
        _rule(
            "NoEmptyContinuation", "no-empty-continuation", "Empty continuation lines will become errors in a future release"
        ),
        _rule(
            "ConsistentInstructionCasing",
            "consistent-instruction-casing",
            "All commands within the Dockerfile should use the same casing (either upper or lower)",
        ),
        _rule("DuplicateStageName", "duplicate-stage-name", "Stage names should be unique"),
        _rule("ReservedStageName", "reserved-stage-name", "Reserved words should not be used as stage names"),
        _rule(
            "JSONArgsRecommended",
            "json-args-recommended",
            "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
        ),
        _rule(
            "MaintainerDeprecated",
            "maintainer-deprecated",
            "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
        ),
        _rule("UndefinedArgInFrom", "undefined-arg-in-from", "FROM command must use declared ARGs"),
        _rule(
            "WorkdirRelativePath",
            "workdir-relative-path",
            "Relative workdir without an absolute workdir declared within the build can have unexpected results if "
            "the base image changes",
        ),
        _rule("UndefinedVar", "undefined-var", "Variables should be defined before their use"),
        _rule(
            "MultipleInstructionsDisallowed",
            "multiple-instructions-disallowed",
            "Multiple instructions of the same type should not be used in the same stage",
        ),
        _rule(
            "LegacyKeyValueFormat",
            "legacy-key-value-format",
            "Legacy key/value format with whitespace separator should not be used",
        ),
        _rule(
            "RedundantTargetPlatform",
            "redundant-target-platform",
            "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
        ),
        _rule(
            "SecretsUsedInArgOrEnv",
            "secrets-used-in-arg-or-env",
            "Sensitive data should not be used in the ARG or ENV commands",
        ),
        _rule(
            "InvalidDefaultArgInFrom",
            "invalid-default-arg-in-from",
            "Default value for global ARG results in an empty or invalid base image name",
        ),
        _rule(
            "FromPlatformFlagConstDisallowed",
            "from-platform-flag-const-disallowed",
            "FROM --platform flag should not use a constant value",
        ),
        _rule(
            "CopyIgnoredFile",
            "copy-ignored-file",
            "Attempting to Copy file that is excluded by .dockerignore",
            experimental=True,
        ),
        _rule(
            "InvalidDefinitionDescription",
            "invalid-definition-description",
            "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If "
            "this is not intended to be a description comment, add an empty line or comment between the "
            "instruction and the comment.",
            experimental=True,
        ),
        _rule("ExposeProtoCasing", "expose-proto-casing", "Protocol in EXPOSE instruction should be lowercase"),
        _rule(
            "ExposeInvalidFormat",
            "expose-invalid-format",
            "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error "
            "in a future release",
        ),
    )
}


@dataclass(frozen=True)
class CheckWarning:
    """One rule violation. `location` is `file:line`; `start_line`/`end_line` the range."""

    rule: str
    message: str
    location: str
    url: str = ""
    description: str = ""
    start_line: int = 0
    end_line: int = 0

    def line(self) -> str:
        """BuildKit's short form, as its progress output shows it: `Rule: message (line N)`."""
        out = f"{self.rule}: {self.message}"
        return f"{out} (line {self.start_line})" if self.start_line > 0 else out


class CheckError(ShipyardError):
    """Bad check options, or `error=true` with warnings: the build (or check) fails."""


# -- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class CheckConfig:
    """What `# check=` (or BUILDKIT_DOCKERFILE_CHECK) asks for."""

    skip: frozenset[str] = frozenset()
    skip_all: bool = False
    experimental: frozenset[str] = frozenset()
    experimental_all: bool = False
    error: bool = False

    def enabled(self, rule: Rule) -> bool:
        if rule.experimental:
            return self.experimental_all or rule.name in self.experimental
        return not self.skip_all and rule.name not in self.skip


def _rule_list(value: str) -> frozenset[str]:
    return frozenset(part.strip() for part in value.split(","))


def parse_check_options(text: str) -> CheckConfig:
    """BuildKit's ParseLintOptions: `skip=A,B|all`, `experimental=A|all`, `error=BOOL`, `;`-separated.

    Raises ValueError with BuildKit's reason for a malformed value.
    """
    text = text.strip()
    if not text:
        return CheckConfig()
    skip: frozenset[str] = frozenset()
    experimental: frozenset[str] = frozenset()
    skip_all = experimental_all = error = False
    for part in text.split(";", 2):  # Go's SplitN(…, 3): a fourth part stays inside the third
        key, has_value, value = part.partition("=")
        if not has_value:
            raise ValueError(f"invalid check option {go_quote(part)}")
        key = key.strip()
        value = value.strip()
        if key == "skip":
            if value == "all":
                skip_all = True
            else:
                skip = _rule_list(value)
        elif key == "experimental":
            if value == "all":
                experimental_all = True
            else:
                experimental = _rule_list(value)
        elif key == "error":
            try:
                error = parse_bool(value)
            except ValueError as err:
                raise ValueError(f"failed to parse check option {go_quote(part)}: {err}") from None
        else:
            raise ValueError(f"invalid check option {go_quote(key)}")
    return CheckConfig(skip, skip_all, experimental, experimental_all, error)


def check_config(dockerfile: Dockerfile, build_args: Mapping[str, str]) -> CheckConfig:
    """The build arg BUILDKIT_DOCKERFILE_CHECK if given (it replaces the directive), else `# check=`."""
    if CHECK_BUILD_ARG in build_args:
        try:
            return parse_check_options(build_args[CHECK_BUILD_ARG])
        except ValueError as err:
            raise CheckError(f"failed to parse check options ({CHECK_BUILD_ARG}): {err}") from None
    try:
        return parse_check_options(dockerfile.directives.check)
    except ValueError as err:
        raise DockerfileError(f"failed to parse check options: {err}", dockerfile.filename) from None


def failure_message(warnings: Sequence[CheckWarning], config: CheckConfig) -> str:
    """BuildKit's `lint violation found for rules: …` when `error=true` and a rule fired, else ""."""
    if not config.error or not warnings:
        return ""
    return "lint violation found for rules: " + ", ".join(sorted({w.rule for w in warnings}))


# -- facts the replay gathers (also the outline's input) ---------------------------------


@dataclass(frozen=True)
class ArgInfo:
    """A declared ARG as `--call=outline` reports it: value after build args, description."""

    name: str
    value: str | None
    description: str
    line: int
    end_line: int
    deps: frozenset[str] = frozenset()


@dataclass(frozen=True)
class MountNeed:
    """A secret or ssh agent a RUN step mounts."""

    id: str
    required: bool
    line: int
    end_line: int


@dataclass(frozen=True)
class StageFacts:
    """What one dispatched stage declares and needs."""

    index: int
    used_args: frozenset[str]
    args: tuple[ArgInfo, ...]
    secrets: tuple[MountNeed, ...]
    ssh: tuple[MountNeed, ...]


@dataclass(frozen=True)
class Analysis:
    """The replay's result: every warning (unfiltered), the global ARGs, the stage graph."""

    warnings: tuple[CheckWarning, ...]
    global_args: tuple[ArgInfo, ...]
    stages: tuple[StageFacts | None, ...]
    """Per stage index; None for a stage that was not dispatched (unreachable)."""
    base: tuple[int | None, ...]
    """Per stage: the earlier stage it is built FROM, if any."""
    deps: tuple[tuple[int, ...], ...]
    """Per stage: the stages its COPY --from and RUN --mount from= read."""
    target: int


# -- comments (descriptions) ---------------------------------------------------------------


def definition_comments(source: str) -> dict[int, tuple[str, ...]]:
    """The comment lines right above each line, as BuildKit attaches them to an instruction.

    Maps a 1-based line number to the comments (without `#`, trimmed) directly above
    it. A blank line or an empty `#` ends the block; parser directives are not comments.
    """
    lines = source.split("\n")
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    directives = 0
    for raw in lines:
        if _DIRECTIVE_LINE.match(raw.strip()):
            directives += 1
        else:
            break
    out: dict[int, tuple[str, ...]] = {}
    block: list[str] = []
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if number <= directives:
            continue
        if stripped.startswith("#"):
            text = stripped[1:].strip()
            if text:
                block.append(text)
            else:
                block = []
            continue
        if block and stripped:
            out[number] = tuple(block)
        block = []
    return out


def _description(comments: Sequence[str], name: str) -> str:
    """BuildKit's getComment: the first comment line starting with `name `."""
    if not name:
        return ""
    prefix = name + " "
    for line in comments:
        if line.startswith(prefix):
            return line[len(prefix) :]
    return ""


def stage_description(comments: Mapping[int, Sequence[str]], stage: Stage) -> str:
    """A stage's description from the `# name description` comment above its FROM."""
    return _description(comments.get(stage.line, ()), stage.name)


# -- small helpers ---------------------------------------------------------------------------


def _keyword(original: str) -> str:
    """The instruction keyword as written."""
    parts = original.split(None, 1)
    return parts[0] if parts else ""


def _from_args(stage: Stage) -> list[str]:
    """FROM's arguments as written (flags dropped), e.g. `["alpine", "AS", "Build"]`."""
    words = stage.original.split()[1:]
    while words and words[0].startswith("--"):
        words.pop(0)
    return words


def _closest(value: str, options: Iterable[str]) -> str:
    """BuildKit's suggestion: an option one or two edits away ("" when none, or an exact hit)."""
    best, best_dist = "", 3
    for option in sorted(set(options)):
        if option == value:
            return ""
        dist = _edit_distance(value, option)
        if dist < best_dist:
            best, best_dist = option, dist
    return best


def _edit_distance(a: str, b: str) -> int:
    if abs(len(a) - len(b)) >= 3:
        return 3
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _host_platform() -> tuple[str, str]:
    import platform

    machine = platform.machine().lower()
    return "linux", _ARCH_ALIASES.get(machine, machine or "amd64")


def predefined_args(build_args: Mapping[str, str], target_stage: str) -> dict[str, str]:
    """BuildKit's defaultArgs: the automatic platform ARGs (host platform) and TARGETSTAGE."""
    os_name, arch = _host_platform()
    values = {
        "BUILDPLATFORM": f"{os_name}/{arch}",
        "BUILDOS": os_name,
        "BUILDOSVERSION": "",
        "BUILDARCH": arch,
        "BUILDVARIANT": "",
        "TARGETPLATFORM": f"{os_name}/{arch}",
        "TARGETOS": os_name,
        "TARGETOSVERSION": "",
        "TARGETARCH": arch,
        "TARGETVARIANT": "",
        "TARGETSTAGE": target_stage,
    }
    for key in values:
        if key in build_args:
            values[key] = build_args[key]
    return values


def _parse_platform(text: str) -> tuple[str, str] | None:
    """(os, arch) the way containerd's platforms.Parse reads a specifier, None if invalid."""
    parts = text.split("/")
    if not 1 <= len(parts) <= 3 or not all(_PLATFORM_PART.fullmatch(p) for p in parts):
        return None
    parts = [p.lower() for p in parts]
    if len(parts) == 1:
        if parts[0] in _KNOWN_OS:
            return parts[0], _host_platform()[1]
        return "linux", _ARCH_ALIASES.get(parts[0], parts[0])
    return parts[0], _ARCH_ALIASES.get(parts[1], parts[1])


def _image_env(env: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def _heredoc_lines(cmd: Command) -> int:
    heredocs = getattr(cmd, "heredocs", ())
    return sum(h.content.count("\n") + 1 for h in heredocs)


# -- the replay --------------------------------------------------------------------------------


class _StageState:
    """What a stage's dispatch carries from one instruction to the next (and to child stages)."""

    __slots__ = ("build_args", "env", "has_shell", "workdir_set")

    def __init__(self, env: dict[str, str], build_args: list[str], has_shell: bool, workdir_set: bool) -> None:
        self.env = env
        self.build_args = build_args
        self.has_shell = has_shell
        self.workdir_set = workdir_set


class _Replay:
    """Walks the Dockerfile the way BuildKit's dispatch does, recording warnings and facts."""

    def __init__(
        self,
        dockerfile: Dockerfile,
        build_args: Mapping[str, str],
        target: str,
        *,
        source: str | None,
        exclude_patterns: Sequence[str] | None,
        resolver: ImageResolver | None,
        all_stages: bool,
    ) -> None:
        self.df = dockerfile
        self.filename = dockerfile.filename
        self.build_args = build_args
        from frontends.dockerfile.limits import BudgetedLex

        self.lex = BudgetedLex(dockerfile.escape)  # total expansion is capped, as in the lowering
        self.raw_lex = ShellLex("\\", skip_process_quotes=True)
        self.resolver = resolver
        self.all_stages = all_stages
        self.comments = definition_comments(source) if source is not None else {}
        self.matcher = None
        if exclude_patterns:
            from engine.fs.patterns import PatternMatcher

            try:
                self.matcher = PatternMatcher(exclude_patterns)
            except ShipyardError:
                self.matcher = None  # a bad pattern is reported where .dockerignore is read
        self.warnings: list[CheckWarning] = []
        self.target = self._target_index(target)
        target_name = target or dockerfile.stages[-1].name
        self.predefined = predefined_args(build_args, target_name)
        self.global_env, self.global_args = self._meta_args(build_args)
        self.bases: list[int | None] = []
        self.stage_deps: list[tuple[int, ...]] = []
        self.states: dict[int, _StageState] = {}
        self.facts: dict[int, StageFacts] = {}

    # ---------------------------------------------------------------- reporting

    def warn(self, rule_name: str, message: str, line: int, end_line: int = 0) -> None:
        rule = RULES[rule_name]
        self.warnings.append(
            CheckWarning(
                rule=rule.name,
                message=message,
                location=f"{self.filename}:{line}",
                url=rule.url,
                description=rule.description,
                start_line=line,
                end_line=max(end_line, line),
            )
        )

    # ---------------------------------------------------------------- globals

    def _target_index(self, target: str) -> int:
        if not target:
            return len(self.df.stages) - 1
        wanted = go_lower(target)
        for stage in self.df.stages:
            if stage.name == wanted:
                return stage.index
        raise ShipyardError(f'target stage "{target}" could not be found')

    def _meta_args(self, build_args: Mapping[str, str]) -> tuple[dict[str, str], dict[str, ArgInfo]]:
        """BuildKit's buildMetaArgs: global ARG values (build args win) and their infos."""
        env = dict(self.predefined)
        infos: dict[str, ArgInfo] = {}
        for cmd in self.df.meta_args:
            comments = self.comments.get(cmd.line, ())
            for pair in cmd.args:
                value: str | None = None
                deps: frozenset[str] = frozenset()
                if pair.key in build_args:
                    value = build_args[pair.key]
                elif pair.value is not None:
                    try:
                        result = self.lex.process_word_with_matches(pair.value, env)
                    except ExpansionError:
                        result = None
                    if result is not None:
                        value, deps = result.result, result.matched
                if value is not None:
                    env[pair.key] = value
                description = _description(comments, pair.key)
                infos[pair.key] = ArgInfo(pair.key, value, description, cmd.line, cmd.end_line, deps)
        return env, infos

    # ---------------------------------------------------------------- parse-time rules

    def parse_rules(self) -> None:
        """Rules BuildKit applies while parsing: every stage, reachable or not."""
        for warning in self.df.warnings:
            line, end = self._continuation_line(warning)
            self.warn("NoEmptyContinuation", "Empty continuation line", line, end)
        for cmd in self.df.meta_args:
            self._definition_description("ARG", [p.key for p in cmd.args], cmd.line, cmd.end_line)
        for stage in self.df.stages:
            args = _from_args(stage)
            keyword = _keyword(stage.original)
            if len(args) == 3 and args[2] != go_lower(args[2]):
                self.warn("StageNameCasing", f"Stage name '{args[2]}' should be lowercase", stage.line)
            if len(args) >= 3 and keyword in (go_lower(keyword), go_upper(keyword)):
                as_word = args[1]
                wanted = go_lower(as_word) if keyword == go_lower(keyword) else go_upper(as_word)
                if as_word != wanted:
                    self.warn("FromAsCasing", f"'{as_word}' and '{keyword}' keywords' casing do not match", stage.line)
            if stage.name:
                self._definition_description("FROM", [stage.name], stage.line, stage.line)
            for cmd in stage.commands:
                if isinstance(cmd, MaintainerCommand):
                    self.warn(
                        "MaintainerDeprecated",
                        "Maintainer instruction is deprecated in favor of using label",
                        cmd.line,
                        cmd.end_line,
                    )
                elif isinstance(cmd, ArgCommand):
                    self._definition_description("ARG", [p.key for p in cmd.args], cmd.line, cmd.end_line)
        self._stage_names()
        self._casing()

    def _continuation_line(self, warning: str) -> tuple[int, int]:
        """The last line of the instruction a parser warning is about (BuildKit's location)."""
        text = warning.partition(": ")[2].strip()
        commands: list[Command] = list(self.df.meta_args)
        for stage in self.df.stages:
            if stage.original == text:
                return stage.line, stage.line
            commands.extend(stage.commands)
        for cmd in commands:
            if cmd.original == text:
                end = cmd.end_line - _heredoc_lines(cmd)
                return end, end
        return 0, 0

    def _definition_description(self, instruction: str, keys: list[str], line: int, end_line: int) -> None:
        comments = self.comments.get(line, ())
        if not comments or not keys:
            return
        if comments[-1].split(" ")[0] in keys:
            return
        example = keys[0] if len(keys) == 1 else "<arg_key>"
        self.warn(
            "InvalidDefinitionDescription",
            f"Comment for {instruction} should follow the format: `# {example} <description>`",
            line,
            end_line,
        )

    def _stage_names(self) -> None:
        seen: set[str] = set()
        for stage in self.df.stages:
            if not stage.name:
                continue
            if stage.name in _RESERVED_STAGE_NAMES:
                self.warn(
                    "ReservedStageName",
                    f"Stage name should not use the same name as reserved stage {go_quote(stage.name)}",
                    stage.line,
                )
            if stage.name in seen:
                self.warn(
                    "DuplicateStageName",
                    f"Duplicate stage name {go_quote(stage.name)}, stage names should be unique",
                    stage.line,
                )
            seen.add(stage.name)

    def _casing(self) -> None:
        """ConsistentInstructionCasing: every keyword in the majority's case (ties: upper)."""
        keywords: list[tuple[str, int, int]] = []
        for stage in self.df.stages:
            keywords.append((_keyword(stage.original), stage.line, stage.line))
            keywords.extend((_keyword(c.original), c.line, c.end_line) for c in stage.commands)
        lower = upper = 0
        for word, _, _ in keywords:
            if word == go_lower(word):
                lower += 1
            elif word == go_upper(word):
                upper += 1
        majority_lower = lower > upper
        for word, line, end in keywords:
            if majority_lower and word != go_lower(word):
                casing = "lowercase"
            elif not majority_lower and word != go_upper(word):
                casing = "uppercase"
            else:
                continue
            self.warn(
                "ConsistentInstructionCasing",
                f"Command '{word}' should match the case of the command majority ({casing})",
                line,
                end,
            )

    # ---------------------------------------------------------------- FROM rules

    def from_rules(self) -> None:
        """UndefinedArgInFrom, RedundantTargetPlatform, FromPlatformFlagConstDisallowed,
        InvalidDefaultArgInFrom: every stage's FROM against the global ARGs."""
        known = set(self.global_args) | set(self.global_env)
        for stage in self.df.stages:
            for word, is_platform in ((stage.base, False), (stage.platform, True)):
                if is_platform and not word:
                    continue
                try:
                    result = self.lex.process_word_with_matches(word, self.global_env)
                except ExpansionError:
                    continue
                for name in sorted(result.unmatched - known):
                    suggestion = _closest(name, known)
                    message = f"FROM argument '{name}' is not declared"
                    if suggestion:
                        message += f" (did you mean {suggestion}?)"
                    self.warn("UndefinedArgInFrom", message, stage.line)
                if not is_platform:
                    continue
                if (
                    result.matched == {"TARGETPLATFORM"}
                    and not result.unmatched
                    and result.result == self.global_env.get("TARGETPLATFORM")
                ):
                    self.warn(
                        "RedundantTargetPlatform",
                        f"Setting platform to predefined {word} in FROM is redundant as this is the default behavior",
                        stage.line,
                    )
                if not result.matched and not result.unmatched:
                    parsed = _parse_platform(result.result)
                    if parsed is not None and parsed[0] not in stage.name and parsed[1] not in stage.name:
                        self.warn(
                            "FromPlatformFlagConstDisallowed",
                            f"FROM --platform flag should not use constant value {go_quote(result.result)}",
                            stage.line,
                        )
        self._default_bases()

    def _default_bases(self) -> None:
        """InvalidDefaultArgInFrom: the base names the global ARGs' defaults alone produce."""
        from engine.reference import parse_reference

        env = dict(self.predefined)
        for cmd in self.df.meta_args:
            for pair in cmd.args:
                if pair.value is None:
                    continue
                try:
                    env[pair.key] = self.lex.process_word(pair.value, env)
                except ExpansionError:
                    return
        for stage in self.df.stages:
            try:
                name = self.lex.process_word(stage.base, env)
            except ExpansionError:
                return
            try:
                parse_reference(name)
            except ShipyardError:
                self.warn(
                    "InvalidDefaultArgInFrom",
                    f"Default value for ARG {stage.base} results in empty or invalid base image name",
                    stage.line,
                )

    # ---------------------------------------------------------------- the stage graph

    def graph(self) -> None:
        names: dict[str, int] = {}
        for stage in self.df.stages:
            try:
                base_name = go_lower(self.lex.process_word(stage.base, self.global_env))
            except ExpansionError:
                base_name = go_lower(stage.base)
            self.bases.append(names.get(base_name))
            if stage.name and stage.name not in names:
                names[stage.name] = stage.index
        for stage in self.df.stages:
            deps: list[int] = []
            for cmd in stage.commands:
                refs: list[str] = []
                if isinstance(cmd, CopyCommand) and cmd.from_:
                    refs.append(cmd.from_)
                elif isinstance(cmd, RunCommand):
                    refs.extend(m.from_ for m in cmd.mounts if m.from_)
                for ref in refs:
                    index = self._stage_ref(ref, names)
                    if index is not None and index not in deps:
                        deps.append(index)
            self.stage_deps.append(tuple(deps))

    def _stage_ref(self, ref: str, names: Mapping[str, int]) -> int | None:
        if "$" in ref:
            try:
                ref = self.lex.process_word(ref, self.global_env)
            except ExpansionError:
                return None
        if ref.isdigit():
            index = int(ref)
            return index if index < len(self.df.stages) else None
        return names.get(go_lower(ref))

    def reachable(self) -> set[int]:
        if self.all_stages:
            return set(range(len(self.df.stages)))
        seen: set[int] = set()
        pending = [self.target]
        while pending:
            index = pending.pop()
            if index in seen:
                continue
            seen.add(index)
            base = self.bases[index]
            if base is not None:
                pending.append(base)
            pending.extend(self.stage_deps[index])
        return seen

    # ---------------------------------------------------------------- dispatch

    def dispatch_all(self) -> None:
        reachable = self.reachable()
        for stage in self.df.stages:
            if stage.index in reachable:
                self._dispatch_stage(stage)

    def _initial_state(self, stage: Stage) -> _StageState:
        base = self.bases[stage.index]
        if base is not None and base in self.states:
            parent = self.states[base]
            return _StageState(dict(parent.env), list(parent.build_args), parent.has_shell, parent.workdir_set)
        env: dict[str, str] = {}
        has_shell = False
        try:
            base_name = self.lex.process_word(stage.base, self.global_env)
        except ExpansionError:
            base_name = ""
        if base_name and go_lower(base_name) != "scratch" and self.resolver is not None:
            try:
                resolved = self.resolver.resolve(base_name)
            except ShipyardError:
                resolved = None
            if resolved is not None:
                env = _image_env(resolved.image.config.env)
                has_shell = bool(resolved.image.config.shell)
        env.setdefault("PATH", DEFAULT_PATH)
        return _StageState(env, [], has_shell, False)

    def _dispatch_stage(self, stage: Stage) -> None:
        state = self._initial_state(stage)
        used: set[str] = set()
        for word in (stage.base, stage.platform):
            if word:
                try:
                    used |= self.lex.process_word_with_matches(word, self.global_env).matched
                except ExpansionError:
                    pass
        args: list[ArgInfo] = []
        secrets: dict[str, MountNeed] = {}
        ssh: dict[str, MountNeed] = {}
        once: dict[str, tuple[int, int]] = {}
        for cmd in stage.commands:
            try:
                cmd = self._expand(cmd, state)
            except (DockerfileError, InstructionSyntaxError):
                continue  # the lowering reports the expansion error
            if isinstance(cmd, EnvCommand):
                for pair in cmd.env:
                    if pair.no_delim:
                        self._legacy(cmd)
                    self._secret_key("ENV", pair.key, cmd)
                    state.env[pair.key] = pair.value
            elif isinstance(cmd, LabelCommand):
                for pair in cmd.labels:
                    if pair.no_delim:
                        self._legacy(cmd)
            elif isinstance(cmd, ArgCommand):
                for info in self._dispatch_arg(cmd, state):
                    used.add(info.name)
                    if info.line:
                        args.append(info)
            elif isinstance(cmd, (CmdCommand, EntrypointCommand)):
                self._used_once(cmd, once)
                if cmd.prepend_shell and not state.has_shell:
                    keyword = _keyword(cmd.original)
                    self.warn(
                        "JSONArgsRecommended",
                        f"JSON arguments recommended for {keyword} to prevent unintended behavior related to OS signals",
                        cmd.line,
                        cmd.end_line,
                    )
            elif isinstance(cmd, HealthCheckCommand):
                self._used_once(cmd, once)
            elif isinstance(cmd, ShellCommand):
                state.has_shell = True
            elif isinstance(cmd, WorkdirCommand):
                if not state.workdir_set and not cmd.path.startswith("/"):
                    self.warn(
                        "WorkdirRelativePath",
                        f"Relative workdir {go_quote(cmd.path)} can have unexpected results if the base image changes",
                        cmd.line,
                        cmd.end_line,
                    )
                state.workdir_set = True
            elif isinstance(cmd, ExposeCommand):
                self._expose(cmd, state)
            elif isinstance(cmd, (CopyCommand, AddCommand)):
                self._ignored_sources(cmd)
            elif isinstance(cmd, RunCommand):
                for mount in cmd.mounts:
                    self._mount_need(mount, cmd, secrets, ssh)
        self.states[stage.index] = state
        self.facts[stage.index] = StageFacts(
            stage.index, frozenset(used), tuple(args), tuple(secrets.values()), tuple(ssh.values())
        )

    def _expand(self, cmd: Command, state: _StageState) -> Command:
        """BuildKit's Expand (and ExpandRaw for heredoc files), reporting unmatched names."""
        if isinstance(cmd, ArgCommand) or not cmd.EXPANDS:
            return cmd
        env = dict(state.env)
        snapshot = list(state.build_args)

        def expand(lex: ShellLex) -> Callable[[str], str]:
            def run(word: str) -> str:
                result = lex.process_word_with_matches(word, env)
                self._undefined(result.unmatched, snapshot, env, cmd)
                return result.result

            return run

        expanded = cmd.expand_with(expand(self.lex), self.filename)
        if isinstance(expanded, (CopyCommand, AddCommand)) and expanded.source_contents:
            expanded = expanded.expand_heredocs(expand(self.raw_lex), self.filename)
        return expanded

    def _undefined(self, unmatched: Iterable[str], build_args: Sequence[str], env: Mapping[str, str], cmd: Command) -> None:
        for name in sorted(set(unmatched) - set(build_args) - _NON_ENV_ARGS):
            suggestion = _closest(name, env)
            message = f"Usage of undefined variable '${name}'"
            if suggestion:
                message += f" (did you mean ${suggestion}?)"
            self.warn("UndefinedVar", message, cmd.line, cmd.end_line)

    def _dispatch_arg(self, cmd: ArgCommand, state: _StageState) -> list[ArgInfo]:
        """BuildKit's dispatchArg; returns the infos (line 0: inherited from a global ARG)."""
        comments = self.comments.get(cmd.line, ())
        out: list[ArgInfo] = []
        for pair in cmd.args:
            self._secret_key("ARG", pair.key, cmd)
            value: str | None = None
            inherited = False
            if pair.key in self.build_args:
                value = self.build_args[pair.key]
            elif pair.value is not None:
                env = dict(state.env)
                try:
                    result = self.lex.process_word_with_matches(pair.value, env)
                except ExpansionError:
                    result = None
                if result is not None:
                    self._undefined(result.unmatched, state.build_args, env, cmd)
                    value = result.result
            elif pair.key in self.global_env:
                value = self.global_env[pair.key]
                inherited = True
            if value is not None and pair.key not in _NON_ENV_ARGS:
                state.env[pair.key] = value
            state.build_args.append(pair.key)
            if inherited:
                out.append(ArgInfo(pair.key, value, "", 0, 0))
            else:
                description = _description(comments, pair.key)
                out.append(ArgInfo(pair.key, value, description, cmd.line, cmd.end_line))
        return out

    def _legacy(self, cmd: Command) -> None:
        name = _keyword(cmd.original)
        self.warn(
            "LegacyKeyValueFormat",
            f'"{name} key=value" should be used instead of legacy "{name} key value" format',
            cmd.line,
            cmd.end_line,
        )

    def _secret_key(self, instruction: str, key: str, cmd: Command) -> None:
        if _SECRET.search(key) and not _NOT_SECRET.search(key):
            self.warn(
                "SecretsUsedInArgOrEnv",
                f"Do not use ARG or ENV instructions for sensitive data ({instruction} {go_quote(key)})",
                cmd.line,
                cmd.end_line,
            )

    def _used_once(self, cmd: Command, seen: dict[str, tuple[int, int]]) -> None:
        """MultipleInstructionsDisallowed, reported where the ignored (earlier) one is."""
        previous = seen.get(cmd.name)
        if previous is not None:
            self.warn(
                "MultipleInstructionsDisallowed",
                f"Multiple {_keyword(cmd.original)} instructions should not be used in the same stage because only "
                "the last one will be used",
                *previous,
            )
        seen[cmd.name] = (cmd.line, cmd.end_line)

    def _expose(self, cmd: ExposeCommand, state: _StageState) -> None:
        ports: list[str] = []
        for word in cmd.ports:
            try:
                ports.extend(self.lex.process_words(word, state.env))
            except ExpansionError:
                return
        for raw in ports:
            parts = raw.split(":")
            if len(parts) == 1:
                ip, host, container = "", "", parts[0]
            elif len(parts) == 2:
                ip, host, container = "", parts[0], parts[1]
            else:
                ip, host, container = ":".join(parts[:-2]), parts[-2], parts[-1]
            port, _, proto = container.partition("/")
            if not port or go_lower(proto) not in ("", "tcp", "udp", "sctp"):
                return  # an invalid port is an error of the build itself
            if proto != go_lower(proto):
                self.warn(
                    "ExposeProtoCasing",
                    f"Defined protocol '{raw}' in EXPOSE instruction should be lowercase",
                    cmd.line,
                    cmd.end_line,
                )
            if ip or host:
                self.warn(
                    "ExposeInvalidFormat",
                    f"EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'",
                    cmd.line,
                    cmd.end_line,
                )

    def _ignored_sources(self, cmd: CopyCommand | AddCommand) -> None:
        if self.matcher is None or (isinstance(cmd, CopyCommand) and cmd.from_):
            return
        verb = "Add" if isinstance(cmd, AddCommand) else "Copy"
        for src in cmd.sources:
            if isinstance(cmd, AddCommand) and (
                src.startswith(("http://", "https://", "git@", "git://")) or ".git#" in src or src.endswith(".git")
            ):
                continue
            if self.matcher.matches(src):
                self.warn(
                    "CopyIgnoredFile",
                    f"Attempting to {verb} file {go_quote(src)} that is excluded by .dockerignore",
                    cmd.line,
                    cmd.end_line,
                )

    def _mount_need(
        self, mount: RunMount, cmd: RunCommand, secrets: dict[str, MountNeed], ssh: dict[str, MountNeed]
    ) -> None:
        if mount.unexpanded:
            return
        if mount.type == "secret":
            secret_id = mount.source or mount.id or (mount.target.rstrip("/").rsplit("/", 1)[-1] if mount.target else "")
            if secret_id:
                secrets[secret_id] = MountNeed(secret_id, mount.required, cmd.line, cmd.end_line)
        elif mount.type == "ssh":
            ssh_id = mount.id or "default"
            ssh[ssh_id] = MountNeed(ssh_id, mount.required, cmd.line, cmd.end_line)


def analyze(
    dockerfile: Dockerfile,
    build_args: Mapping[str, str],
    target: str = "",
    *,
    source: str | None = None,
    exclude_patterns: Sequence[str] | None = None,
    resolver: ImageResolver | None = None,
    all_stages: bool = False,
) -> Analysis:
    """Replay the Dockerfile's dispatch: every warning (before rule selection) and the facts.

    Only stages reachable from `target` (default: the last) are dispatched unless
    `all_stages`, as in BuildKit (whose `--check` without a target lints every stage).
    `resolver` supplies base images' ENV and SHELL; `source` (the Dockerfile text)
    enables descriptions from comments.
    """
    replay = _Replay(
        dockerfile,
        build_args,
        target,
        source=source,
        exclude_patterns=exclude_patterns,
        resolver=resolver,
        all_stages=all_stages,
    )
    replay.parse_rules()
    replay.from_rules()
    replay.graph()
    replay.dispatch_all()
    unique: dict[tuple[str, str, int], CheckWarning] = {}
    for warning in replay.warnings:
        unique.setdefault((warning.rule, warning.message, warning.start_line), warning)
    warnings = sorted(unique.values(), key=lambda w: w.start_line)
    return Analysis(
        warnings=tuple(warnings),
        global_args=tuple(replay.global_args.values()),
        stages=tuple(replay.facts.get(i) for i in range(len(dockerfile.stages))),
        base=tuple(replay.bases),
        deps=tuple(replay.stage_deps),
        target=replay.target,
    )


def run_checks(
    dockerfile: Dockerfile,
    build_args: Mapping[str, str],
    target: str = "",
    *,
    source: str | None = None,
    exclude_patterns: Sequence[str] | None = None,
    resolver: ImageResolver | None = None,
    all_stages: bool = False,
    config: CheckConfig | None = None,
) -> list[CheckWarning]:
    """The warnings the enabled rules give, in line order.

    `config` defaults to `check_config(dockerfile, build_args)` (directive or build arg).
    """
    if config is None:
        config = check_config(dockerfile, build_args)
    if config.skip_all and not (config.experimental_all or config.experimental):
        return []
    if not config.enabled(RULES["CopyIgnoredFile"]):
        exclude_patterns = None  # nothing to compile
    analysis = analyze(
        dockerfile,
        build_args,
        target,
        source=source,
        exclude_patterns=exclude_patterns,
        resolver=resolver,
        all_stages=all_stages,
    )
    return [w for w in analysis.warnings if config.enabled(RULES[w.rule])]
