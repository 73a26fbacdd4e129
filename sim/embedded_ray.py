"""Start (or join) the Ray that runs a sweep's points, safe by default.

An embedded Ray (a sweep given no cluster address) is a private, single-machine
instance, so it is started so that nobody else can use it:

* **Loopback only.** Its node IP is 127.0.0.1 and Ray is told this machine is not part of a
  multi-node cluster (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the switch Ray itself uses
  on laptops), so the GCS, the raylet (node manager and object manager), the workers' and
  the driver's gRPC servers and the runtime-env agent all listen on 127.0.0.1. Without
  this, Ray 2.60 binds most of them to every interface and anyone who can reach the
  machine can join the instance and run code as the user. After start-up the node IP is
  checked; a non-loopback one stops the sweep (fail closed).
* **Token authentication.** Unless ``RAY_AUTH_MODE`` is set, every request between its
  processes must carry a random token made for this run (``RAY_AUTH_MODE=token``,
  ``RAY_AUTH_TOKEN`` in the environment of the driver and of the processes it starts, never
  written to disk), so another local user cannot join through the loopback ports either.
  ``RAY_AUTH_MODE=disabled`` turns it off; ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``
  supply a token of your own.
* No dashboard (``include_dashboard=False``), no usage statistics
  (``RAY_DISABLE_USAGE_STATS=1``).
* **Reaped at the next start.** Each embedded instance records its process ids in
  ``$TMPDIR/dcsim-<uid>/ray-<driver pid>.json``; a driver killed with SIGKILL leaves that
  record behind, and the next embedded start kills the processes it names that are still
  alive (matched by pid *and* start time, so a reused pid is never hit). A clean shutdown
  deletes the record.

``ray.init`` changes process-wide state (environment variables, one Ray constant), so
:func:`start` returns a handle whose :meth:`EmbeddedRay.stop` shuts Ray down and restores
them: a sweep run from Python leaves the process as it found it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sim.errors import ScenarioError

__all__ = ["EmbeddedRay", "start", "is_loopback", "state_dir", "reap_stale"]

LOOPBACK = "127.0.0.1"
NOT_A_CLUSTER = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray: "0" = this machine only, node IP = loopback
log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``)."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host == "localhost"
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def state_dir() -> Path | None:
    """Folder (mode 0700) holding the records of this user's embedded Ray instances; None if it
    cannot be made, or is not this user's alone (someone else's folder could plant records)."""
    d = Path(tempfile.gettempdir()) / f"dcsim-{os.getuid()}"
    try:
        d.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(d)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return d


@dataclass
class EmbeddedRay:
    """A Ray instance this process connected to; ``started`` when it was started here."""

    started: bool
    record: Path | None = None
    _env: dict = field(default_factory=dict)  # variables to restore at stop (None: unset)
    _constant: bool | None = None  # Ray's ENABLE_RAY_CLUSTER before we changed it

    def stop(self) -> None:
        """Shut Ray down (if started here), delete the record, restore the environment."""
        if not self.started:
            return
        import ray

        ray.shutdown()
        if self.record is not None:
            self.record.unlink(missing_ok=True)
        for k, v in self._env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if self._constant is not None:
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = self._constant
        if "RAY_AUTH_MODE" in self._env:
            _refresh_ray_config()
        self.started = False


def _refresh_ray_config() -> None:
    """Make this process's Ray config read RAY_AUTH_MODE again (it is cached at first use),
    as ``ray.init`` itself does when it turns token authentication on."""
    from ray._raylet import Config

    Config.initialize("")


def start(address: str | None, num_cpus: int | None, **ray_options) -> EmbeddedRay:
    """Connect to the Ray at ``address`` (or ``$RAY_ADDRESS``), else start an embedded one
    (``ray_options``: further ``ray.init`` arguments for it, e.g. ``object_store_memory``)."""
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    address = address or os.environ.get("RAY_ADDRESS") or None
    import ray

    if ray.is_initialized():
        return EmbeddedRay(started=False)
    if address:
        # a cluster: its own operator decides binding and authentication (docs/sweeps.md)
        ray.init(address=address, logging_level=logging.WARNING)
        return EmbeddedRay(started=False)
    return _start_embedded(num_cpus, ray_options)


def _start_embedded(num_cpus: int | None, ray_options: dict) -> EmbeddedRay:
    import ray
    from ray._private import ray_constants

    reap_stale()
    wanted = {NOT_A_CLUSTER: "0"}
    if "RAY_AUTH_MODE" not in os.environ:
        wanted["RAY_AUTH_MODE"] = "token"
        if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
            wanted["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    handle = EmbeddedRay(started=True, _env={k: os.environ.get(k) for k in wanted},
                         _constant=ray_constants.ENABLE_RAY_CLUSTER)
    try:
        os.environ.update(wanted)
        # the constant is read when ray is imported; this process may have imported it already
        ray_constants.ENABLE_RAY_CLUSTER = False
        if "RAY_AUTH_MODE" in wanted:
            _refresh_ray_config()
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address=LOOPBACK,
                 logging_level=logging.WARNING, **ray_options)
        node_ip = ray.util.get_node_ip_address()
        if not is_loopback(node_ip):
            raise RuntimeError(f"the embedded Ray came up on {node_ip}, not on loopback; refusing to run on it")
        handle.record = _write_record()
    except BaseException:
        handle.stop()
        raise
    return handle


# --------------------------------------------------------------------------- stale instances
def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, /proc/PID/stat field 22)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[19]


def _descendants(pid: int) -> list[int]:
    import psutil  # ships with Ray (ray/thirdparty_files), importable once ray is imported

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _write_record() -> Path | None:
    """Record this driver and the Ray processes it started (gcs_server, raylet, agents, workers)."""
    import ray

    me = os.getpid()
    pids = _descendants(me)  # update_record adds those started later (workers)
    node = ray._private.worker._global_node
    record = {
        "driver": [me, _proc_start(me)],
        "session_dir": node.get_session_dir_path() if node is not None else None,
        "processes": [[p, _proc_start(p)] for p in pids],
    }
    directory = state_dir()
    if directory is None:
        return None
    path = directory / f"ray-{me}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)
    return path


def update_record(handle: EmbeddedRay) -> None:
    """Add Ray processes started since the record was written (workers spawned for tasks)."""
    if handle.record is None or not handle.record.exists():
        return
    try:
        record = json.loads(handle.record.read_text())
    except (OSError, ValueError):
        return
    known = {p for p, _ in record["processes"]}
    new = [p for p in _descendants(os.getpid()) if p not in known]
    if new:
        record["processes"] += [[p, _proc_start(p)] for p in new]
        tmp = handle.record.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(handle.record)


def reap_stale(directory: Path | None = None) -> list[int]:
    """Kill what embedded Ray instances of dead drivers left running; return the pids killed.

    A record whose driver is alive (same pid and start time) belongs to a sweep still
    running and is left alone. Processes are killed only if their start time matches the
    recorded one."""
    directory = directory or state_dir()
    killed: list[int] = []
    if directory is None:
        return killed
    for path in sorted(directory.glob("ray-*.json")):
        try:
            record = json.loads(path.read_text())
            driver_pid, driver_start = record["driver"]
            procs = [(int(p), s) for p, s in record["processes"]]
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # unreadable: nothing we could match safely
            continue
        if driver_start is not None and _proc_start(int(driver_pid)) == driver_start:
            continue
        for pid, started in procs:
            if started is not None and _proc_start(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except OSError:
                    pass
        path.unlink(missing_ok=True)
    if killed:
        log.warning("stopped %d process(es) left by an embedded Ray whose sweep driver was killed", len(killed))
    return killed


# How long a sweep waits to reach a Ray cluster's address before it says it cannot.
CONNECT_TIMEOUT_S = 5.0


def check_options(executor: str, address: str | None, num_cpus: int | None, max_in_flight: int | None,
                  max_retries: int) -> None:
    """Refuse impossible sweep options before anything is written or started: ScenarioError
    naming the option. With Ray and an address (``--address`` or ``$RAY_ADDRESS``), that address
    must accept a TCP connection within CONNECT_TIMEOUT_S (Ray itself retries for minutes)."""
    if executor not in ("ray", "serial"):
        raise ScenarioError("", "--executor", f"unknown executor {executor!r} (ray or serial)")
    if num_cpus is not None and (isinstance(num_cpus, bool) or not 1 <= num_cpus <= 65536):
        raise ScenarioError("", "--num-cpus", f"must be from 1 to 65536, got {num_cpus}")
    if max_in_flight is not None and (isinstance(max_in_flight, bool) or not 1 <= max_in_flight <= 10**6):
        raise ScenarioError("", "--max-in-flight", f"must be from 1 to 1000000, got {max_in_flight}")
    if isinstance(max_retries, bool) or not 0 <= max_retries <= 100:
        raise ScenarioError("", "--max-retries", f"must be from 0 to 100, got {max_retries}")
    if executor != "ray":
        return
    key = "--address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None or address in ("auto", "local"):
        return
    target = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = target.rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ScenarioError("", key, f"expected HOST:PORT or ray://HOST:PORT, got {address[:80]!r}")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, UnicodeError) as e:
        why = "timed out" if isinstance(e, socket.timeout) else (getattr(e, "strerror", None) or type(e).__name__)
        raise ScenarioError("", key, f"cannot reach Ray at {host}:{port} ({why}; waited at most "
                                     f"{CONNECT_TIMEOUT_S:g} s)") from None
