"""dcsim report: a self-contained HTML page with every figure that applies to the run."""

import re
from pathlib import Path

import pytest
import yaml

from analysis.report import build_report, planned_figures
from sim.cli.main import main
from sim.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The quickstart scenario, shortened, swept over chat load x replicas (4 points)."""
    raw = yaml.safe_load((ROOT / "scenarios" / "quickstart.yaml").read_text())
    raw.update(duration_s=20.0, warmup_s=5.0, drain_s=60.0)
    raw["sweep"] = {"grid": {"workload.classes.chat.arrival.rate_per_s": [4, 16], "datacenter.pools.h100.replicas": [1, 2]}}
    out = str(tmp_path_factory.mktemp("sweep") / "out")
    run_sweep(raw, out, source=str(ROOT / "scenarios" / "quickstart.yaml"), executor="serial", progress=False)
    return out


def test_report_has_every_applicable_figure(sweep):
    expected = {"latency-vs-load", "slo-attainment-vs-load", "utilization-timeline", "ttft-cdf", "heatmap",
                "pareto-cost-latency"}
    assert set(planned_figures(sweep)) == expected  # no jobs: no accuracy front
    path = build_report(sweep)
    assert path == Path(sweep) / "report.html"
    page = path.read_text()
    ids = re.findall(r'<img id="([^"]+)" alt="([^"]+)" src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)
    assert {i for i, _ in ids} == expected and all(i == a for i, a in ids)
    # self-contained: no external resources
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<script" not in page
    # the summary table names the swept parameters and headline metrics; one config per point
    assert "rate_per_s" in page and "replicas" in page and "ttft_p50_s" in page and "slo_attainment" in page
    assert page.count("<details>") == 4 and "llama-3.1-8b" in page


def test_report_cli(sweep, tmp_path, capsys):
    target = tmp_path / "r.html"
    assert main(["report", sweep, "--out", str(target)]) == 0
    assert str(target) in capsys.readouterr().out
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert main(["report", str(tmp_path / "missing")]) == 2
