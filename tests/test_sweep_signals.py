"""SIGTERM during a serial sweep: the point running is cut short (not recorded as failed), the
finished ones stay committed, nothing else is written, the previous handler comes back, and
``--resume`` runs exactly the rest. (The Ray executor: tests/test_ray_security.py.)"""

from __future__ import annotations

import os
import signal

import pytest

from sim.output import storage
from sim.sweep import SweepTerminated
from test_sweep import attempts, fake_point, scenario, sweep


def _point_terminated_at_x3(scn, out, point_id):
    if scn["x"] == 3 and not scn.get("resumed"):
        os.kill(os.getpid(), signal.SIGTERM)  # delivered at once, in the middle of this point
    return fake_point({k: v for k, v in scn.items() if k != "resumed"}, out, point_id)


@pytest.mark.timeout(60, method="thread")
def test_sigterm_stops_a_serial_sweep_and_resume_finishes_it(tmp_path):
    raw = scenario(tmp_path)
    out = tmp_path / "out"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SweepTerminated):
        sweep(raw, out, executor="serial", point_fn=_point_terminated_at_x3)
    assert signal.getsignal(signal.SIGTERM) is before
    fs, base = storage.open_output(str(out))
    done = storage.committed_point_ids(fs, base)
    assert len(done) == 4  # x=1, 2 with two runs each, before the signal
    assert not (out / "points.parquet").exists() and not (out / "_failures").exists()

    res = sweep(raw, out, executor="serial", resume=True, point_fn=lambda s, o, p: _point_terminated_at_x3(
        {**s, "resumed": True}, o, p))
    assert res.n_failed == 0 and len(res.ran) == 4 and not set(res.ran) & done
    n = attempts(tmp_path)
    assert len(n) == 8 and set(n.values()) == {1}  # the point cut short had not counted its attempt yet
