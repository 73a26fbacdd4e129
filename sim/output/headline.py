"""Headline metrics: which summary columns a run's table and a sweep's table show first, their
labels, and how a value is written. One place for both views, read by the CLI, the report and
notebooks.

``utilization`` is the share of replica time spent running a batch (of any size): 100% says a
replica was never idle, not that its batch was full; the mean running batch says how full.
"""

from __future__ import annotations

import json
import math
from typing import Any

P50_90_99 = ("p50", "p90", "p99")
HEADLINE = [  # (label, key or keys shown " / "-joined, format)
    ("calls measured", "calls_measured", "{:.0f}"),
    ("calls finished (all)", "calls_finished", "{:.0f}"),
    ("completed calls/s", "completed_per_s", "{:.2f}"),
    ("output tokens/s", "output_tokens_per_s", "{:,.0f}"),
    ("TTFT p50 / p90 / p99 (s)", tuple(f"ttft_{q}_s" for q in P50_90_99), "{:.4f}"),
    ("time per output token p50 / p90 / p99 (s)", tuple(f"tpot_{q}_s" for q in P50_90_99), "{:.4f}"),
    ("end-to-end p50 / p90 / p99 (s)", tuple(f"e2e_{q}_s" for q in P50_90_99), "{:.4f}"),
    ("queue wait mean (s)", "wait_mean_s", "{:.4f}"),
    ("utilization (busy share of replica time)", "utilization", "{:.1%}"),
    ("mean running batch", "mean_batch_seqs", "{:.1f}"),
    ("avg power per device (W)", "avg_device_power_w", "{:.0f}"),
    ("energy per output token (J, facility)", "energy_per_output_token_j", "{:.3f}"),
    ("$ per million output tokens", "usd_per_million_output_tokens", "{:.3f}"),
    ("cost of the window ($)", "cost_usd", "{:.4f}"),
]


JOB_HEADLINE = [
    ("jobs measured / finished (all)", ("jobs_measured", "jobs_finished"), "{:.0f}"),
    ("accuracy (sampled / expected)", ("accuracy", "expected_accuracy"), "{:.1%}"),
    ("job latency p50 / p90 / p99 (s)", tuple(f"job_latency_{q}_s" for q in P50_90_99), "{:.2f}"),
    ("$ per 1k jobs / per right answer", ("usd_per_1k_jobs", "usd_per_correct"), "{:.4f}"),
    ("energy per right answer (kJ, facility)", "energy_per_correct_kj", "{:.2f}"),
]


SESSION_HEADLINE = [
    ("sessions measured / finished (all)", ("sessions_measured", "sessions_finished"), "{:.0f}"),
    ("session end-to-end p50 / p90 (s)", ("session_e2e_p50_s", "session_e2e_p90_s"), "{:.1f}"),
    ("turn TTFT p50 / p90 / p99 (s)", tuple(f"turn_ttft_{q}_s" for q in P50_90_99), "{:.3f}"),
    ("KV GiB-s per session: device / pinned / host", ("session_kv_device_gib_s_mean", "session_kv_pinned_gib_s_mean",
                                                      "session_kv_host_gib_s_mean"), "{:,.0f}"),
    ("prompt tokens from cache / recomputed per session", ("session_cached_share", "session_recomputed_tokens_mean"),
     "{:,.2f}"),
    ("energy (kJ) / cost ($) per session", ("session_energy_kj_mean", "session_cost_usd_mean"), "{:.3f}"),
]


ECON_HEADLINE = [  # datacenter.economics (sim/models/economics.py)
    ("$ per hour: capex / facility / energy", ("capex_usd_per_hour", "facility_usd_per_hour", "energy_usd_per_hour"),
     "{:.3f}"),
    ("revenue / margin of the window ($)", ("revenue_usd", "margin_usd"), "{:.4f}"),
]


TRAINING_HEADLINE = [  # pools lending devices to training jobs
    ("training tokens/day / lost (M)", ("training_tokens_per_day_m", "training_tokens_lost_m"), "{:,.0f}"),
    ("training lost / ckpt / restart share", ("training_lost_work_share", "training_checkpoint_share",
                                                            "training_restart_share"), "{:.1%}"),
    ("gang wait (s) / preempted / failed", ("training_gang_wait_s", "training_preemptions",
                                                         "training_failures"), "{:,.0f}"),
    ("inference share on / SLO attained", ("shared_inference_share", "inference_slo_attainment"),
     "{:.2%}"),
    ("fleet energy (kWh) / cost ($)", ("fleet_facility_energy_kwh", "fleet_cost_usd"), "{:,.2f}"),
]


# Summary columns shown in the printed table when the point function returns them.
HEADLINE_METRICS = (
    "completed_per_s",
    "ttft_p50_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "e2e_p99_s",
    "utilization",
    "energy_per_output_token_j",
    "usd_per_million_output_tokens",
    "prompt_cached_share",
)

