"""The ``dcsim`` command line: parser, commands and their terminal display."""

from sim.cli.main import main

__all__ = ["main"]
