"""`--output` specs (`type=oci,dest=out.tar`), parsed BuildKit's way: CSV of key=value."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

from engine.errors import UsageError

OUTPUT_TYPES = ("oci", "docker", "local", "image", "registry")
PUSH_TYPES = ("image", "registry")
"""`type=registry` is `type=image,push=true`: both name the image with `name=` (else the -t tags)."""


@dataclass(frozen=True)
class OutputSpec:
    type: str
    dest: str = ""
    attrs: dict[str, str] = field(default_factory=dict)

    def flag(self, name: str, default: bool) -> bool:
        value = self.attrs.get(name)
        if value is None:
            return default
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise UsageError(f"--output {self.type}: {name}={value!r} is not a boolean")


def parse_output(text: str) -> OutputSpec:
    """Parse one `--output` value; a bare path means `type=local,dest=PATH` as in buildx."""
    if "=" not in text:
        if text == "-":
            raise UsageError("--output -: writing to stdout is not supported; give a file path")
        return OutputSpec("local", text)
    fields: dict[str, str] = {}
    for item in next(csv.reader([text])):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--output {text!r}: {item!r} is not key=value")
        fields[key.strip().lower()] = value
    kind = fields.pop("type", "")
    if kind not in OUTPUT_TYPES:
        raise UsageError(f"--output {text!r}: type must be one of {', '.join(OUTPUT_TYPES)}")
    dest = fields.pop("dest", "")
    if kind not in PUSH_TYPES and not dest:
        raise UsageError(f"--output {text!r}: dest= is required for type={kind}")
    return OutputSpec(kind, dest, fields)
