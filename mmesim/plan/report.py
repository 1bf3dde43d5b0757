"""What a planner or a sweep hands a person: a rich table in the terminal, a results table
(CSV, and Parquet when pyarrow is usable), plots, and one self-contained HTML file with the
tables and plots embedded."""

from __future__ import annotations

import base64
import csv
import html
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mmesim.report._figure import FAIL_BARS, LATENCY, OK_BARS, RPS, new_figure
from mmesim.report.html import html_report, html_table, img  # noqa: F401  (sweep imports them from here)
from mmesim.report.html import fmt as _fmt, png_b64 as _png

console = Console(width=None if Console().is_terminal else 200)


# --- files -------------------------------------------------------------------------------
_warned: list = []


def write_table(rows: list[dict], path_stem: Path) -> list[Path]:
    """``<stem>.csv`` always; ``<stem>.parquet`` too when pyarrow imports (else says why)."""
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    out = [path_stem.with_suffix(".csv")]
    with out[0].open("w", newline="") as fh:
        w = csv.DictWriter(fh, cols)
        w.writeheader()
        w.writerows(rows)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        if not _warned:
            _warned.append(True)
            console.print(f"[yellow]note:[/yellow] no Parquet files: pyarrow does not import here ({exc}); "
                          "the \\[plan] extra pins a version that works with numpy<2")
        return out
    table = pa.table({c: [r.get(c) for r in rows] for c in cols})
    out.append(path_stem.with_suffix(".parquet"))
    pq.write_table(table, out[1])
    return out


def save_png(b64: str, path: Path) -> Path:
    path.write_bytes(base64.b64decode(b64))
    return path


# --- plots -------------------------------------------------------------------------------
def pareto_png(points: list[dict], slo_p95: float | None) -> str:
    """Cost per hour against p95 for every simulated (candidate, count): the cheapest
    configurations meeting every SLO, and the Pareto front among them."""
    fig = new_figure(9, 5.5)
    ax = fig.subplots()
    ok = [p for p in points if p["meets_slo"] and math.isfinite(p["p95_ms"])]
    bad = [p for p in points if not p["meets_slo"] and math.isfinite(p["p95_ms"])]
    ax.scatter([p["cost_per_hour_usd"] for p in bad], [p["p95_ms"] for p in bad], color=FAIL_BARS, s=14,
               alpha=0.6, label="misses an SLO")
    ax.scatter([p["cost_per_hour_usd"] for p in ok], [p["p95_ms"] for p in ok], color=OK_BARS, s=18,
               label="meets every SLO")
    front, best = [], math.inf
    for p in sorted(ok, key=lambda p: (p["cost_per_hour_usd"], p["p95_ms"])):
        if p["p95_ms"] < best:
            front.append(p)
            best = p["p95_ms"]
    if front:
        ax.step([p["cost_per_hour_usd"] for p in front], [p["p95_ms"] for p in front], where="post",
                color="black", lw=1, label="Pareto front")
        for i, p in enumerate(front[:4]):
            ax.annotate(f"{p['count']}x {p['instance_type'].removeprefix('ml.')} {p['framework']}",
                        (p["cost_per_hour_usd"], p["p95_ms"]), fontsize=7, xytext=(6, 10 + 12 * i),
                        textcoords="offset points", arrowprops={"arrowstyle": "-", "lw": 0.5})
    if slo_p95:
        ax.axhline(slo_p95, color=LATENCY, ls="--", lw=1, label=f"p95 SLO {slo_p95:g} ms")
    ax.set_yscale("log")
    ax.set_xlabel("cost, USD per hour")
    ax.set_ylabel("p95 latency, ms (successful requests)")
    ax.set_title("Cost against p95: every configuration simulated")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _png(fig)


