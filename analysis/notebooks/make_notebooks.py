"""Write the analysis notebooks of this folder (run ``python analysis/notebooks/make_notebooks.py``).

Each notebook's first cell reads ``DCSIM_NOTEBOOK_OUT`` (an output folder of ``dcsim sweep``
to analyse); when it is unset, it runs a shortened sweep of the shipped scenario into a
temporary folder (serial executor, a few seconds), so every notebook runs as it stands.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''import os, sys, tempfile
from pathlib import Path

# Repository root (for scenarios/ and, when not installed, the sim and analysis packages)
ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "scenarios" / "{scenario}").exists())
sys.path.insert(0, str(ROOT))

OUT = os.environ.get("DCSIM_NOTEBOOK_OUT")
if not OUT:  # no sweep given: run a short one of the shipped scenario
    import yaml
    from sim.sweep import run_sweep

    raw = yaml.safe_load((ROOT / "scenarios" / "{scenario}").read_text())
{shorten}
    OUT = str(Path(tempfile.mkdtemp(prefix="dcsim-nb-")) / "out")
    run_sweep(raw, OUT, source=str(ROOT / "scenarios" / "{scenario}"), executor="serial", progress=False)
print("analysing", OUT)'''

IMPORTS = '''import analysis
from analysis import metrics as M, plots as P

def show(table, cols=None, n=30):
    """Print an Arrow table or list of dicts as aligned text (no pandas needed)."""
    rows = table.to_pylist() if hasattr(table, "to_pylist") else list(table)
    cols = cols or (list(rows[0]) if rows else [])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    text = [[fmt(r.get(c)) for c in cols] for r in rows[:n]]
    width = [max([len(c)] + [len(t[i]) for t in text]) for i, c in enumerate(cols)]
    print("  ".join(c.rjust(w) for c, w in zip(cols, width)))
    for t in text:
        print("  ".join(v.rjust(w) for v, w in zip(t, width)))

def plot(fig):
    """Show a matplotlib Figure of analysis.plots as a PNG (works with any backend)."""
    import io
    from IPython.display import Image, display
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    display(Image(data=buf.getvalue()))'''


def quickstart() -> nbformat.NotebookNode:
    shorten = '    raw.update(duration_s=40.0, warmup_s=10.0, drain_s=120.0)'
    return new_notebook(cells=[
        new_markdown_cell("# Quickstart sweep: latency, SLOs, queueing and energy vs load\n\n"
                          "Set `DCSIM_NOTEBOOK_OUT` to the output of `dcsim sweep scenarios/quickstart.yaml --out DIR` "
                          "to analyse it; otherwise the first cell runs a shortened sweep."),
        new_code_cell(SETUP.format(scenario="quickstart.yaml", shorten=shorten)),
        new_code_cell(IMPORTS),
        new_markdown_cell("## Points and headline metrics"),
        new_code_cell('rows = P.sweep_rows(OUT)\nx = P.numeric_axes(OUT)[0]\n'
                      'show(rows, ["point_id", x, "completed_per_s", "ttft_p90_s", "tpot_p50_s", "utilization", '
                      '"energy_per_output_token_j"])'),
        new_markdown_cell("## Latency and SLO goodput per class"),
        new_code_cell('show(analysis.latency(OUT), ["point_id", "class", "calls_measured", "ttft_p50_s", "ttft_p90_s", '
                      '"tpot_p50_s", "e2e_p90_s"])\n'
                      'show(analysis.goodput(OUT), ["point_id", "class", "slo_ttft_s", "slo_tpot_s", "slo_attainment", '
                      '"goodput_per_s"])'),
        new_code_cell('plot(P.latency_vs_load(OUT))'),
        new_code_cell('plot(P.slo_attainment_vs_load(OUT))'),
        new_markdown_cell("## Queueing: waiting times, queue length, Little's law"),
        new_code_cell('show(analysis.wait_distribution(OUT))\nshow(analysis.littles_law_table(OUT))\n'
                      'pid = rows[-1]["point_id"]\n'
                      'calls = analysis.load(OUT, "calls")\n'
                      'import pyarrow.compute as pc\n'
                      'times, lengths = analysis.queue_length(calls.filter(pc.equal(calls["point_id"], pid)))\n'
                      'print(f"point {pid}: longest queue {lengths.max()} calls")'),
        new_code_cell('plot(P.latency_cdf(OUT, "ttft"))'),
        new_markdown_cell("## Utilization, power and energy"),
        new_code_cell('plot(P.utilization_timeline(OUT))'),
        new_code_cell('show(analysis.utilization(OUT))\nshow(analysis.energy_per_token(OUT))\n'
                      'show(analysis.class_energy(OUT))'),
        new_code_cell('plot(P.pareto_cost_latency(OUT))'),
    ])


def test_time_compute() -> nbformat.NotebookNode:
    shorten = ('    raw.update(duration_s=60.0, warmup_s=10.0, drain_s=300.0)\n'
               '    keep = [0, 1, 3, 5, 9]  # single, single 1k budget, self-consistency, best-of-N, adaptive\n'
               '    zipped = raw["sweep"]["zip"]\n'
               '    for k in zipped:\n'
               '        zipped[k] = [zipped[k][i] for i in keep]')
    return new_notebook(cells=[
        new_markdown_cell("# Test-time compute: the accuracy-vs-cost frontier\n\n"
                          "Set `DCSIM_NOTEBOOK_OUT` to the output of `dcsim sweep scenarios/test_time_compute.yaml "
                          "--out DIR`; otherwise the first cell runs a shortened sweep (five policies, two accelerators)."),
        new_code_cell(SETUP.format(scenario="test_time_compute.yaml", shorten=shorten)),
        new_code_cell(IMPORTS),
        new_markdown_cell("## The frontier per accelerator"),
        new_code_cell('from analysis.frontier import frontier\n'
                      'front = frontier(OUT, group_by="datacenter.pools.reasoner.accelerator")\n'
                      'from sim.output.headline import format_value\n'
                      'show([{**r, "strategy": format_value(r["workload.classes.math.job.strategy"])} for r in front], '
                      '["datacenter.pools.reasoner.accelerator", "strategy", "usd_per_1k_jobs", "accuracy", '
                      '"job_latency_p90_s", "on_frontier"])'),
        new_code_cell('plot(P.pareto_accuracy_cost(OUT))'),
        new_markdown_cell("## Strategies: accuracy per dollar, energy and carbon per token"),
        new_code_cell('show(analysis.jobs_by_strategy_table(OUT), ["point_id", "strategy", "width", "jobs", "accuracy", '
                      '"usd_per_1k_jobs", "accuracy_per_usd", "latency_p90_s"])'),
        new_code_cell('jobs = analysis.per_job(OUT)\n'
                      'import numpy as np\n'
                      'for s in sorted(set(jobs["strategy"].to_pylist())):\n'
                      '    m = np.array(jobs["strategy"].to_pylist()) == s\n'
                      '    e = jobs["energy_per_output_token_j"].to_numpy()[m]\n'
                      '    c = jobs["carbon_g"].to_numpy()[m]\n'
                      '    print(f"{s:18s} jobs {m.sum():4d}  J/token {np.nanmean(e):.3f}  g CO2/job {np.nanmean(c):.2f}")'),
        new_code_cell('plot(P.heatmap(OUT, "datacenter.pools.reasoner.accelerator", "workload.classes.math.job.strategy", '
                      '"accuracy"))'),
    ])


def agent_kv() -> nbformat.NotebookNode:
    shorten = '    raw.update(duration_s=200.0, warmup_s=40.0, drain_s=300.0)'
    return new_notebook(cells=[
        new_markdown_cell("# Agent sessions: KV-cache policies between turns\n\n"
                          "Set `DCSIM_NOTEBOOK_OUT` to the output of `dcsim sweep scenarios/agents_kv.yaml --out DIR`; "
                          "otherwise the first cell runs a shortened sweep (sessions in a short window rarely finish, "
                          "so per-turn figures are the ones to read there)."),
        new_code_cell(SETUP.format(scenario="agents_kv.yaml", shorten=shorten)),
        new_code_cell(IMPORTS),
        new_markdown_cell("## Per policy and load"),
        new_code_cell('from sim.output.headline import format_value\n'
                      'rows = P.sweep_rows(OUT)\n'
                      'show([{**r, "kv": format_value(r["workload.classes.agents.session.kv"])} for r in rows], '
                      '["workload.classes.agents.arrival.concurrency", "kv", "turn_ttft_p50_s", "turn_ttft_p90_s", '
                      '"session_kv_device_gib_s_mean", "session_recomputed_tokens_mean", "prompt_cached_share", '
                      '"energy_per_output_token_j"])'),
        new_code_cell('plot(P.heatmap(OUT, "workload.classes.agents.arrival.concurrency", '
                      '"workload.classes.agents.session.kv", "turn_ttft_p90_s"))'),
        new_code_cell('plot(P.latency_vs_load(OUT, metrics=("ttft_p90_s", "tpot_p50_s")))'),
        new_markdown_cell("## Per session: energy, cost and carbon per output token"),
        new_code_cell('sessions = analysis.per_session(OUT)\n'
                      'import numpy as np\n'
                      'pol = np.array(sessions["kv_policy"].to_pylist())\n'
                      'for p in sorted(set(pol)):\n'
                      '    m = pol == p\n'
                      '    print(f"{p:8s} sessions {m.sum():4d}  J/token {np.nanmean(sessions[\'energy_per_output_token_j\'].to_numpy()[m]):.3f}"\n'
                      '          f"  $/Mtoken {1e6 * np.nanmean(sessions[\'usd_per_output_token\'].to_numpy()[m]):.3f}")'),
        new_code_cell('plot(P.utilization_timeline(OUT))'),
    ])


def main() -> None:
    for name, make in (("quickstart_sweep", quickstart), ("test_time_compute", test_time_compute), ("agent_kv", agent_kv)):
        nb = make()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.validate(nb)
        nbformat.write(nb, HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
