"""docker's output rules as the image commands use them: units, tables, templates, globs."""

from __future__ import annotations

import pytest

from engine.commands.gotemplate import parse
from engine.commands.humanize import ellipsis, human_duration, human_size, table
from engine.commands.images import go_glob
from engine.errors import UsageError


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0.5, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
        (3599, "59 minutes"), (3600, "About an hour"), (5400, "2 hours"), (47 * 3600, "47 hours"),
        (3 * 86400, "3 days"), (15 * 86400, "2 weeks"), (70 * 86400, "2 months"), (800 * 86400, "2 years"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_human_size_and_ellipsis() -> None:
    assert [human_size(n) for n in (0, 999, 1000, 1985512, 1_240_000_000)] == ["0B", "999B", "1kB", "1.99MB", "1.24GB"]
    assert ellipsis("x" * 45, 45) == "x" * 45
    assert ellipsis("x" * 46, 45) == "x" * 44 + "…"


def test_table_is_tabwriter_with_padding_3_and_min_width_10() -> None:
    assert table([["REPOSITORY", "TAG", "SIZE"], ["busybox", "latest", "1.99MB"]]) == (
        "REPOSITORY   TAG       SIZE\n"
        "busybox      latest    1.99MB\n"
    )


def test_go_templates() -> None:
    value = {"Id": "sha256:x", "Config": {"Cmd": ["sh", "-c"], "Env": None, "Labels": {"b": "2", "a": "1"}}}
    assert parse("{{.Id}}").render(value) == "sha256:x"
    assert parse("{{.Config.Cmd}} {{.Config.Env}} {{.Config.Labels}}").render(value) == "[sh -c] <nil> map[a:1 b:2]"
    assert parse("{{json .Config.Cmd}}\\t{{ .Missing }}").render(value) == '["sh","-c"]\t<no value>'
    table_template = parse("table {{.Repository}}\\t{{.Tag}}")
    assert table_template.is_table and table_template.header({"Repository": "REPOSITORY"}) == "REPOSITORY\tTAG"
    for bad in ("{{range .}}{{end}}", "{{.Id"):
        with pytest.raises(UsageError):
            parse(bad)


def test_go_glob_stops_at_slashes() -> None:
    assert go_glob("team/*").match("team/app")
    assert not go_glob("*").match("team/app")
    assert go_glob("app:v[12]*").match("app:v1.0") and not go_glob("app:v[^12]").match("app:v1")
    assert go_glob("a?c").match("abc") and not go_glob("a?c").match("a/c")
