"""A job's random streams, made from seed words mixed once per class and job (sim.workloads.jobs._Streams),
are the generators sim.rng.stream makes."""

import numpy as np
import pytest

from sim.workloads import jobs
from sim import rng as R
from sim.rng import SeedMixer


@pytest.mark.parametrize("seed", [0, 1, 7, 2**31, 2**32 + 5, 2**64 + 3, 2**130 + 9, 123456789012])
@pytest.mark.parametrize("run", [0, 3, 2**33])
def test_job_streams_equal_rng_stream(seed, run):
    name = "jobs/math-vote"
    mixer = SeedMixer.of(seed, run, (R.name_key(name),))
    for index in (0, 1, 977, 2**32 - 1, 2**32, 2**40 + 7):
        streams = jobs._Streams(mixer, index)
        for purpose in (6, 0, 3, 2):  # in any order, each made once
            g, want = streams[purpose], R.stream(seed, run, name, index, purpose)
            assert g.bit_generator.state == want.bit_generator.state
            assert np.array_equal(g.random(5), want.random(5))
            assert streams[purpose] is g


def test_seed_mixer_equals_numpy_seed_sequence():
    key = (R.name_key("x"), 5, 2**35 + 1, 0)
    for cut in range(len(key) + 1):
        mixer = SeedMixer.of(11, 2, key[:cut]).extend(*key[cut:])
        want = np.random.SeedSequence(entropy=[11, 2], spawn_key=key).generate_state(4, np.uint64)
        assert np.array_equal(mixer.seed(), want)
