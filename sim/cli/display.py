"""What the command line prints: two-column metric tables, a run's summary, its economics and
strategy tables, a sweep's table of points, and the next command to run. Reads summaries and
tables; simulates nothing.

Everything reads at 80 columns, in a terminal or piped (rich then assumes 80): a run is metric /
value rows; a sweep shows its points with as many headline columns as fit the width, and says
where the rest are (summary.parquet). Nothing is cut with an ellipsis: a long value wraps.
"""

from __future__ import annotations

from sim.output.headline import (ECON_HEADLINE, HEADLINE, HEADLINE_METRICS, INTERVAL_NOTE, JOB_HEADLINE, JOB_METRICS,
                                 P50_90_99, SESSION_HEADLINE, SESSION_METRICS, TRAINING_HEADLINE, TRAINING_METRICS,
                                 format_value, interval, metric_label, short_labels)

ROWS = [  # (label, key, format)
    ("output tokens/s", "output_tokens_per_s", "{:,.0f}"),
    ("requests/s", "requests_per_s", "{:.2f}"),
    ("TTFT p50 / p90 (s)", ("ttft_p50_s", "ttft_p90_s"), "{:.4f}"),
    ("inter-token latency p50 / p90 (s)", ("itl_p50_s", "itl_p90_s"), "{:.4f}"),
    ("time per output token p50 (s)", "tpot_p50_s", "{:.4f}"),
    ("end-to-end p50 / p90 (s)", ("e2e_p50_s", "e2e_p90_s"), "{:.3f}"),
    ("mean running batch", "mean_batch_seqs", "{:.1f}"),
    ("GPU power, all devices (W)", "gpu_power_w", "{:,.0f}"),
    ("GPU energy per output token (J)", "energy_per_output_token_j", "{:.3f}"),
    ("weights per device (GiB)", "weight_gib", "{:.1f}"),
    ("KV pool (blocks)", "kv_blocks", "{:,}"),
    ("KV pool per device (GiB)", "kv_gib", "{:.1f}"),
    ("preemptions", "preemptions", "{:.0f}"),
]
BURST_ROWS = [  # a burst (sim/tools/burst.py) has no arrival rate; latency quantiles are over every call
    ("output tokens/s (steady state)", "output_tokens_per_s", "{:,.0f}"),
    ("TTFT p50 / p90 (s)", ("ttft_p50_s", "ttft_p90_s"), "{:.3f}"),
    ("inter-token latency p50 / p90 (s)", ("itl_p50_s", "itl_p90_s"), "{:.4f}"),
    ("end-to-end p50 / p90 (s)", ("e2e_p50_s", "e2e_p90_s"), "{:.1f}"),
] + [row for row in ROWS if row[1] in ("mean_batch_seqs", "gpu_power_w", "energy_per_output_token_j", "weight_gib",
                                       "kv_blocks", "kv_gib", "preemptions")]


