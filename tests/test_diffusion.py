"""Diffusion serving (sim/models/diffusion.py): cards, the per-step cost model, the batching replica."""

import dataclasses
import math

import pyarrow as pa
import pytest
import simpy
import yaml

from sim.hardware import catalog
from sim.engine.diffusion import DiffusionJob, DiffusionReplica
from sim.models.diffusion import DiffusionPerf, cards, latent_frames, load_card
from sim.output.trace import VIDEOS_SCHEMA
from sim.errors import ScenarioError
from sim.models.parallel import ring_allreduce_s
from sim.models.power import PowerModel
from sim.output.trace import STEPS_SCHEMA

H100 = catalog.accelerator("h100-sxm")
H200 = catalog.accelerator("h200")
FLUX = load_card("flux.1-dev")
WAN = load_card("wan2.1-t2v-14b")
AREA_720P = (1280 * 720) / (832 * 480)  # Wan 720P pixel area over its 480P default


def power_model(acc=H100, devices=1):
    return PowerModel(acc, acc.peak_flops("bf16"), devices=devices, **catalog.calibration(acc.name).power)


# ----------------------------------------------------------------------------- cards

def test_unknown_model_names_source_and_key():
    with pytest.raises(ScenarioError) as err:
        load_card("flux-9000", "scenario.yaml", "datacenter.pools.img.model")
    e = err.value
    assert e.source == "scenario.yaml" and e.key_path == "datacenter.pools.img.model"
    assert "unknown diffusion model 'flux-9000'" in str(e)
    assert "flux.1-dev" in str(e) and "wan2.1-t2v-14b" in str(e)  # lists the known ones


def test_every_card_number_cites_a_source():
    folder = catalog.hardware_dir() / "diffusion"
    assert set(cards()) >= {"flux.1-dev", "wan2.1-t2v-14b"}
    for f in folder.glob("*.yaml"):
        raw = yaml.safe_load(f.read_text())
        assert raw["name"] == f.stem
        for k, v in raw.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                pytest.fail(f"{f.name}: {k} is a bare number, not {{value, source}}")
            if isinstance(v, dict) and "value" in v:
                src = str(v.get("source", ""))
                assert src, f"{f.name}: {k} has no source"
                key = src.split(" ")[0]
                assert key in raw.get("sources", {}) or key == "derived:" or "http" in src, f"{f.name}: {k}: {src}"


def test_parameter_counts_match_the_published_size():
    # token-visited linear weights are most of a DiT; FLUX's double blocks hold two streams' weights
    # (24 d^2 + adaLN per block) of which a token visits one, so its count is ~half of 12B.
    assert 0.80 < WAN.linear_params_per_token() / (WAN.params_billion * 1e9) < 0.90
    d = FLUX.hidden_size
    double, single = 19 * (24 * d * d + 12 * d * d), 38 * (12 * d * d + 3 * d * d)  # + adaLN modulation
    assert abs((double + single) / 1e9 - FLUX.params_billion) / FLUX.params_billion < 0.02


def test_latent_token_counts():
    flux, wan = DiffusionPerf(FLUX, H100), DiffusionPerf(WAN, H100)
    assert latent_frames(WAN, 81) == 21 and latent_frames(WAN, 1) == 1 and latent_frames(WAN, 82) == 22
    assert wan.latent_tokens(81) == 32760 and wan.tokens(81) == 32760  # cross-attention: text not in sequence
    assert flux.latent_tokens(1) == 4096 and flux.tokens(1) == 4096 + 512  # joint attention
    assert flux.latent_tokens(1, 0.25) == 1024  # 512x512
    assert wan.latent_tokens(81, AREA_720P) == 21 * 3600  # 45 x 80 tokens per latent frame at 1280x720


# ----------------------------------------------------------------------------- cost model

def exponent(perf, tok_a, tok_b):
    ta, tb = perf.step_cost(1, tok_a).time_s[0], perf.step_cost(1, tok_b).time_s[0]
    return math.log(tb / ta) / math.log(tok_b / tok_a)


