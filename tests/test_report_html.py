"""`mmesim report DIR` and --html: one self-contained page per run or comparison, opened in a
real headless Chromium, whose DOM must hold the tables and whose screenshot must show the charts."""

import json
import os
import shutil
import signal
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from mmesim.cli import main
from mmesim.endpoint import EndpointConfig
from mmesim.loadtest.validate import Validation, write_validation
from mmesim.profile import load_profile
from mmesim.report._figure import LATENCY, RPS
from mmesim.report.html import run_page
from mmesim.results.compare import compare
from mmesim.results.summary import summarize
from mmesim.sim import simulate
from mmesim.workload import Workload

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHORT = Workload(name="short", stages=[{"end_s": 20, "users": 4, "spawn_rate": 4},
                                       {"end_s": 40, "users": 12, "spawn_rate": 4}])


class Page(HTMLParser):
    """What a page is made of: tables (rows each), images (their src), any outside reference."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.images, self.external, self.headings, self._h = [], [], [], [], False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append(0)
        elif tag == "tr" and self.tables:
            self.tables[-1] += 1
        elif tag == "img":
            self.images.append(a.get("src", ""))
        if tag in ("script", "link", "iframe") or (tag == "img" and not a.get("src", "").startswith("data:")):
            self.external.append(tag)
        self._h = tag == "h2"

    def handle_data(self, data):
        if self._h:
            self.headings.append(data)
            self._h = False


def chromium(page, tmp_path, *args) -> subprocess.CompletedProcess:
    """Chromium headless on a file, in its own process group, stopped by that group's id."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
           *args, page.as_uri()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)      # its renderer and zygote children too
        except ProcessLookupError:
            pass
        proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def palette_pixels(png, hex_colour: str) -> int:
    from matplotlib.image import imread
    rgb = (imread(png)[..., :3] * 255).round().astype(int)
    want = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - want).max(axis=-1) <= 8).sum())


def rendered(page, tmp_path):
    """(the DOM Chromium built, pixels of the charts' two colours in its screenshot)."""
    if CHROMIUM is None:
        pytest.skip("no chromium: `make browser` installs Debian's")
    dom = chromium(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    r = chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1300,9000", "--hide-scrollbars")
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    return Page(dom.stdout), palette_pixels(shot, RPS), palette_pixels(shot, LATENCY)


def test_simulate_html_page_renders_tables_and_charts(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", "--profile", "resnet50-pytorch-t4", "--instance", "ml.g4dn.xlarge", "--copies", "3",
                 "--out", str(out), "--html"]) == 0
    page = out / "report.html"
    static = Page(page.read_text())
    assert static.external == [] and all(src.startswith("data:image/png;base64,") for src in static.images)
    summary = json.loads((out / "summary.json").read_text())
    dom, blue, amber = rendered(page, tmp_path)
    assert {"Summary", "Cost", "Per user step", "Failures by cause"} <= set(dom.headings)
    assert len(dom.tables) >= 3 and len(dom.images) >= 2
    step_rows = dom.tables[dom.headings.index("Per user step")]
    assert step_rows == 1 + len(summary["steps"])            # a header, then a row per user step
    # the steps chart's throughput bars and latency lines are on screen (a broken image shows none)
    assert blue >= 0.5 * palette_pixels(out / "steps.png", RPS) > 0
    assert amber >= 0.5 * palette_pixels(out / "steps.png", LATENCY) > 0


def test_report_of_a_comparison_shows_both_runs(tmp_path, capsys):
    ep = EndpointConfig(instance_type="ml.g4dn.xlarge")
    p = simulate([load_profile("resnet50-pytorch-t4")], ep, SHORT, copies=3, seed=0)
    m = simulate([load_profile("resnet50-pytorch-t4")], ep, SHORT, copies=3, seed=1)
    ps, ms = summarize(p), summarize(m)
    write_validation(Validation(p, m, ps, ms, compare(ps, ms, {"p95": 1e-9})), tmp_path / "v")
    assert main(["report", str(tmp_path / "v")]) == 0
    text = (tmp_path / "v" / "report.html").read_text()
    assert "beyond tolerance" in text and 'class="bad"' in text    # two seeds never agree to 1e-9
    dom, blue, amber = rendered(tmp_path / "v" / "report.html", tmp_path)
    assert {"Per user step (prediction)", "Per user step (measurement)",
            "Predicted and measured over time"} <= set(dom.headings)
    charts = [tmp_path / "v" / name / "steps.png" for name in ("prediction", "measurement")]
    assert len(dom.images) >= 3
    assert blue >= 0.5 * sum(palette_pixels(c, RPS) for c in charts) > 0
    assert amber >= 0.5 * sum(palette_pixels(c, LATENCY) for c in charts) > 0


def test_a_folder_that_is_not_a_run_is_refused_in_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path) in err and "summary.json" in err
    assert main(["simulate", "--profile", "resnet50-pytorch-t4", "--instance", "ml.g4dn.xlarge", "--html"]) == 2
    assert "--out" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_run_page_names_warnings_and_failures(tmp_path):
    # a 50-ms invocation timeout on a cold start fails requests: the page lists them by cause
    ep = EndpointConfig(instance_type="ml.g4dn.xlarge", invocation_timeout_s=0.05, model_ready_timeout_s=0.05)
    run = simulate([load_profile("resnet50-pytorch-t4")], ep, SHORT, copies=3, seed=0, warm=False)
    from mmesim.outputs import write_outputs
    s = summarize(run)
    write_outputs(run, s, tmp_path)
    text = run_page(tmp_path).read_text()
    assert s.failures > 0
    for cause in s.failures_by_cause:
        assert f"<td>{cause}</td>" in text
