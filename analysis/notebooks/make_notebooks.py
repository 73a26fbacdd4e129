"""Write the analysis notebooks of this folder (run ``python analysis/notebooks/make_notebooks.py``).

Each notebook's first cell reads ``DCSIM_NOTEBOOK_OUT`` (an output folder of ``dcsim sweep``
to analyse; a relative path is taken from where Jupyter was started, see
:func:`analysis.notebook.find_output`); when it is unset, it runs a shortened sweep of the
shipped scenario into a temporary folder (serial executor, a few seconds), so every notebook
runs as it stands, from any working directory. Tables show as pandas DataFrames.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''import os, sys, tempfile
from pathlib import Path

# The project, importable from a clone even when it is not installed (Jupyter runs this cell in
# the notebook's folder, analysis/notebooks/)
for folder in (Path.cwd(), *Path.cwd().parents):
    if (folder / "analysis" / "notebook.py").is_file():
        sys.path.insert(0, str(folder))
        break
from analysis.notebook import find_output, scenario_path

# A relative DCSIM_NOTEBOOK_OUT is read from the directory where you started Jupyter ($PWD)
OUT = find_output(os.environ.get("DCSIM_NOTEBOOK_OUT"))
if OUT is None:  # no sweep given: run a short one of the shipped scenario
    import yaml
    from sim.sweep import run_sweep

    source = scenario_path("{scenario}")
    raw = yaml.safe_load(source.read_text())
{shorten}
    OUT = str(Path(tempfile.mkdtemp(prefix="dcsim-nb-")) / "out")
    run_sweep(raw, OUT, source=str(source), executor="serial", progress=False)
print("analysing", OUT)'''

IMPORTS = '''import analysis
from analysis import metrics as M, plots as P
from analysis.notebook import plot, show  # show: an Arrow table as a DataFrame; plot: a Figure as PNG'''


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
        new_code_cell('plot(P.latency_cdfs(OUT))'),
        new_markdown_cell("## Utilization, power and energy"),
        new_code_cell('plot(P.timelines(OUT))'),
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
        new_code_cell('jobs = analysis.per_job(OUT).to_pandas()\n'
                      'jobs.groupby("strategy").agg(jobs=("job_id", "count"), '
                      'J_per_token=("energy_per_output_token_j", "mean"), g_CO2_per_job=("carbon_g", "mean"), '
                      'usd_per_job=("cost_usd", "mean")).round(4)'),
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
        new_code_cell('sessions = analysis.per_session(OUT).to_pandas()\n'
                      'per = sessions.groupby("kv_policy").agg(sessions=("session_id", "count"), '
                      'J_per_token=("energy_per_output_token_j", "mean"), usd_per_token=("usd_per_output_token", "mean"))\n'
                      'per.assign(usd_per_million_tokens=1e6 * per.usd_per_token).drop(columns="usd_per_token").round(4)'),
        new_code_cell('plot(P.timelines(OUT))'),
    ])


def main(folder: Path = HERE) -> None:
    """Write the three notebooks into ``folder`` (cell ids numbered, so the files are reproducible)."""
    for name, make in (("quickstart_sweep", quickstart), ("test_time_compute", test_time_compute), ("agent_kv", agent_kv)):
        nb = make()
        for i, cell in enumerate(nb.cells):
            cell["id"] = f"{name}-{i}"
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.validate(nb)
        nbformat.write(nb, Path(folder) / f"{name}.ipynb")


if __name__ == "__main__":
    import sys

    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
