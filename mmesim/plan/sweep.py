"""`mmesim sweep PARAM=v1,v2 ...`: every combination of the values, one simulation each,
in parallel (local processes or a Dask cluster), into one results table and one report.

PARAM names: an EndpointConfig field (``instance_count``, ``memory_threshold``, ...),
``autoscaling.FIELD``, ``workload.FIELD[.FIELD]`` (e.g. ``workload.popularity.s``),
``copies`` (N or auto), ``profile`` (one profile per point) or ``seed``. Every point is
checked before any runs, and a bad one is named with its parameter and value."""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mmesim.endpoint import EndpointConfig
from mmesim.errors import ConfigError
from mmesim.plan.parallel import run_tasks
from mmesim.plan.report import html_report, html_table, img, write_table
from mmesim.profile import ModelProfile, load_profile
from mmesim.serde import read_fields, validate
from mmesim.workload import Workload, load_workload


@dataclass
class SweepBase:
    """What every point starts from."""

    profiles: list[ModelProfile]
    endpoint: dict
    workload: Workload
    copies: int | list[int] | str = "auto"
    seed: int = 0
    profile_names: list[str] = field(default_factory=list)

    @classmethod
    def from_cli(cls, profiles: list[str], instance: str | None, endpoint: str | None, workload: str,
                 copies: str, seed: int) -> "SweepBase":
        data = read_fields(endpoint) if endpoint else {}
        if instance:
            data["instance_type"] = instance
        if copies != "auto":
            try:
                values = [int(v) for v in copies.split(",")]
            except ValueError:
                raise ConfigError("expected N, N,N,... or auto", field="--copies", value=copies) from None
            if min(values) < 1:
                raise ConfigError("copies are whole numbers >= 1", field="--copies", value=copies)
            copies = values[0] if len(values) == 1 else values
        return cls([load_profile(p) for p in profiles], data, load_workload(workload), copies, seed, list(profiles))


def parse_params(items: list[str]) -> dict[str, list]:
    """``["instance_count=1,2", "memory_threshold=0.8,0.9"]`` -> {name: [values]} (YAML scalars)."""
    grid: dict[str, list] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name or not values:
            raise ConfigError("expected PARAM=v1,v2,...", field="sweep", value=item)
        if name in grid:
            raise ConfigError("parameter given twice", field=name, value=item)
        grid[name] = [yaml.safe_load(v) for v in values.split(",") if v.strip() != ""]
        if not grid[name]:
            raise ConfigError("no values", field=name, value=item)
    return grid


@dataclass
class Point:
    index: int
    params: dict
    profiles: list[ModelProfile]
    endpoint: EndpointConfig
    workload: Workload
    copies: int | list[int] | str
    seed: int


def _set(data: dict, path: list[str], value, name: str) -> None:
    """Set ``value`` at a dotted path of dict keys and list indices (``rates.0.rate``)."""
    try:
        for i, key in enumerate(path):
            last = i == len(path) - 1
            if isinstance(data, list):
                if last:
                    data[int(key)] = value
                else:
                    data = data[int(key)]
            elif last:
                data[key] = value
            else:
                data = data.setdefault(key, {})
    except (ValueError, IndexError, TypeError):
        raise ConfigError("no such place in the workload or endpoint", field=name, value=value) from None


