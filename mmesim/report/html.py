"""One self-contained HTML page per run or comparison: the summary, per-step tables, failures
by cause, cost, and the charts embedded as base64 PNG (no file beside it, no script, no network).

It reads what ``write_outputs`` (simulate, loadtest) and ``write_validation`` wrote, so
`mmesim report DIR` and ``--html`` are one code path, and a page can be made from any old folder."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

from mmesim.errors import ConfigError
from mmesim.units import GiB

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;font-size:13px;margin-bottom:1em}td,th{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}p.note{color:#555}
td.bad{background:#fde2e2}td.good{background:#e3f4ec}"""


# --- page building blocks (also used by plan and sweep reports) ----------------------------
def fmt(v, digits: int = 1) -> str:
    """A table cell: "-" for a missing value, thousands separated, "inf" for an unbounded figure."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}" if math.isfinite(v) else "inf"
    return str(v)


def html_report(title: str, sections: list[tuple[str, str]], path: Path) -> Path:
    """One file: ``sections`` are (heading, HTML body); images are inline data URIs."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{b}" for h, b in sections)
    path.write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>
{body}
</body></html>
""")
    return path


def html_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(r.get(c), 3))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def png_b64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode()


def img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _img_file(path: Path, alt: str) -> str:
    return img(base64.b64encode(path.read_bytes()).decode(), alt)


# --- a run, a comparison -----------------------------------------------------------------
HEADLINE = (("throughput_qps", "throughput, req/s (reference's definition)"), ("latency_ms", "latency, ms"),
            ("max_concurrent_users", "max concurrent users"), ("max_models_loaded", "max models loaded"),
            ("p50_ms", "p50, ms"), ("p95_ms", "p95, ms"), ("p99_ms", "p99, ms"), ("requests", "requests"),
            ("failures", "failures"), ("cold_starts", "cold starts"), ("loads", "loads"), ("unloads", "unloads"),
            ("peak_gpu_memory_gib", "peak GPU memory, GiB"), ("gpu_memory_utilization_peak", "GPU memory, peak share"))
COST = (("instance_type", "instance type"), ("instance_count", "instances"),
        ("cost_per_hour_usd", "USD per hour"), ("cost_per_million_usd", "USD per million requests"))
CHARTS = (("steps.png", "Latency and throughput against users"), ("memory.png", "GPU memory"),
          ("instances.png", "Instances over time"))


def _summary(folder: Path) -> dict:
    path = folder / "summary.json"
    if not path.is_file():
        raise ConfigError("no summary.json or comparison.json: not a folder written by mmesim simulate, loadtest "
                          "or validate", source=str(folder))
    try:
        s = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not JSON: {exc.msg} at line {exc.lineno}", source=str(path)) from None
    peak = s.get("peak_gpu_memory_bytes")
    s["peak_gpu_memory_gib"] = peak / GiB if peak else None
    return s


def _figures(runs: dict[str, dict], keys) -> str:
    """A table with one row per figure and one column per run."""
    names = list(runs)
    rows = [{"figure": label, **{n: runs[n].get(k) for n in names}} for k, label in keys]
    return html_table(rows, ["figure", *names])


def _run_sections(name: str, folder: Path, s: dict) -> list[tuple[str, str]]:
    suffix = f" ({name})" if name else ""
    out = [(f"Per user step{suffix}",
            "<p>avg_ms over every request started at that step, as Locust's; p50-p99 over those that succeeded</p>"
            + html_table(s.get("steps") or [], ["users", "requests", "failures", "rps", "avg_ms", "p50_ms", "p95_ms",
                                                "p99_ms"]))]
    causes = [{"cause": c, "requests": n} for c, n in sorted(s.get("failures_by_cause", {}).items(),
                                                            key=lambda kv: -kv[1])]
    out.append((f"Failures by cause{suffix}", html_table(causes) if causes else "<p>no failed request</p>"))
    for file, heading in CHARTS:
        if (folder / file).is_file():
            out.append((heading + suffix, _img_file(folder / file, heading)))
    return out


def _notes(s: dict) -> str:
    return "".join(f'<p class="note">warning: {html.escape(w)}</p>' for w in s.get("warnings", []))


def run_page(folder: str | Path, path: str | Path | None = None) -> Path:
    """report.html for a simulate/loadtest folder, or for a validate folder (both runs side by side)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError("no such output folder", source=str(folder))
    path = Path(path) if path else folder / "report.html"
    if (folder / "comparison.json").is_file():
        return _comparison_page(folder, path)
    s = _summary(folder)
    title = f"mmesim {s['kind']}: {s['instance_count']} x {s['instance_type']}"
    sections = [("Summary", _notes(s) + _figures({s["kind"]: s}, HEADLINE)), ("Cost", _figures({s["kind"]: s}, COST))]
    return html_report(title, sections + _run_sections("", folder, s), path)


def _comparison_page(folder: Path, path: Path) -> Path:
    try:
        cmp = json.loads((folder / "comparison.json").read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not JSON: {exc.msg} at line {exc.lineno}", source=str(folder / "comparison.json")) from None
    runs = {name: _summary(folder / name) for name in ("prediction", "measurement")}
    verdict = "within tolerance" if cmp.get("passed") else "beyond tolerance"
    repeats = cmp.get("repeats", 1)
    title = f"mmesim validate: {runs['prediction']['instance_type']}, predicted vs measured ({verdict})"
    if repeats > 1:
        title += f", {repeats} repeats of the load test"

    def span(x) -> str:
        r = x.get("measured_range")
        return "" if not r else f"{fmt(r[0], 3)} - {fmt(r[1], 3)}"

    def lines(items):
        body = ""
        for x in items:
            cls = {True: ' class="good"', False: ' class="bad"'}.get(x.get("ok"), "")
            cells = [fmt(x.get(k), 3) for k in ("users", "figure", "predicted", "measured", "error", "tolerance")]
            if repeats > 1:
                cells.append(span(x))
            body += ("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                     + f"<td{cls}>{'' if x.get('ok') is None else ('ok' if x['ok'] else 'FAIL')}</td></tr>")
        heads = ["users", "figure", "predicted", f"measured{' (median)' if repeats > 1 else ''}", "error",
                 "tolerance"] + ([f"measured range ({repeats} runs)"] if repeats > 1 else []) + ["checked"]
        head = "".join(f"<th>{h}</th>" for h in heads)
        return f"<table><tr>{head}</tr>{body}</table>" if items else "<p>(none)</p>"

    sections = [("Figures, predicted vs measured", lines(cmp.get("figures", []))),
                ("Per user step, predicted vs measured", lines(cmp.get("steps", []))),
                ("Cost", _figures(runs, COST))]
    if (folder / "overlay.png").is_file():
        sections.append(("Predicted and measured over time", _img_file(folder / "overlay.png", "overlay")))
    for name, s in runs.items():
        sections.extend(_run_sections(name, folder / name, s))
    return html_report(title, sections, path)