def test_step_time_quadratic_for_long_video_linear_for_small_images():
    wan, flux = DiffusionPerf(WAN, H100), DiffusionPerf(FLUX, H100)
    video = exponent(wan, wan.tokens(161), wan.tokens(321))  # 41 -> 81 latent frames, attention dominates
    image = exponent(flux, flux.tokens(1, 0.25), flux.tokens(1, 0.5))  # 512^2 -> ~724^2, GEMMs dominate
    assert video > 1.7, video
    assert 0.8 < image < 1.25, image


def test_cfg_doubles_the_work():
    one = DiffusionPerf(dataclasses.replace(WAN, cfg_forwards_per_step=1), H100)
    two = DiffusionPerf(WAN, H100)
    tok = two.tokens(81)
    c1, c2 = one.step_cost(1, tok), two.step_cost(1, tok)
    assert c2.flops[0] == pytest.approx(2 * c1.flops[0], rel=1e-12)
    assert 1.9 < c2.time_s[0] / c1.time_s[0] < 2.0  # the weights are read once either way


def test_batching_amortizes_weights_but_compute_bound_steps_scale():
    wan, flux = DiffusionPerf(WAN, H100), DiffusionPerf(FLUX, H100)
    tok = wan.tokens(81)
    t1, t4 = wan.step_cost(1, tok).time_s[0], wan.step_cost(4, tok).time_s[0]
    assert t1 < t4 < 4 * t1 and t4 / (4 * t1) > 0.98  # compute-bound: close to 4x
    small = flux.tokens(1, 1 / 16)  # 256x256: 256 latent + 512 text tokens
    s1, s4 = flux.step_cost(1, small).time_s[0], flux.step_cost(4, small).time_s[0]
    assert s1 < s4 < 0.85 * 4 * s1  # weight reads and overhead shared by the batch
    v1, v4 = flux.vae_decode_cost(1, 1).time_s[0], flux.vae_decode_cost(4, 1).time_s[0]
    assert v4 == pytest.approx(4 * v1)


def test_tensor_parallel_halves_compute_and_adds_allreduces():
    p1, p2 = DiffusionPerf(WAN, H100, tp=1), DiffusionPerf(WAN, H100, tp=2)
    tok = p1.tokens(81)
    c1, c2 = p1.step_cost(1, tok), p2.step_cost(1, tok)
    assert c2.compute_s[0] == pytest.approx(c1.compute_s[0] / 2, rel=1e-12)
    assert c2.flops[0] == pytest.approx(c1.flops[0] / 2, rel=1e-12)
    ovh = p1.eff["iteration_overhead_s"]
    seqs = WAN.cfg_forwards_per_step
    comm = 2 * WAN.num_layers * ring_allreduce_s(seqs * tok * WAN.hidden_size * 2.0, 2, p2.link_bw,
                                                  p2.eff["link_latency_s"])
    assert comm > 0
    assert c2.time_s[0] == pytest.approx(ovh + (c1.time_s[0] - ovh) / 2 + comm, rel=1e-9)
    assert p2.weight_bytes_device() == pytest.approx(p1.weight_bytes_device() / 2)


def test_fp8_weights_use_the_fp8_peak_for_linear_layers():
    bf, f8 = DiffusionPerf(FLUX, H100), DiffusionPerf(FLUX, H100, weight_dtype="fp8")
    tok = bf.tokens(1)
    assert f8.step_cost(1, tok).time_s[0] < 0.8 * bf.step_cost(1, tok).time_s[0]
    with pytest.raises(TypeError):
        DiffusionPerf(FLUX, H100, efficiency={"gemm_efficency": 0.5})


