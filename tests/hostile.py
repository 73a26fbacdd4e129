"""Helpers of the hostile-input tests: run ``dcsim`` in this process under a time and memory guard
and check the bad-input contract (exit 2, one line on stderr, no traceback, nothing written)."""

from __future__ import annotations

import contextlib
import copy
import os
import resource
import signal
import time
from pathlib import Path

import yaml

from sim.cli.main import main

# per case: wall seconds, and address space above what the process already has
CASE_SECONDS = 20.0
CASE_EXTRA_BYTES = 3 << 30
ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))


class CaseTimeout(BaseException):
    """Raised by the timer inside a case that ran too long (a BaseException, so the CLI's own
    error handling cannot turn it into an exit status)."""


def _vm_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def guard(seconds: float = CASE_SECONDS, extra_bytes: int = CASE_EXTRA_BYTES):
    """Bound the wall time (SIGALRM) and the address space (RLIMIT_AS) of the enclosed code; both
    are restored afterwards. A case that needs more raises CaseTimeout or MemoryError."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_bytes() + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)

    def expire(signum, frame):
        raise CaseTimeout(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def tree(folder: Path) -> set[str]:
    """Every path under ``folder`` (files and folders), relative."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} | {"."} if folder.exists() else set()


def run_cli(argv: list[str], capsys, watch: Path | None = None, seconds: float = CASE_SECONDS):
    """(exit status, stdout, stderr, seconds) of ``dcsim argv`` run in this process; with ``watch``
    the test asserts nothing was created or removed under that folder."""
    before = tree(watch) if watch is not None else None
    capsys.readouterr()
    t0 = time.perf_counter()
    with guard(seconds):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # argparse
            rc = e.code
    wall = time.perf_counter() - t0
    out, err = capsys.readouterr()
    if watch is not None:
        after = tree(watch)
        assert after == before, f"{argv}: files appeared or vanished: {sorted(after ^ before)[:5]}"
    return rc, out, err, wall


def assert_refused(argv, capsys, watch: Path | None = None, words: tuple[str, ...] = (), secret: str | None = None,
                   seconds: float = CASE_SECONDS) -> str:
    """The bad-input contract: exit 2, exactly one line on stderr that starts ``error:``, no
    traceback, not an out-of-memory refusal (a bound must catch it first), ``words`` in it, not
    ``secret``; nothing written under ``watch``. Returns the line."""
    rc, out, err, wall = run_cli(argv, capsys, watch, seconds)
    lines = err.strip().splitlines()
    assert rc == 2, f"{argv}: exit {rc}, stderr {err[-500:]!r}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{argv}: stderr {err[-800:]!r}"
    assert "Traceback" not in err and "out of memory" not in err, err
    for w in words:
        assert w in lines[0], f"{argv}: {w!r} not in {lines[0]!r}"
    if secret is not None:
        assert secret not in err and secret not in out, f"{argv}: file contents printed: {err!r}"
    return lines[0]


def write(folder: Path, raw, name: str = "s.yaml") -> Path:
    """``raw`` as a YAML file in ``folder`` (text written as is)."""
    p = folder / name
    p.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return p


def numeric_leaves(node, path: tuple = ()):
    """(path tuple, value) of every number (not bool) in a raw scenario, its sweep left out."""
    if isinstance(node, dict):
        for k, v in node.items():
            if path == () and k == "sweep":
                continue
            yield from numeric_leaves(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from numeric_leaves(v, path + (i,))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


def with_value(raw: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(raw)
    node = out
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return out


def dotted(path: tuple) -> str:
    s = ""
    for k in path:
        s += f"[{k}]" if isinstance(k, int) else (f".{k}" if s else str(k))
    return s


def shipped_raw(name: str) -> dict:
    """A shipped scenario as a dict with its data paths made absolute (so copies run elsewhere)."""
    raw = yaml.safe_load((ROOT / "scenarios" / name).read_text())
    return absolutize(raw)


def absolutize(node):
    if isinstance(node, dict):
        return {k: (str(ROOT / "scenarios" / v) if k == "path" and isinstance(v, str) and not os.path.isabs(v)
                    and (ROOT / "scenarios" / v).exists() else absolutize(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [absolutize(v) for v in node]
    return node