def capacity_png(capacity: dict[str, float], counts: dict[str, int], peak: float) -> str:
    fig = new_figure(9, 0.5 + 0.35 * max(3, len(capacity)))
    ax = fig.subplots()
    names = sorted(capacity, key=lambda k: capacity[k] / counts[k])
    ax.barh(range(len(names)), [capacity[k] / counts[k] for k in names], color=RPS)
    ax.set_yticks(range(len(names)), [f"{k} (x{counts[k]})" for k in names], fontsize=8)
    ax.set_xlabel("requests/s per instance meeting every SLO (the mix's traffic, at the plan's count)")
    ax.set_title(f"Capacity per instance type (peak {peak:g} req/s); capped at 4x the peak")
    fig.tight_layout()
    return _png(fig)


def scaling_png(timeline: list[tuple[float, int, int]], minutes: list[dict], duration_s: float,
                title: str) -> str:
    """Instances billed and in service over time, over per-minute p95 and failed requests."""
    from mmesim.report.scaling import figure
    return _png(figure(timeline, minutes, duration_s, title))


# --- terminal ----------------------------------------------------------------------------
PLAN_COLUMNS = (("instance_type", "instance"), ("count", "n"), ("framework", "framework"),
                ("threshold", "memory threshold"),
                ("max_batch", "max batch"), ("triton_instances", "Triton inst"),
                ("cost_per_hour_usd", "USD/h"), ("cost_per_month_usd", "USD/month"),
                ("cost_per_million_usd", "USD/M inf"), ("p95_ms", "p95 ms"), ("p99_ms", "p99 ms"),
                ("error_rate", "errors"), ("models_resident_per_instance", "resident/inst"),
                ("cache_hit_ratio", "cache hit"), ("binding_slo", "closest SLO (% of its limit)"),
                ("decided_by", "count decided by (one instance fewer)"))
HOSTING_COLUMNS = (("option", "hosting option"), ("configuration", "cheapest configuration"), ("instances", "instances"),
                   ("gpus", "GPUs"), ("usd_per_month", "USD/month at peak"),
                   ("usd_per_month_daily", "USD/month, daily pattern"), ("at_floor", "models at the floor"))


def print_plan(p) -> None:
    if p.ranked:
        t = Table(title=f"plan for {p.mix.name}: cheapest configurations meeting every SLO "
                        f"({p.simulations} simulations)")
        # the Triton columns only when the mix searched them
        columns = [(k, head) for k, head in PLAN_COLUMNS if any(r.get(k) is not None for r in p.ranked)
                   or k not in ("max_batch", "triton_instances")]
        for _, head in columns:
            t.add_column(head, justify="right")
        for i, r in enumerate(p.ranked):
            t.add_row(*[_cell(k, r[k]) for k, _ in columns], style="bold green" if i == 0 else None)
        console.print(t)
        best = p.ranked[0]
        line = (f"cheapest: {best['count']} x {best['candidate']}: {best['cost_per_month_usd']:,.0f} USD/month")
        if "cost_per_month_autoscaled_usd" in best:
            line += f", about {best['cost_per_month_autoscaled_usd']:,.0f} USD/month scaled to the daily pattern"
        console.print(line)
    else:
        console.print(f"[bold red]infeasible:[/bold red] no configuration of {p.mix.name} meets every SLO "
                      f"({p.simulations} simulations). Closest:")
    if p.left_out:
        console.print(f"left out of the MME search: {', '.join(r['instance_type'] for r in p.left_out)}: "
                      f"{p.left_out[0]['why']}")
    misses = p.infeasible if not p.ranked else []
    for m in misses[:5]:
        at = f" at {m['count']} instances" if m["count"] else ""
        console.print(f"  {m['candidate']}{at}: {m['fails']}")
    if p.hosting is not None:
        print_hosting(p.hosting)
    if p.whatif:
        w = p.whatif
        console.print(f"autoscaling what-if ({w['label']}): instances {w['min_serving']} -> {w['max_serving']} -> "
                      f"{w['end_serving']}; {w['failed_while_scaling']:,} requests failed and p95 reached "
                      f"{w['worst_minute_p95_ms']:,.0f} ms while scaling out; mean {w['mean_instances']:.2f} instances")


