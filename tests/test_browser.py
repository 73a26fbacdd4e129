"""The report in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright)
opens the report of a run and of a sweep, finds every figure loaded and captioned, no console
error, no horizontal overflow in a 1,280 px window, and keeps a full-page screenshot of each.

Screenshots go to ``$DCSIM_ARTIFACTS/browser`` (default: ``<temp dir>/dcsim-artifacts/browser``);
the test prints the folder. Without Playwright or a Chromium binary the test is skipped, unless
``DCSIM_REQUIRE_BROWSER=1`` (set by ``.ci/run`` once it installed chromium), where it fails.
"""

import os
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
import yaml

from analysis.report import build_report, planned_figures
from sim.cli.main import main
from sim.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 1280
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _unavailable(reason: str):
    if os.environ.get("DCSIM_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (DCSIM_REQUIRE_BROWSER=1: .ci/run installed a browser, so the test must run)")
    pytest.skip(f"no browser here: {reason}")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the Python driver is missing (pip install -e '.[test]' installs playwright)")
    exe = os.environ.get("DCSIM_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    if not exe:
        _unavailable("no chromium binary (apt-get install chromium, or set DCSIM_CHROMIUM)")
    with sync_playwright() as pw:
        try:  # Playwright gives it a fresh temporary profile (--user-data-dir) of its own
            b = pw.chromium.launch(executable_path=exe, args=FLAGS, timeout=60_000)
        except Exception as e:  # noqa: BLE001 - any launch failure means no usable browser
            _unavailable(f"{exe} does not start: {str(e).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def artifacts():
    folder = Path(os.environ.get("DCSIM_ARTIFACTS") or Path(tempfile.gettempdir()) / "dcsim-artifacts") / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("browser") / "run")
    assert main(["run", str(ROOT / "scenarios" / "quickstart.yaml"), "--out", out,
                 "--set", "duration_s=30", "--set", "warmup_s=5"]) == 0
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Quickstart, shortened, over both classes' rates: two swept paths ending in ``rate_per_s``."""
    raw = yaml.safe_load((ROOT / "scenarios" / "quickstart.yaml").read_text())
    raw.update(duration_s=20.0, warmup_s=5.0, drain_s=60.0)
    raw["sweep"] = {"grid": {"workload.classes.chat.arrival.rate_per_s": [4, 16],
                             "workload.classes.reasoning.arrival.rate_per_s": [0.25, 1.0]}}
    out = str(tmp_path_factory.mktemp("browser") / "sweep")
    run_sweep(raw, out, source=str(ROOT / "scenarios" / "quickstart.yaml"), executor="serial", progress=False)
    return out


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def _open(browser, out: str, name: str, artifacts: Path, capsys) -> dict:
    page_path = build_report(out)
    expected = planned_figures(out)
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(page_path.resolve().as_uri(), wait_until="load", timeout=60_000)
    figs = page.evaluate("""() => Array.from(document.querySelectorAll('figure')).map(f => {
        const img = f.querySelector('img'), cap = f.querySelector('figcaption');
        return {id: img.id, complete: img.complete, w: img.naturalWidth, h: img.naturalHeight,
                shown: img.getBoundingClientRect().width, right: img.getBoundingClientRect().right,
                caption: cap ? cap.innerText : ''};
    })""")
    scroll = page.evaluate("() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)")
    spilling = page.evaluate("""() => Array.from(document.querySelectorAll('th, td'))
        .filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.innerText)""")
    shot = artifacts / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    with capsys.disabled():
        print(f"\n[browser] {name}: {len(figs)} figures, page {scroll} px wide; screenshot {shot}")
    assert not problems, problems
    assert [f["id"] for f in figs] == list(expected)
    for f in figs:
        assert f["complete"] and f["w"] > 0 and f["h"] > 0, f"figure {f['id']} did not load"
        assert 0 < f["shown"] and f["right"] <= WIDTH, f"figure {f['id']} is not inside the window"
        caption = f["caption"].strip()
        assert caption and caption != f["id"] and "\n" not in caption and caption.endswith("."), f
    assert scroll <= WIDTH, f"the page is {scroll} px wide in a {WIDTH} px window"
    assert not spilling, f"table cells whose text runs out of them: {spilling}"
    w, h = _png_size(shot)
    assert w == WIDTH and h > 900
    return {f["id"]: f for f in figs}


def test_run_report_in_chromium(browser, single_run, artifacts, capsys):
    figs = _open(browser, single_run, "report-run", artifacts, capsys)
    assert set(figs) == {"timelines", "latency-cdfs"}


def test_sweep_report_in_chromium(browser, sweep, artifacts, capsys):
    figs = _open(browser, sweep, "report-sweep", artifacts, capsys)
    assert {"latency-vs-load", "timelines", "latency-cdfs", "heatmap", "pareto-cost-latency"} <= set(figs)
    page = Path(sweep, "report.html").read_text().replace("<wbr>", "")
    assert ">chat.arrival.rate_per_s<" in page and ">reasoning.arrival.rate_per_s<" in page
