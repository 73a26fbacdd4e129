"""Errors a user can act on: each names the file, the key path and the problem in one line."""

from __future__ import annotations


class ScenarioError(ValueError):
    """A scenario (or card) that cannot be simulated as written.

    ``str()`` is a single line ``file: key.path: message`` so the CLI can print it
    as is and exit with status 2.
    """

    def __init__(self, source: str, key_path: str, message: str):
        super().__init__(source, key_path, message)  # args rebuild the error when it is copied or pickled
        self.source = source
        self.key_path = key_path
        self.message = message

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        key = f"{self.key_path}: " if self.key_path else ""
        return f"{where}{key}{self.message}"