def print_hosting(h) -> None:
    """The cheapest answer of each hosting option, and why the winner wins."""
    if h.options:
        t = Table(title=f"hosting options for the same models, traffic and SLOs: the cheapest of each "
                        f"({h.simulations} more simulations)")
        for _, head in HOSTING_COLUMNS:
            t.add_column(head, justify="right")
        for i, o in enumerate(h.options):
            r = o.row()
            t.add_row(*[_cell(k, r[k]) for k, _ in HOSTING_COLUMNS], style="bold green" if i == 0 else None)
        console.print(t)
    console.print(h.verdict)
    for line in h.left_out:
        console.print(f"  {line}")


def _cell(key: str, v) -> str:
    if v is None:
        return "-"
    if key == "error_rate" or key == "cache_hit_ratio":
        return f"{v:.2%}"
    if key == "threshold":
        return f"{v:g}"
    if key in ("cost_per_hour_usd", "cost_per_million_usd"):
        return _fmt(v, 2)
    if key in ("cost_per_month_usd", "usd_per_month", "usd_per_month_daily"):
        return _fmt(v, 0)
    return _fmt(v, 1) if isinstance(v, float) else str(v)


# --- a plan's files ------------------------------------------------------------------------
def plan_points(p) -> list[dict]:
    """Every simulated (candidate, count) with its measures: the Pareto plot's points."""
    rows = []
    for c in p.candidates:
        for n, m in sorted(c.tried.items()):
            rows.append({"instance_type": c.instance_type, "framework": c.framework, "threshold": c.threshold,
                         "max_batch": c.max_batch, "triton_instances": c.triton_instances,
                         "count": n, "cost_per_hour_usd": n * c.price,
                         "meets_slo": all(v.ratio <= 1 for v in m["violations"]),
                         **{k: m[k] for k in ("p50_ms", "p95_ms", "p99_ms", "error_rate", "cold_start_share",
                                              "cache_hit_ratio", "models_resident", "gpu_utilization", "ok_rps")}})
    return rows


