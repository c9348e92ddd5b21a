"""The one error a build file can cause: where it is, which key, and what is wrong.

Every problem found while loading `build.yaml` (or a compose file, or bake JSON) is a
`BuildFileError` whose message is `file:line:col: key.path: reason`, so an editor can
jump to it and the user sees which key is meant even when one line holds several.
"""

from __future__ import annotations

from engine.errors import ShipyardError


class BuildFileError(ShipyardError):
    """A build file that cannot be loaded: a syntax, schema or semantic problem."""

    def __init__(
        self,
        reason: str,
        file: str = "",
        line: int = 0,
        col: int = 0,
        key_path: str = "",
    ) -> None:
        self.reason = reason
        self.file = file
        self.line = line
        self.col = col
        self.key_path = key_path
        super().__init__(self.user_message())

    def __repr__(self) -> str:
        return f"BuildFileError({self.user_message()!r})"

    def user_message(self) -> str:
        parts = []
        if self.file:
            where = self.file
            if self.line:
                where += f":{self.line}:{self.col}"
            parts.append(where)
        if self.key_path:
            parts.append(self.key_path)
        parts.append(self.reason)
        return ": ".join(parts)