def print_metrics(title: str, rows: list, values: dict, footer: str) -> None:
    """A two-column rich table of ``values`` picked and formatted by ``rows``, then ``footer``."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title, show_header=False)
    t.add_column("metric", overflow="fold")
    t.add_column("value", justify="right", overflow="fold")
    shown = False
    for label, keys, fmt in rows:
        keys = keys if isinstance(keys, tuple) else (keys,)
        cell = " / ".join(fmt.format(values[k]) for k in keys)
        band = interval(values, keys[0]) if len(keys) == 1 else None
        if band is not None:
            cell += escape(f" [{fmt.format(band[0])} - {fmt.format(band[1])}]")
            shown = True
        t.add_row(label, cell)
    console = Console()
    console.print(t)
    console.print(footer, highlight=False)
    if shown:
        console.print(INTERVAL_NOTE, highlight=False, markup=False)


def print_next_step(out: str, console=None) -> None:
    """The last line of a run or sweep: the command that turns its folder into a report."""
    from rich.console import Console

    # one line however long the folder's name, so the command copies whole
    (console or Console()).print(f"next: dcsim report {out}   -> {out.rstrip('/')}/report.html", highlight=False,
                                 soft_wrap=True)



def video_rows(s: dict) -> list:
    """Summary rows of each image / video class of a run (keys ``video_<class>_...``)."""
    rows = [("videos measured / finished (all)", ("videos_measured", "videos_finished"), "{:.0f}")]
    for cls in sorted(k[len("video_"):-len("_per_s")] for k in s if k.startswith("video_") and k.endswith("_per_s")):
        p = f"video_{cls}_"
        rows += [(f"{cls}: latency p50 / p90 / p99 (s)", tuple(f"{p}latency_{q}_s" for q in P50_90_99), "{:.2f}"),
                 (f"{cls}: batch / energy (kJ) / $ per request", (p + "batch_mean", p + "energy_kj_mean", p + "cost_usd_mean"),
                  "{:.3f}")]
        s[p + "energy_kj_mean"] = s[p + "energy_j_mean"] / 1000
    return rows


def print_run_summary(s: dict, scenario: str, out: str, wall: float) -> None:
    s = dict(s)  # derived display values are added to a copy
    rows = HEADLINE
    if "jobs_created" in s:
        s = {**s, "energy_per_correct_kj": s["energy_per_correct_j"] / 1000}
        rows = rows + JOB_HEADLINE
    if "sessions_created" in s:
        s = {**s, "session_energy_kj_mean": s["session_energy_j_mean"] / 1000}
        rows = rows + SESSION_HEADLINE
    if "videos_created" in s:
        rows = rows + video_rows(s)
    if "calls_prefilled" in s:
        rows = rows + [("KV transfer to decode mean / p99 (s)", ("kv_transfer_mean_s", "kv_transfer_p99_s"), "{:.4f}")]
    if s.get("replicas_on_mean", s.get("replicas")) != s.get("replicas"):
        rows = rows + [("replicas installed / on (mean)", ("replicas", "replicas_on_mean"), "{:.2f}")]
    if "training_jobs" in s:
        s = {**s, "training_tokens_per_day_m": s["training_tokens_per_day"] / 1e6,
             "training_tokens_lost_m": s["training_tokens_lost"] / 1e6,
             "fleet_facility_energy_kwh": s["fleet_facility_energy_j"] / 3.6e6}
        rows = rows + TRAINING_HEADLINE
    if "capex_usd_per_hour" in s:
        rows = rows + ECON_HEADLINE
    print_metrics(f"{s['scenario']} ({scenario}) point {s['point_id']}", rows, s,
                  f"simulated {s['sim_end_s']:.0f} s ({s['calls_created']} calls) in {wall:.2f} s wall; tables in {out}")
    if "jobs_created" in s:
        print_strategies(out, s["point_id"], s["warmup_s"], s["duration_s"])
    if "revenue_usd" in s:
        print_economics(out, s["point_id"])



def print_economics(out: str, point_id: str) -> None:
    """Revenue, cost and margin per class and effort tier (the economics table of a run)."""
    from rich.console import Console
    from rich.table import Table

    from sim.output import storage

    rows = storage.read_point(out, "economics", point_id).to_pylist()
    t = Table(title="economics by class and tier (idle capacity shared by tokens run)")
    for col in ("class", "tier", "units", "revenue $", "cost $", "of which idle $", "margin $", "$/unit", "$/M out"):
        t.add_column(col, justify="left" if col in ("class", "tier") else "right")
    for r in rows:
        t.add_row(r["class"], r["tier"], str(r["units"]), f"{r['revenue_usd']:.4f}", f"{r['cost_usd']:.4f}",
                  f"{r['idle_cost_usd']:.4f}", f"{r['margin_usd']:.4f}", f"{r['cost_per_unit_usd']:.5f}",
                  f"{r['cost_per_million_output_tokens_usd']:.3f}")
    Console().print(t)


def print_strategies(out: str, point_id: str, t0: float, t1: float) -> None:
    """Per-strategy table of a run's jobs (adaptive runs mix several)."""
    from rich.console import Console
    from rich.table import Table

    from sim.output import storage
    from sim.output.summary import jobs_by_strategy

    jobs = storage.read_point(out, "jobs", point_id)
    rows = jobs_by_strategy(jobs, t0, t1)
    t = Table(title="jobs by strategy (attributed cost)")
    for col in ("strategy", "width", "jobs", "accuracy", "expected", "$/1k jobs", "$/right", "p50 s", "p90 s"):
        t.add_column(col, justify="left" if col == "strategy" else "right")
    for r in rows:
        t.add_row(r["strategy"], str(r["width"]), str(r["jobs"]), f"{r['accuracy']:.1%}", f"{r['expected_accuracy']:.1%}",
                  f"{r['usd_per_1k_jobs']:.3f}", f"{r['usd_per_correct']:.5f}", f"{r['latency_p50_s']:.1f}",
                  f"{r['latency_p90_s']:.1f}")
    Console().print(t)



