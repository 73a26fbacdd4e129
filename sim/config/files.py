"""Reading files a scenario names (the scenario itself, traces, CSV tables), safely.

A path in a scenario is user input: it may name a device (``/dev/zero``), a FIFO that blocks
forever, a folder, a huge file or a file that is not text at all. :func:`read_user_bytes` reads
only regular files up to :func:`max_file_bytes` (``DCSIM_MAX_FILE_MB``, see sim.config.limits)
and :func:`read_user_text` also requires UTF-8. Their errors are :class:`~sim.errors.ScenarioError`
naming the file, the key and the problem, and never quote the file's contents.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sim.config.limits import env_limit
from sim.errors import ScenarioError

__all__ = ["max_file_bytes", "check_user_file", "read_user_bytes", "read_user_text"]


def max_file_bytes() -> int:
    """Largest file a scenario may make dcsim read (``DCSIM_MAX_FILE_MB``, default 1024 MiB)."""
    return int(env_limit("max_file_mb") * 1024 * 1024)


def check_user_file(path: str | Path, key: str, what: str = "file") -> int:
    """Size in bytes of ``path`` if it is a regular file within the size limit; else
    ScenarioError. Never opens the file (opening a FIFO blocks)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ScenarioError(str(path), key, f"cannot read {what} ({e.strerror or type(e).__name__})") from None
    except ValueError:  # a NUL byte in the path
        raise ScenarioError(str(path).replace("\0", "\\0"), key, f"cannot read {what} (the path holds a NUL byte)") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket")
        raise ScenarioError(str(path), key, f"{what} is {kind}, not a regular file")
    limit = max_file_bytes()
    if st.st_size > limit:
        raise ScenarioError(str(path), key, f"{what} is {st.st_size / 2**20:.0f} MiB, above the limit of "
                                            f"{limit / 2**20:.0f} MiB (set DCSIM_MAX_FILE_MB to raise it)")
    return st.st_size


def read_user_bytes(path: str | Path, key: str, what: str = "file", limit: int | None = None) -> bytes:
    """The bytes of a regular file named by a scenario, at most ``limit`` (default the file
    limit); ScenarioError otherwise."""
    check_user_file(path, key, what)
    limit = max_file_bytes() if limit is None else limit
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as e:
        raise ScenarioError(str(path), key, f"cannot read {what} ({e.strerror or type(e).__name__})") from None
    if len(data) > limit:  # grew since it was checked, or a smaller limit
        raise ScenarioError(str(path), key, f"{what} is larger than {limit / 2**20:.0f} MiB")
    return data


def read_user_text(path: str | Path, key: str, what: str = "file", limit: int | None = None) -> str:
    """:func:`read_user_bytes` decoded as UTF-8 (a byte-order mark is dropped); a file that is
    not UTF-8 text (binary, UTF-16) is refused without quoting it."""
    data = read_user_bytes(path, key, what, limit)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ScenarioError(str(path), key, f"{what} is not UTF-8 text (undecodable byte at offset {e.start})") from None
    if "\0" in text:
        raise ScenarioError(str(path), key, f"{what} is not text (it holds NUL bytes)")
    return text
