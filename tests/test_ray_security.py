"""The embedded Ray of ``dcsim sweep`` as the operating system sees it: every listening socket
of the driver and of every process it started is on loopback, the GCS refuses a client
without the run's token, and SIGTERM ends the sweep with exit 143, one line and no Ray
process left behind. Plus: the record that lets the next start reap what a SIGKILLed
driver left."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from sim import embedded_ray

REPO = Path(__file__).resolve().parents[1]


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _listeners(procs: list[psutil.Process]) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every TCP socket listening and UDP socket bound."""
    names = {p.pid: p.name() for p in procs}
    return [(c.laddr.ip, c.laddr.port, names[c.pid]) for c in psutil.net_connections("inet")
            if c.pid in names and c.laddr and (c.status == psutil.CONN_LISTEN or
                                               (c.type == socket.SOCK_DGRAM and not c.raddr))]


def _running_point(pid: int, timeout: float) -> list[psutil.Process]:
    """Wait until a sweep point runs in a Ray worker of the driver ``pid``; its process tree."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs = _tree(pid)
        if any(p.name() == "ray::dcsim-point" for p in procs):
            return procs
        time.sleep(0.5)
    raise AssertionError("no sweep point started")


GCS_PROBE = """
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1]).internal_kv_keys(b"", namespace=None, timeout=5)
    print("joined")
except Exception as e:
    print(type(e).__name__)
"""


def _probe_gcs(address: str, token: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token} if token else {"RAY_AUTH_MODE": "disabled"})
    proc = subprocess.run([sys.executable, "-c", GCS_PROBE, address], capture_output=True, text=True, timeout=60,
                          env=env)
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]


@pytest.mark.timeout(240, method="thread")
def test_embedded_ray_listens_on_loopback_only_needs_its_token_and_stops_on_sigterm(tmp_path):
    raw = yaml.safe_load((REPO / "scenarios" / "quickstart.yaml").read_text())
    raw.update(duration_s=3600, warmup_s=5)  # points that outlast the checks below
    raw["sweep"] = {"grid": {"workload.classes.chat.arrival.rate_per_s": [2, 3]}}
    scn = tmp_path / "long.yaml"
    scn.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "sim.cli", "sweep", str(scn), "--out", str(tmp_path / "out"), "--num-cpus", "1",
           "--no-progress"]
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        procs = _running_point(driver.pid, timeout=150)
        time.sleep(1.0)  # let every agent open its ports
        procs = _tree(driver.pid)
        listening = _listeners(procs)
        names = {n for _, _, n in listening}
        # the driver, the GCS, the raylet and the worker running the point all listen ...
        assert {"gcs_server", "raylet", "ray::dcsim-point"} <= names and len(listening) >= 5, listening
        # ... and not one of them beyond loopback (0.0.0.0, ::, or an interface's address)
        assert all(embedded_ray.is_loopback(ip) for ip, _, _ in listening), listening

        # token authentication: the GCS refuses a client without the run's token, takes one with it
        gcs = next(p for p in procs if p.name() == "gcs_server")
        port = next(port for _, port, n in listening if n == "gcs_server")
        token = dict(line.split("=", 1) for line in
                     Path(f"/proc/{gcs.pid}/environ").read_text().split("\0") if "=" in line)["RAY_AUTH_TOKEN"]
        assert _probe_gcs(f"127.0.0.1:{port}", None) == "AuthenticationError"
        assert _probe_gcs(f"127.0.0.1:{port}", token) == "joined"

        # SIGTERM: exit 143 with one line, every Ray process of the sweep gone
        driver.send_signal(signal.SIGTERM)
        out, err = driver.communicate(timeout=60)
        assert driver.returncode == 143, err[-2000:]
        assert err.strip().count("\n") == 0 and "--resume" in err, err[-2000:]
        assert "Traceback" not in err and "SIGTERM" in err
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                                                  for p in procs[1:]):
            time.sleep(0.5)
        left = [p.name() for p in procs[1:] if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not left, left
        assert not list(embedded_ray.state_dir().glob(f"ray-{driver.pid}.json"))  # its record went with it
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()


def test_reap_stale_kills_only_the_processes_a_dead_driver_recorded(tmp_path):
    """The record a SIGKILLed driver leaves: the next start kills what it names that still
    runs with the recorded start time; a live driver's record and a reused pid are left alone."""
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        start = embedded_ray._proc_start
        (tmp_path / "ray-1.json").write_text(json.dumps({
            "driver": [dead.pid, "1"],  # gone (its start time no longer matches anything)
            "processes": [[orphan.pid, start(orphan.pid)], [bystander.pid, "12345"]],  # pid reused since
        }))
        (tmp_path / "ray-2.json").write_text(json.dumps({  # a sweep still running: this process
            "driver": [os.getpid(), start(os.getpid())], "processes": [[bystander.pid, start(bystander.pid)]],
        }))
        assert embedded_ray.reap_stale(tmp_path) == [orphan.pid]
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        assert bystander.poll() is None
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ray-2.json"]
    finally:
        for p in (orphan, bystander):
            p.kill()
            p.wait()


def test_records_go_only_to_a_folder_of_this_user_alone(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    d = embedded_ray.state_dir()
    assert d == tmp_path / f"dcsim-{os.getuid()}" and (d.stat().st_mode & 0o777) == 0o700
    d.chmod(0o777)  # a folder others can write to could hold planted records: not used
    assert embedded_ray.state_dir() is None and embedded_ray.reap_stale() == []


@pytest.mark.parametrize("host, loop", [("127.0.0.1", True), ("127.0.0.5", True), ("::1", True),
                                        ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("::", False),
                                        ("192.0.2.2", False), ("::ffff:10.0.0.1", False), ("fe80::1%eth0", False)])
def test_is_loopback(host, loop):
    assert embedded_ray.is_loopback(host) is loop