# ... and those shown for sweeps of test-time-compute jobs.
JOB_METRICS = (
    "accuracy",
    "expected_accuracy",
    "usd_per_1k_jobs_attributed",
    "usd_per_1k_jobs",
    "job_latency_p50_s",
    "job_latency_p90_s",
    "job_output_tokens_mean",
    "utilization",
)

# ... and for sweeps of agent sessions.
SESSION_METRICS = (
    "session_e2e_p50_s",
    "session_e2e_p90_s",
    "turn_ttft_p50_s",
    "turn_ttft_p90_s",
    "session_kv_device_gib_s_mean",
    "session_recomputed_tokens_mean",
    "session_energy_j_mean",
    "utilization",
)


# ... and for sweeps of pools shared with training.
TRAINING_METRICS = (
    "training_tokens_per_day",
    "training_waste_share",
    "shared_inference_share",
    "inference_slo_attainment",
    "ttft_p90_s",
    "tpot_p90_s",
    "fleet_facility_energy_j",
    "fleet_cost_usd",
)


# Short column headers of the sweep table (the summary column names are long); the note under
# the table points at summary.parquet for the full names and every other column.
METRIC_LABELS = {  # two lines at most, so columns stay as narrow as their values
    "completed_per_s": "calls/s",
    "ttft_p50_s": "TTFT\np50 s",
    "ttft_p99_s": "TTFT\np99 s",
    "tpot_p50_s": "TPOT\np50 s",
    "e2e_p99_s": "e2e\np99 s",
    "utilization": "busy\nshare",
    "energy_per_output_token_j": "J per\nout tok",
    "usd_per_million_output_tokens": "$ per M\nout tok",
    "prompt_cached_share": "cached\nshare",
    "accuracy": "accuracy",
    "expected_accuracy": "expected\naccuracy",
    "usd_per_1k_jobs_attributed": "$/1k jobs\nattributed",
    "usd_per_1k_jobs": "$ per\n1k jobs",
    "job_latency_p50_s": "job\np50 s",
    "job_latency_p90_s": "job\np90 s",
    "job_output_tokens_mean": "out tok\nper job",
    "session_e2e_p50_s": "session\np50 s",
    "session_e2e_p90_s": "session\np90 s",
    "turn_ttft_p50_s": "turn TTFT\np50 s",
    "turn_ttft_p90_s": "turn TTFT\np90 s",
    "session_kv_device_gib_s_mean": "KV GiB-s\nper session",
    "session_recomputed_tokens_mean": "recomputed\ntok/session",
    "session_energy_j_mean": "J per\nsession",
    "training_tokens_per_day": "train tok\nper day",
    "training_waste_share": "train\nwaste",
    "shared_inference_share": "inference\nshare",
    "inference_slo_attainment": "SLO\nattained",
    "ttft_p90_s": "TTFT\np90 s",
    "tpot_p90_s": "TPOT\np90 s",
    "fleet_facility_energy_j": "fleet\nenergy J",
    "fleet_cost_usd": "fleet\ncost $",
}


def interval(values: dict, key: str) -> tuple[float, float] | None:
    """The 80% prediction interval of figure ``key`` in ``values`` (an estimate's
    ``<key>_p10_p90`` pair or a summary's ``<key>_p10`` / ``<key>_p90`` columns), or None."""
    pair = values.get(f"{key}_p10_p90")
    if pair is None and f"{key}_p10" in values:
        pair = (values[f"{key}_p10"], values.get(f"{key}_p90"))
    if pair is None or pair[0] is None or pair[1] is None:
        return None
    lo, hi = float(pair[0]), float(pair[1])
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None


INTERVAL_NOTE = "[lo - hi]: 80% prediction interval from the validation's held-out errors (docs/validation.md)"


def metric_label(key: str) -> str:
    """The sweep table's header of summary column ``key`` (the key itself where none is set)."""
    return METRIC_LABELS.get(key, key)


def format_value(v: Any) -> str:
    """A swept value or metric as a short label (a mapping with a ``kind`` as ``kind k=v ...``)."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    if isinstance(v, str) and v.startswith("{"):
        return _fmt_kind(v)
    return str(v)


def _fmt_kind(text: str) -> str:
    """A swept mapping with a ``kind`` (a strategy, a router) as ``kind k=v ...`` of its scalars."""
    try:
        obj = json.loads(text)
    except ValueError:
        return text
    if not isinstance(obj, dict) or "kind" not in obj:
        return text
    parts = [str(obj["kind"])]
    parts += [f"{k}={format_value(v)}" for k, v in obj.items() if k != "kind" and isinstance(v, (int, float, str, bool))]
    return " ".join(parts)


def short_labels(paths: list[str]) -> dict[str, str]:
    """Display label of each swept path: its last key, or the full path where that clashes."""
    last = {p: p.rsplit(".", 1)[-1] for p in paths}
    counts = {v: list(last.values()).count(v) for v in last.values()}
    return {p: (last[p] if counts[last[p]] == 1 else p) for p in paths}