def points(base: SweepBase, grid: dict[str, list]) -> list[Point]:
    names = list(grid)
    out = []
    endpoint_fields = set(EndpointConfig.model_fields)
    for i, combo in enumerate(itertools.product(*(grid[n] for n in names))):
        ep, wl = copy.deepcopy(base.endpoint), base.workload.model_dump(mode="json")
        profiles, copies, seed = base.profiles, base.copies, base.seed
        for name, value in zip(names, combo):
            head, _, rest = name.partition(".")
            where = f"sweep {name}"
            if name in ("seed", "copies"):
                whole = isinstance(value, int) and not isinstance(value, bool)
                if name == "copies" and value != "auto" and not (whole and value >= 1):
                    raise ConfigError("copies takes whole numbers >= 1 or auto", field=name, value=value)
                if name == "seed" and not (whole and value >= 0):
                    raise ConfigError("a seed is a whole number >= 0", field=name, value=value)
                seed, copies = (value, copies) if name == "seed" else (seed, value)
            elif name == "profile":
                try:
                    profiles = [load_profile(str(value))]
                except ConfigError as exc:
                    raise ConfigError(str(exc), source=where) from None
            elif head == "workload" and rest:
                _set(wl, rest.split("."), value, name)
            elif head == "autoscaling" and rest:
                _set(ep, ["autoscaling"] + rest.split("."), value, name)
            elif name in endpoint_fields:
                ep[name] = value
            else:
                raise ConfigError("not a sweep parameter (an EndpointConfig field, autoscaling.X, workload.X, "
                                  "copies, profile or seed)", field=name, value=value)
        if not profiles:
            raise ConfigError("say which model: --profile NAME, or profile=... in the sweep", field="--profile")
        if "instance_type" not in ep:
            raise ConfigError("say which instance type: --instance, --endpoint or instance_type=...",
                              field="--instance")
        where = "sweep " + ", ".join(f"{n}={v}" for n, v in zip(names, combo))
        out.append(Point(i, dict(zip(names, combo)), profiles, validate(EndpointConfig, ep, source=where),
                         validate(Workload, wl, source=where), copies, seed))
    return out


def run_point(pt: Point) -> dict:
    """One point: simulate, summarise, keep the figures a table needs (a worker function)."""
    from mmesim.results.summary import summarize
    from mmesim.sim import simulate

    run = simulate(pt.profiles, pt.endpoint, pt.workload, copies=pt.copies, seed=pt.seed)
    s = summarize(run)
    return {**{k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in pt.params.items()},
            "requests": s.requests, "failures": s.failures,
            "error_rate": s.failures / s.requests if s.requests else None,
            "p50_ms": s.p50_ms, "p95_ms": s.p95_ms, "p99_ms": s.p99_ms,
            "latency_ms": s.latency_ms, "throughput_qps": s.throughput_qps,
            "max_concurrent_users": s.max_concurrent_users, "max_models_loaded": s.max_models_loaded,
            "cold_starts": s.cold_starts, "loads": s.loads, "unloads": s.unloads,
            "mean_instances": run.mean_instances(), "cost_per_hour_usd": s.cost_per_hour_usd,
            "cost_per_million_usd": s.cost_per_million_usd}


def sweep(base: SweepBase, grid: dict[str, list], *, cluster: str | None = None, workers: int | None = None,
          quiet: bool = False) -> list[dict]:
    """Every point's row, in grid order, wherever they ran."""
    pts = points(base, grid)
    return run_tasks(run_point, pts, cluster=cluster, workers=workers, label=f"sweep: {len(pts)} simulations",
                     quiet=quiet)


def write_sweep(rows: list[dict], grid: dict[str, list], out: str | Path) -> dict[str, Path]:
    """results.csv (+ .parquet) and report.html with the table and one plot per numeric parameter."""
    from mmesim.plan.report import _png
    from mmesim.report._figure import FAIL_BARS, LATENCY, new_figure

    out = Path(out)
    files = {f.name: f for f in write_table(rows, out / "results")}
    sections = [("Results", html_table(rows))]
    for name, values in grid.items():
        if len(values) < 2 or not all(isinstance(v, (int, float)) for v in values):
            continue
        fig = new_figure(8, 4)
        ax = fig.subplots()
        xs = [r[name] for r in rows]
        ax.plot(xs, [r["p95_ms"] if r["p95_ms"] is not None else math.nan for r in rows], "o", color=LATENCY,
                label="p95 ms")
        ax.set_xlabel(name)
        ax.set_ylabel("p95 ms (successful requests)")
        right = ax.twinx()
        right.plot(xs, [100 * (r["error_rate"] or 0) for r in rows], "x", color=FAIL_BARS, label="errors %")
        right.set_ylabel("failed requests, %")
        ax.set_title(f"p95 and errors against {name} (every other parameter's values overlaid)")
        fig.tight_layout()
        sections.append((f"Against {name}", img(_png(fig), name)))
    files["report.html"] = html_report("mmesim sweep: " + " x ".join(f"{n} ({len(v)})" for n, v in grid.items()),
                                       sections, out / "report.html")
    return files