# Published end-to-end timings (single GPU, bf16, no caching or step distillation):
# * FLUX.1-dev, 1024x1024, 28 steps, 1x H100: 6.71 s eager PyTorch, 4.30 s with torch.compile
#   (xDiT, docs/performance/flux.md, https://github.com/xdit-project/xDiT); 7.11 s eager diffusers BF16
#   (https://github.com/varadrane1707/BenchmarkFlux README, H100 table).
# * Wan2.1 14B (I2V-480P / I2V-720P; same DiT as T2V-14B plus 257 CLIP image tokens in the
#   cross-attention), 81 frames, 40 steps, CFG on, 1x H200, official Wan2.1 code: 366 s at 480P,
#   974 s at 720P (LightX2V benchmark, docs/EN/source/getting_started/benchmark_source.md,
#   https://github.com/ModelTC/LightX2V).
PUBLISHED = [
    ("flux.1-dev", "h100-sxm", 1, 28, 1.0, 4.30),
    ("flux.1-dev", "h100-sxm", 1, 28, 1.0, 6.71),
    ("flux.1-dev", "h100-sxm", 1, 28, 1.0, 7.11),
    ("wan2.1-t2v-14b", "h200", 81, 40, 1.0, 366.0),
    ("wan2.1-t2v-14b", "h200", 81, 40, AREA_720P, 974.0),
]


@pytest.mark.parametrize("model,acc,frames,steps,scale,seconds", PUBLISHED)
def test_published_timings_within_a_factor_of_two(model, acc, frames, steps, scale, seconds):
    perf = DiffusionPerf(load_card(model), catalog.accelerator(acc))
    predicted = perf.job_time_s(frames, steps, 1, scale)
    assert seconds / 2 < predicted < seconds * 2, (predicted, seconds)


# ----------------------------------------------------------------------------- replica

class Harness:
    def __init__(self, max_batch=4, devices=1, tp=1, card=FLUX, price=0.0, usd_per_j=0.0):
        self.env = simpy.Environment()
        self.perf = DiffusionPerf(card, H100, tp=tp)
        self.power = power_model(devices=devices)
        self.rows, self.steps, self.done = [], [], []
        self.rep = DiffusionReplica(self.env, 3, "gen", self.perf, self.power, devices, max_batch,
                                    self.rows.append, self.steps.append, price, usd_per_j)

    def at(self, t, job):
        def go():
            yield self.env.timeout(t)
            job.arrival_s = self.env.now
            self.rep.submit(job)
        self.env.process(go())
        return job

    def job(self, t, jid, frames=1, steps=28, scale=1.0):
        return self.at(t, DiffusionJob(jid, "img", t, frames, steps, scale, on_done=self.done.append))

    def kind_energy(self, kind):
        return sum(r[12] for r in self.steps if r[2] == kind)


def test_lone_job_latency_is_steps_times_step_plus_decode():
    h = Harness()
    j = h.job(5.0, 1)
    h.env.run()
    step = h.perf.step_cost(1, h.perf.tokens(1)).time_s[0]
    vae = h.perf.vae_decode_cost(1, 1).time_s[0]
    assert j.status == "finished" and j.batch == 1 and j.admitted_s == 5.0
    assert j.latency_s == pytest.approx(28 * step + vae, rel=1e-12)
    assert j.latency_s == pytest.approx(h.perf.job_time_s(1, 28), rel=1e-12)
    assert h.done == [j] and h.rep.outstanding == 0


def test_batches_only_same_shape_jobs_up_to_max_batch():
    h = Harness(max_batch=2)
    a1, b2, a3, a4, b5 = (h.job(0.0, 1), h.job(0.0, 2, scale=0.25), h.job(0.0, 3), h.job(0.0, 4),
                          h.job(0.0, 5, scale=0.25))
    h.env.run()
    assert [j.batch for j in (a1, b2, a3, a4, b5)] == [2, 2, 2, 1, 2]
    assert a1.admitted_s == a3.admitted_s == 0.0  # oldest job and the next of its shape
    assert b2.admitted_s == b5.admitted_s == a1.finish_s  # then the oldest waiting job's shape
    assert a4.admitted_s == b2.finish_s  # max_batch left it for a later batch
    batches = [r for r in h.steps if r[2] == "diffusion"]
    assert [r[6] for r in batches] == [2, 2, 1] and max(r[6] for r in batches) <= 2
    # a batch of two takes less than two lone runs but more than one
    lone = h.perf.job_time_s(1, 28)
    assert lone < a1.finish_s - a1.admitted_s < 2 * lone
    assert all(j.status == "finished" for j in (a1, b2, a3, a4, b5))


