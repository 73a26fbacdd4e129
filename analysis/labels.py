"""Readable names for what the report and figures show: metric columns with their units, and
swept parameter paths shortened only as far as they stay unique.

Column names in the Parquet tables carry their unit as a suffix (``ttft_p90_s``,
``energy_per_output_token_j``); a reader of a figure or table wants ``TTFT p90 (s)``.
:func:`metric_label` writes that, from a table of the common metrics and, for any other
column, from its suffix. :func:`short_names` turns swept paths into the shortest trailing part
that no other swept path shares, so ``datacenter.pools.prefill.replicas`` and
``datacenter.pools.decode.replicas`` become ``prefill.replicas`` and ``decode.replicas``
rather than two columns both called ``replicas``.
"""

from __future__ import annotations

__all__ = ["metric_label", "short_names", "param_label", "unit_of", "wrap"]

# Metric -> label (with unit) for the columns the report and figures show most.
_KNOWN = {
    "completed_per_s": "completed calls (1/s)",
    "goodput_per_s": "goodput (SLO-met calls/s)",
    "output_tokens_per_s": "output tokens (tokens/s)",
    "prompt_tokens_per_s": "prompt tokens (tokens/s)",
    "utilization": "utilization (busy share, 0-1)",
    "slo_attainment": "SLO attainment (share of calls, 0-1)",
    "prompt_cached_share": "prompt tokens from cache (share, 0-1)",
    "mean_batch_seqs": "mean running batch (sequences)",
    "avg_device_power_w": "avg power per device (W)",
    "avg_replica_power_w": "avg power per replica (W)",
    "energy_per_output_token_j": "energy per output token, facility (J)",
    "device_energy_per_output_token_j": "energy per output token, devices (J)",
    "usd_per_million_output_tokens": "cost per million output tokens ($)",
    "usd_per_1k_jobs": "cost per 1k jobs ($)",
    "usd_per_1k_jobs_attributed": "attributed cost per 1k jobs ($)",
    "carbon_g_per_output_token": "carbon per output token (g CO2)",
    "output_tokens": "output tokens (tokens)",
    "calls_measured": "calls measured (calls)",
    "calls_finished": "calls finished (calls)",
    "accuracy": "accuracy (share right, 0-1)",
    "expected_accuracy": "expected accuracy (0-1)",
    "accuracy_per_usd": "right answers per $",
    "jobs": "jobs (jobs)",
    "width": "width (samples)",
    "L": "L: calls in system (time avg)",
    "lambda_per_s": "lambda: arrivals (1/s)",
    "W_s": "W: time in system (s)",
    "lambda_W": "lambda x W (calls)",
    "rel_error": "|L - lambda W| / L",
    "slo_ttft_s": "TTFT target (s)",
    "slo_tpot_s": "TPOT target (s)",
    "slo_e2e_s": "end-to-end target (s)",
    "session_kv_device_gib_s_mean": "KV on device per session (GiB-s)",
    "session_recomputed_tokens_mean": "recomputed tokens per session",
    "session_energy_j_mean": "energy per session (J)",
    "job_output_tokens_mean": "output tokens per job",
}

_WORDS = {"ttft": "TTFT", "tpot": "TPOT", "e2e": "end-to-end", "itl": "ITL", "kv": "KV", "usd": "$", "slo": "SLO"}

# Unit suffixes, longest first: (suffix, unit).
_SUFFIXES = (
    ("_gib_s", "GiB-s"), ("_per_s", "1/s"), ("_kj", "kJ"), ("_gib", "GiB"), ("_usd", "$"), ("_kw", "kW"),
    ("_s", "s"), ("_j", "J"), ("_w", "W"), ("_g", "g"), ("_tokens", "tokens"), ("_share", "share, 0-1"),
)


def unit_of(name: str) -> str | None:
    """The unit a column or parameter name carries as its suffix (``_s``: ``s``), or None."""
    for suffix, unit in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return unit
    return None


def metric_label(name: str) -> str:
    """``ttft_p90_s`` -> ``TTFT p90 (s)``: a metric column as a label with its unit."""
    if name in _KNOWN:
        return _KNOWN[name]
    unit = unit_of(name)
    stem = name
    for suffix, u in _SUFFIXES:
        if u == unit and name.endswith(suffix):
            stem = name[: -len(suffix)] if suffix not in ("_tokens", "_share") else name
            break
    words = [_WORDS.get(w, w) for w in stem.split("_") if w]
    text = " ".join(words) if words else name
    if unit and unit not in ("tokens", "share, 0-1"):
        text += f" ({unit})"
    elif unit == "share, 0-1":
        text += " (0-1)"
    return text


def short_names(paths: list[str]) -> dict[str, str]:
    """Each dotted path -> its shortest trailing part (``a.b.c`` -> ``c``, ``b.c``, ``a.b.c``) that
    no other path in ``paths`` ends with, so shortened names never clash."""
    parts = {p: p.split(".") for p in paths}
    out = {}
    for p, segs in parts.items():
        for n in range(1, len(segs) + 1):
            cand = ".".join(segs[-n:])
            if not any(q != p and (q == cand or q.endswith("." + cand)) for q in paths):
                out[p] = cand
                break
        else:
            out[p] = p
    return out


def param_label(short: str, values=()) -> str:
    """An axis label for a swept parameter: its (short) name and a unit, from the name's suffix,
    ``(count)`` for integer values, none for names and other categories."""
    unit = unit_of(short.rsplit(".", 1)[-1])
    if unit is None and values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        unit = "count"
    return f"{short} ({unit})" if unit else short


def wrap(text: str, width: int = 28) -> str:
    """``text`` on lines of about ``width`` characters, broken after dots and at spaces (long
    dotted parameter names on a short axis)."""
    lines, line = [], ""
    for token in text.replace(".", ".\0").replace(" ", " \0").split("\0"):
        if line and len(line) + len(token) > width:
            lines.append(line.rstrip())
            line = ""
        line += token
    lines.append(line.rstrip())
    return "\n".join(lines)
