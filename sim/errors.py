"""Errors a user can act on: each names the file, the key path and the problem in one line."""

from __future__ import annotations


class ScenarioError(ValueError):
    """A scenario (or card) that cannot be simulated as written.

    ``str()`` is a single line ``file: key.path: message`` so the CLI can print it
    as is and exit with status 2.
    """

    def __init__(self, source: str, key_path: str, message: str):
        self.source = source
        self.key_path = key_path
        self.message = message
        where = f"{source}: " if source else ""
        key = f"{key_path}: " if key_path else ""
        super().__init__(f"{where}{key}{message}")