def test_energy_of_jobs_sums_to_busy_energy_and_idle_gaps_draw_idle_power():
    h = Harness(devices=1)
    j1, j2, j3 = h.job(0.0, 1), h.job(0.0, 2), h.job(100.0, 3, scale=0.5)
    h.env.run()
    busy = h.kind_energy("diffusion")
    assert sum(j.energy_j for j in (j1, j2, j3)) == pytest.approx(busy, rel=1e-12)
    assert j1.energy_j == pytest.approx(j2.energy_j) and j1.device_s == pytest.approx(j1.latency_s / 2)
    assert h.rep.energy_j == pytest.approx(busy + h.kind_energy("idle"), rel=1e-12)
    gap = 100.0 - j1.finish_s
    idle = [r for r in h.steps if r[2] == "idle" and r[3] == pytest.approx(j1.finish_s)]
    assert len(idle) == 1 and idle[0][4] == 100.0
    assert idle[0][12] == pytest.approx(h.power.idle_w * 1 * gap, rel=1e-12)
    # batch energy = steps x step energy + decode energy, from the power model
    step, w = h.power.under_cap(h.perf.step_cost(2, h.perf.tokens(1)))
    vae, wv = h.power.under_cap(h.perf.vae_decode_cost(2, 1))
    expect = 28 * step.time_s[0] * w[0] + vae.time_s[0] * wv[0]
    assert j1.energy_j + j2.energy_j == pytest.approx(expect, rel=1e-12)
    assert h.power.idle_w < expect / (j1.finish_s - j1.admitted_s) <= H100.tdp_w


def test_multi_device_replica_counts_every_device():
    h = Harness(devices=2, tp=2, card=WAN, price=1e-3, usd_per_j=1e-6)
    j = h.job(0.0, 1, frames=17, steps=4)
    h.env.run(until=1e6)
    h.rep.finish(1e6)
    assert j.status == "finished"
    assert j.device_s == pytest.approx(2 * j.latency_s)
    assert j.cost_usd == pytest.approx(j.device_s * 1e-3 + j.energy_j * 1e-6)
    idle = [r for r in h.steps if r[2] == "idle"][-1]
    assert idle[12] == pytest.approx(2 * h.power.idle_w * (1e6 - j.finish_s), rel=1e-9)


def test_finish_cuts_the_batch_in_flight_and_times_out_the_rest():
    h = Harness(max_batch=1)
    j1, j2 = h.job(0.0, 1), h.job(0.0, 2)
    lone = h.perf.job_time_s(1, 28)
    t_end = 1.5 * lone
    h.env.run(until=t_end)
    h.rep.finish(t_end)
    h.env.run(until=10 * lone)  # the cut batch's end event must not finish anything
    assert j1.status == "finished" and j2.status == "timed-out" and math.isnan(j2.finish_s)
    partial = [r for r in h.steps if r[2] == "partial"]
    assert len(partial) == 1 and partial[0][4] == t_end
    assert j2.energy_j == pytest.approx(partial[0][12], rel=1e-12)
    assert h.rep.outstanding == 0 and len(h.rows) == 2 and h.rep.batches == 1
    total = sum(r[12] for r in h.steps)
    assert h.rep.energy_j == pytest.approx(total, rel=1e-12)
    assert h.steps[-1][4] <= t_end


def test_rows_fit_the_schemas():
    h = Harness()
    h.job(0.0, 1), h.job(1.0, 2, frames=1, steps=4)
    h.env.run(until=2.0)
    h.rep.finish(2.0)
    videos = pa.Table.from_pylist([dict(zip(VIDEOS_SCHEMA.names, r)) for r in h.rows], schema=VIDEOS_SCHEMA)
    steps = pa.Table.from_pylist([dict(zip(STEPS_SCHEMA.names, r)) for r in h.steps], schema=STEPS_SCHEMA)
    assert videos.num_rows == 2 and set(videos.column("status").to_pylist()) == {"timed-out"}
    assert steps.num_rows >= 1 and all(len(r) == len(STEPS_SCHEMA) for r in h.steps)
    assert all(len(r) == len(VIDEOS_SCHEMA) for r in h.rows)