def write_plan(p, out: str | Path) -> dict[str, Path]:
    """plan.csv/.parquet (the ranked table), simulations.csv/.parquet (every point),
    infeasible.csv, the plots as PNG, and report.html with all of it embedded."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    points = plan_points(p)
    for name, rows in (("plan", p.ranked), ("simulations", points)):
        if rows:
            for f in write_table(rows, out / name):
                files[f.name] = f
    misses = p.infeasible
    if misses:
        files["infeasible.csv"] = write_table(misses, out / "infeasible")[0]
    bounds = [{"candidate": c.label, "min_count": c.n_min, "max_count": c.n_max,
               "bounds": "; ".join(c.bounds), "ruled_out": c.infeasible or "", "stopped": c.stopped or ""}
              for c in p.candidates]
    sections = []
    m = p.mix
    asked = (f"<p>{sum(g.copies for g in m.models):,} models in {len(m.models)} groups "
             f"({', '.join(f'{g.name}: {g.copies} copies, share {g.share:g}' for g in m.models)}); "
             f"traffic: {_traffic(m)}; SLOs: {html_slo(m)}; budget: "
             f"{'%s USD/month' % format(m.budget_usd_per_month, ',.0f') if m.budget_usd_per_month else 'none'}. "
             f"{p.simulations} simulations of {m.simulation.duration_s:g} s each (judged after "
             f"{m.simulation.warmup_s:g} s), seed {m.simulation.seed}.</p>")
    sections.append(("The question", asked))
    if p.ranked:
        cols = [k for k, _ in PLAN_COLUMNS] + [k for k in ("cost_per_month_autoscaled_usd",) if k in p.ranked[0]]
        sections.append(("Ranked plan: cheapest configurations meeting every SLO", html_table(p.ranked, cols)))
    else:
        sections.append(("Infeasible", "<p>No configuration meets every SLO. The closest, and what fails first "
                         "(at the largest count simulated):</p>" + html_table(misses[:10])))
    if points:
        b64 = pareto_png(points, m.slo.p95_ms)
        files["pareto.png"] = save_png(b64, out / "pareto.png")
        sections.append(("Cost against p95", img(b64, "cost vs p95")))
    if p.capacity:
        counts = {r["instance_type"]: r["count"] for r in reversed(p.ranked)}
        counts.update({c.instance_type: c.hi for c in p.candidates if c.hi and c.instance_type not in counts})
        b64 = capacity_png(p.capacity, counts, m.traffic.peak_rps)
        files["capacity.png"] = save_png(b64, out / "capacity.png")
        rows = [{"instance_type": k, "count": counts[k], "capacity_rps": v, "per_instance_rps": v / counts[k]}
                for k, v in sorted(p.capacity.items(), key=lambda kv: -kv[1] / counts[kv[0]])]
        sections.append(("Capacity per instance type", img(b64, "capacity") + html_table(rows)))
    if p.whatif:
        w = p.whatif
        b64 = scaling_png(w["timeline"], w["minutes"], w["duration_s"], w["label"])
        files["autoscaling.png"] = save_png(b64, out / "autoscaling.png")
        files["autoscaling.csv"] = write_table(w["minutes"], out / "autoscaling")[0]
        sections.append(("Autoscaling what-if", img(b64, "autoscaling") + f"<p>instances {w['min_serving']} -> "
                         f"{w['max_serving']} -> {w['end_serving']}; {w['failed_while_scaling']:,} requests failed and "
                         f"the worst minute's p95 was {w['worst_minute_p95_ms']:,.0f} ms between the step and the last "
                         f"new instance in service; {w['mean_instances']:.2f} instances billed on average.</p>"))
    if p.hosting is not None:
        h = p.hosting
        rows = [o.row() for o in h.options]
        if rows:
            files["hosting.csv"] = write_table(rows, out / "hosting")[0]
            files["copy_capacity.csv"] = write_table(h.capacity, out / "copy_capacity")[0]
        sections.append(("Hosting options: MME, one endpoint per model, inference components",
                         html_table(rows, [k for k, _ in HOSTING_COLUMNS] + ["why"])
                         + f"<p>{html.escape(h.verdict)}</p>"
                         + "".join(f"<p class=note>{html.escape(x)}</p>" for x in h.left_out)
                         + "<p class=note>What one always-loaded copy on one GPU serves within the SLOs:</p>"
                         + html_table(h.capacity)))
    if p.left_out:
        sections.append(("Instance types left out of the MME search", html_table(p.left_out)))
    if p.ranked and misses:
        sections.append(("Candidates with no count meeting the SLOs", html_table(misses)))
    sections.append(("Every candidate: bounds and why its search stopped", html_table(bounds)))
    files["report.html"] = html_report(f"mmesim plan: {m.name}", sections, out / "report.html")
    return files


def _traffic(m) -> str:
    t = m.traffic
    base = f"{t.peak_rps:g} req/s at peak" if t.peak_rps else (f"{t.users} users" if t.users else f"trace {t.trace}")
    return base + (f", daily pattern averaging {t.mean_multiplier:.0%} of the peak" if t.daily else "")


def html_slo(m) -> str:
    s = m.slo
    parts = [f"p95 &lt; {s.p95_ms:g} ms" if s.p95_ms else "", f"p99 &lt; {s.p99_ms:g} ms" if s.p99_ms else "",
             f"errors &lt; {s.max_error_rate:.2%}",
             f"cold starts &lt; {s.max_cold_start_share:.1%}" if s.max_cold_start_share is not None else ""]
    return ", ".join(x for x in parts if x)