def print_sweep_summary(result, console=None, max_rows: int = 40, max_metrics: int = 9,
                        shown: str | None = None) -> None:
    """Print one table: a row per point with its swept parameters, status and as many headline
    metrics as fit the console's width (80 columns when piped), then a note naming the file that
    holds every metric (under ``shown``, the output as the user wrote it)."""
    import pyarrow as pa
    from rich.console import Console
    from rich.measure import Measurement
    from rich.text import Text

    from sim.sweep import NOT_SWEPT_COLUMNS

    console = console or Console()
    pts = result.points_table.to_pylist()
    summ = {row["point_id"]: row for row in result.summary_table.to_pylist()}
    swept = [c for c in result.points_table.column_names if c not in NOT_SWEPT_COLUMNS]
    columns = [c for c in result.summary_table.column_names if c != "point_id"]
    chosen = JOB_METRICS if "accuracy" in columns else (SESSION_METRICS if "sessions_created" in columns else HEADLINE_METRICS)
    if "training_tokens_per_day" in columns:
        chosen = TRAINING_METRICS
    metrics = [m for m in chosen if m in columns]
    if not metrics:
        numeric = [f.name for f in result.summary_table.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]
        metrics = [c for c in columns if c in numeric and c not in ("seed", "run")]
    metrics = metrics[:max_metrics]
    show_run = len({r["run"] for r in pts}) > 1
    show_status = any(r["status"] != "ok" for r in pts)
    rows = pts[:max_rows]
    fits = 0  # as many metric columns as fit the width (at least one)
    for k in range(len(metrics), 0, -1):
        table = _sweep_table(result, rows, summ, swept, metrics[:k], show_run, show_status)
        if Measurement.get(console, console.options.update_width(10**4), table).maximum <= console.width:
            fits = k
            break
    table = _sweep_table(result, rows, summ, swept, metrics[:max(fits, 1)], show_run, show_status)
    console.print(table)
    if len(pts) > max_rows:
        console.print(f"... {len(pts) - max_rows} more points in points.parquet / summary.parquet", highlight=False)
    console.print(f"{max(fits, 1)} headline metrics shown; all {len(columns)} summary columns of each point are in "
                  f"{(shown or result.out).rstrip('/')}/summary.parquet", highlight=False)
    for row in pts:
        if row["status"] != "ok":
            console.print(Text.assemble((row["point_id"], "red"), f": {row['error']}"))


def _sweep_table(result, pts: list, summ: dict, swept: list[str], metrics: list[str], show_run: bool,
                 show_status: bool):
    """The sweep's rich table with the given metric columns (run and status only where they vary)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    labels = short_labels(swept)
    n_failed = sum(1 for r in result.points_table.column("status").to_pylist() if r != "ok")
    table = Table(title=f"sweep: {result.points_table.num_rows} points, {n_failed} failed", box=box.SIMPLE_HEAD,
                  padding=(0, 1))
    table.add_column("point", no_wrap=True)
    for c in swept:
        table.add_column(labels[c], justify="right", overflow="fold")
    if show_run:
        table.add_column("run", justify="right")
    if show_status:
        table.add_column("status")
    for m in metrics:
        table.add_column(metric_label(m), justify="right", overflow="fold")
    for row in pts:
        s = summ.get(row["point_id"], {})
        cells = [row["point_id"], *(format_value(row[c]) for c in swept)]
        cells += [format_value(row["run"])] if show_run else []
        cells += [Text(row["status"], style=None if row["status"] == "ok" else "red")] if show_status else []
        table.add_row(*cells, *(format_value(s.get(m)) for m in metrics))
    return table
