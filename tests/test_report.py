"""dcsim report: a self-contained HTML page with every figure that applies to the run, whose
figures label every axis with its unit, keep tick labels apart, and name swept parameters
without clashes."""

import math
import re
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg

import analysis
from analysis import plots as P
from analysis import timelines as T
from analysis.figstyle import colour_limits, log_axis
from analysis.labels import metric_label, short_names
from analysis.report import build_report, planned_figures
from sim.cli.main import main
from sim.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
UNIT = re.compile(r"\((s|1/s|W|kW|J|\$|calls|sequences|% of blocks|blocks|count|share of calls, 0-1|0-1|[^)]*)\)")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The quickstart scenario, shortened, swept over chat load x replicas (4 points)."""
    raw = yaml.safe_load((ROOT / "scenarios" / "quickstart.yaml").read_text())
    raw.update(duration_s=20.0, warmup_s=5.0, drain_s=60.0)
    raw["sweep"] = {"grid": {"workload.classes.chat.arrival.rate_per_s": [4, 16], "datacenter.pools.h100.replicas": [1, 2]}}
    out = str(tmp_path_factory.mktemp("sweep") / "out")
    run_sweep(raw, out, source=str(ROOT / "scenarios" / "quickstart.yaml"), executor="serial", progress=False)
    return out


@pytest.fixture(scope="module")
def clash(tmp_path_factory):
    """The quickstart, disaggregated into a prefill and a decode pool whose ``replicas`` are
    both swept (names that clash when cut to their last key)."""
    raw = yaml.safe_load((ROOT / "scenarios" / "quickstart.yaml").read_text())
    raw.update(duration_s=12.0, warmup_s=3.0, drain_s=40.0)
    pool = raw["datacenter"]["pools"][0]
    raw["datacenter"]["pools"] = [{**pool, "name": "prefill", "decode_pool": "decode", "kv_transfer": {"link": "network"}},
                                  {**pool, "name": "decode"}]
    raw["workload"]["classes"] = [{**c, "pool": "prefill"} for c in raw["workload"]["classes"]]
    raw["sweep"] = {"grid": {"datacenter.pools.prefill.replicas": [1, 2], "datacenter.pools.decode.replicas": [1, 2]}}
    out = str(tmp_path_factory.mktemp("clash") / "out")
    run_sweep(raw, out, source=str(ROOT / "scenarios" / "quickstart.yaml"), executor="serial", progress=False)
    return out


def _ids(page: str) -> list[tuple[str, str]]:
    return re.findall(r'<img id="([^"]+)" alt="([^"]+)" src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)


def test_report_has_every_applicable_figure(sweep):
    expected = ["latency-vs-load", "slo-attainment-vs-load", "timelines", "latency-cdfs", "heatmap", "pareto-cost-latency"]
    figs = planned_figures(sweep)
    assert list(figs) == expected  # no jobs: no accuracy front
    path = build_report(sweep)
    assert path == Path(sweep) / "report.html"
    page = path.read_text()
    ids = _ids(page)
    assert [i for i, _ in ids] == expected
    captions = re.findall(r"<figcaption>([^<]+)</figcaption>", page)
    assert len(captions) == len(expected)
    for (fig_id, alt), caption, (_, _, planned) in zip(ids, captions, figs.values()):
        # a one-line caption saying what the figure shows, not its id
        assert caption == alt == planned.replace("'", "&#x27;") and fig_id not in caption
        assert caption.endswith(".") and "\n" not in caption and len(caption.split()) >= 8
    # self-contained: no external resources
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<script" not in page
    # headers: swept parameters and headline metrics, with units; one config per point
    text = page.replace("<wbr>", "")
    assert ">rate_per_s<" in text and ">replicas<" in text and ">TTFT p50 (s)<" in text
    assert ">SLO attainment (share of calls, 0-1)<" in text and 'title="ttft_p50_s"' in text
    assert page.count("<details>") == 4 and "llama-3.1-8b" in page


def test_single_run_report_has_timelines_cdfs_and_class_table(tmp_path):
    out = str(tmp_path / "one")
    assert main(["run", str(ROOT / "scenarios" / "quickstart.yaml"), "--out", out, "--set", "duration_s=20",
                 "--set", "warmup_s=5"]) == 0
    assert list(planned_figures(out)) == ["timelines", "latency-cdfs"]
    page = build_report(out).read_text()
    assert [i for i, _ in _ids(page)] == ["timelines", "latency-cdfs"]
    assert "<h2>Summary of point" in page and "TTFT p50 / p90 / p99 (s)" in page  # metric / value rows
    classes = re.search(r"<h2>Latency and SLOs per class</h2>(.*?)</table>", page, re.S).group(1)
    assert all(f'<td class="t">{c}</td>' in classes for c in ("chat", "reasoning", "(all)"))


def test_timelines_come_from_the_tables(sweep):
    pid = analysis.summary(sweep)["point_id"][-1].as_py()
    tl = T.pool_timelines(sweep, pid, bin_s=0.5)
    steps = analysis.load(sweep, "steps")
    steps = steps.filter(pc.equal(steps["point_id"], pid))
    # power integrates to the energy of the steps; the running batch to their sequence-seconds
    joules = float(np.sum(np.array(tl["power_kw"]) * np.array(tl["bin_s"]))) * 1e3
    assert joules == pytest.approx(float(pc.sum(steps["energy_j"]).as_py()), rel=1e-9)
    busy = pc.not_equal(steps["kind"], "idle")
    s = steps.filter(busy)
    seq_s = float(np.sum(s["batch_seqs"].to_numpy() * (s["end_s"].to_numpy() - s["start_s"].to_numpy())))
    assert float(np.sum(np.array(tl["running_seqs"]) * np.array(tl["bin_s"]))) == pytest.approx(seq_s, rel=1e-9)
    # queue: the time-average number waiting equals the summed waiting time of the calls over the run
    calls = analysis.load(sweep, "calls")
    calls = calls.filter(pc.equal(calls["point_id"], pid))
    wait = np.nansum(calls["admitted_s"].to_numpy() - calls["arrival_s"].to_numpy())
    assert float(np.sum(np.array(tl["queue_calls"]) * np.array(tl["bin_s"]))) == pytest.approx(wait, rel=1e-6)
    share = np.array(tl["kv_used_share"])
    assert np.all((share >= 0) & (share <= 1)) and share.max() > 0


def test_integral_in_bins_by_hand():
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    got = T.integral_in_bins(np.array([0.5, 1.5, 0.0]), np.array([2.5, 1.75, 3.0]), np.array([2.0, 4.0, 1.0]), edges)
    assert got == pytest.approx([2 * 0.5 + 1, 2 * 1 + 4 * 0.25 + 1, 2 * 0.5 + 1])


def _draw(fig):
    FigureCanvasAgg(fig).draw()
    return fig.canvas.get_renderer()


def _tick_boxes(ax, axis: str, renderer):
    ticks = (ax.xaxis if axis == "x" else ax.yaxis).get_ticklabels(which="both")
    return [t.get_window_extent(renderer) for t in ticks if t.get_visible() and t.get_text()]


def _overlap(boxes) -> bool:
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


@pytest.mark.parametrize("lo,hi", [(0.011, 0.09), (0.02, 0.4), (0.008, 60.0), (1e-4, 1e3), (0.03, 0.05)])
def test_log_ticks_never_overlap(lo, hi):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2, 2.5))
    ax = fig.subplots()
    x = np.geomspace(lo, hi, 50)
    ax.plot(x, np.linspace(0, 1, 50))
    log_axis(ax, x, "x")
    boxes = _tick_boxes(ax, "x", _draw(fig))
    assert len(boxes) >= 2 and not _overlap(boxes)


def test_cdf_and_latency_figures_label_every_panel_with_units(sweep):
    for fig in (P.latency_cdfs(sweep), P.latency_vs_load(sweep), P.timelines(sweep)):
        renderer = _draw(fig)
        for ax in fig.axes:
            assert UNIT.search(ax.get_ylabel()), f"y label without unit: {ax.get_ylabel()!r}"
            assert not _overlap(_tick_boxes(ax, "x", renderer)) and not _overlap(_tick_boxes(ax, "y", renderer))
        assert UNIT.search(fig.axes[-1].get_xlabel())
    e2e = P.latency_vs_load(sweep).axes
    assert [a.get_ylabel() for a in e2e] == ["TTFT p90 (s)", "end-to-end p90 (s)"]


def test_clashing_swept_names_stay_distinct(clash):
    names = P.names(clash)
    assert names == {"datacenter.pools.prefill.replicas": "prefill.replicas",
                     "datacenter.pools.decode.replicas": "decode.replicas"}
    page = build_report(clash).read_text().replace("<wbr>", "")
    assert ">prefill.replicas<" in page and ">decode.replicas<" in page and ">replicas<" not in page
    fig = P.heatmap(clash, "datacenter.pools.prefill.replicas", "datacenter.pools.decode.replicas")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "prefill.replicas (count)" and ax.get_ylabel() == "decode.replicas (count)"
    legend = [t.get_text() for t in P.latency_vs_load(clash).axes[0].get_legend().get_texts()]
    assert legend and all(t.startswith("decode.replicas=") for t in legend)


def test_short_names_and_labels():
    assert short_names(["a.x.rate", "b.x.rate", "c.load"]) == {"a.x.rate": "a.x.rate", "b.x.rate": "b.x.rate",
                                                              "c.load": "load"}
    assert short_names(["p.q.r", "q.r"]) == {"p.q.r": "p.q.r", "q.r": "q.r"}
    assert metric_label("ttft_p90_s") == "TTFT p90 (s)" and metric_label("energy_per_correct_kj").endswith("(kJ)")


def test_colour_limits_ignore_rounding_noise():
    equal = np.array([[0.4, 0.4 + 1e-7], [0.4 - 5e-8, np.nan]])
    lo, hi = colour_limits(equal)
    # the cells differ by 1e-7 out of 0.4: all map to the middle of the scale
    assert all(abs((v - lo) / (hi - lo) - 0.5) < 1e-5 for v in equal[np.isfinite(equal)])
    assert colour_limits(np.array([[1.0, 2.0]])) == (1.0, 2.0)


def test_frontier_labels_stay_inside_the_axes(sweep):
    fig = P.pareto_cost_latency(sweep)
    renderer = _draw(fig)
    ax = fig.axes[0]
    box = ax.get_window_extent(renderer)
    notes = [t for t in ax.texts if t.get_text()]
    assert notes
    for t in notes:
        b = t.get_window_extent(renderer)
        assert box.x0 - 1 <= b.x0 and b.x1 <= box.x1 + 1 and box.y0 - 1 <= b.y0 and b.y1 <= box.y1 + 1, t.get_text()


def test_report_cli(sweep, tmp_path, capsys):
    target = tmp_path / "r.html"
    assert main(["report", sweep, "--out", str(target)]) == 0
    assert str(target) in capsys.readouterr().out
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_disaggregated_calls_count_once(clash):
    """(the prefill half of a disaggregated call has its own row; analysis counts the call once)"""
    summ = {r["point_id"]: r["calls_measured"] for r in analysis.summary(clash).to_pylist()}
    lat = {r["point_id"]: r["calls_measured"] for r in analysis.latency(clash).to_pylist() if r["class"] == "(all)"}
    assert lat == summ and not any(math.isnan(v) for v in lat.values())
