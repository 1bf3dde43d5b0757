"""Prediction vs measurement: every summary figure and every user step side by side, with
relative errors, checked against tolerances (``mmesim validate``).

Relative error = (predicted - measured) / measured. Tolerances name figures: ``throughput``,
``latency``, ``p50``, ``p95``, ``p99`` are relative (0.05 = 5 %); ``users`` (max concurrent
users) and ``models`` (max models loaded) are absolute differences (0 = exact). Only the
figures named are checked; per-step figures are shown, and checked with the same tolerances
when asked (``check_steps``). Each line names the source of its measured figure; one nothing
observed (a Locust run's loads, unloads and cold starts) is None, never 0.

A measurement can be repeated (``validate --repeat N``, or several ``--measured`` folders):
the same load test run again on the same endpoint does not give the same figures, least of
all on shared or virtual hosts (on this project's 2-vCPU VM the host's speed drifts by 10-20 %
within minutes). A prediction cannot be judged more finely than its measurement repeats, so
with repeats each figure is compared with their median and carries their range
(``measured_range``) and whether the prediction falls inside it (``within_range``): a miss
inside the range is as far from the measurement as the measurement is from itself. The
tolerances still judge against the median; the range is shown, never used to pass."""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mmesim.errors import ConfigError
from mmesim.results.summary import Summary

DEFAULT_TOLERANCE = "throughput=0.05,p50=0.10,p95=0.10"
# tolerance key -> (Summary field, step field or None, relative?)
FIGURES = {
    "throughput": ("throughput_qps", "rps", True),
    "latency": ("latency_ms", "avg_ms", True),
    "p50": ("p50_ms", "p50_ms", True),
    "p95": ("p95_ms", "p95_ms", True),
    "p99": ("p99_ms", "p99_ms", True),
    "users": ("max_concurrent_users", None, False),
    "models": ("max_models_loaded", None, False),
}
# shown, never checked unless a tolerance names them through the figures above
SHOWN = ("requests", "failures", "cold_starts", "loads", "unloads")


def parse_tolerance(text: str | None) -> dict[str, float]:
    """``throughput=0.05,p50=0.10`` -> {"throughput": 0.05, "p50": 0.1}."""
    out: dict[str, float] = {}
    for part in (text if text is not None else DEFAULT_TOLERANCE).split(","):
        if not part.strip():
            continue
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in FIGURES:
            raise ConfigError(f"unknown figure; use {', '.join(FIGURES)}", field="--tolerance", value=key)
        try:
            out[key] = float(value)
        except ValueError:
            raise ConfigError("expected figure=number", field="--tolerance", value=part) from None
        if not out[key] >= 0:          # NaN too: it would pass every comparison
            raise ConfigError("tolerances are numbers >= 0", field="--tolerance", value=part)
    if not out:
        raise ConfigError(f"no figure to check; use figure=number for some of {', '.join(FIGURES)}",
                          field="--tolerance", value=text)
    return out


def relative_error(predicted, measured) -> float | None:
    if predicted is None or measured is None or measured == 0:
        return None
    return (predicted - measured) / measured


@dataclass
class Line:
    figure: str
    predicted: float | None
    measured: float | None
    error: float | None                 # relative, or absolute for users/models
    tolerance: float | None = None
    ok: bool | None = None              # None: not checked
    users: int | None = None            # per-step lines: the user step
    source: str | None = None           # what observed the measured figure (None: nothing did)
    measured_range: tuple[float, float] | None = None   # with repeats: the lowest and highest measured
    within_range: bool | None = None    # with repeats: the prediction inside that range


@dataclass
class Comparison:
    lines: list[Line] = field(default_factory=list)
    steps: list[Line] = field(default_factory=list)
    repeats: int = 1                    # measurements compared against (their median, with their range)

    @property
    def misses_within_range(self) -> list[Line]:
        """Figures beyond tolerance whose prediction still lies within the repeats' range."""
        return [x for x in self.failed if x.within_range]

    @property
    def failed(self) -> list[Line]:
        return [x for x in self.lines + self.steps if x.ok is False]

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict:
        return {"passed": self.passed, "repeats": self.repeats, "figures": [asdict(x) for x in self.lines],
                "steps": [asdict(x) for x in self.steps]}

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def write_csv(self, path: str | Path) -> Path:
        path = Path(path)
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(("users", "figure", "predicted", "measured", "error", "tolerance", "ok", "source",
                        "measured_min", "measured_max", "within_range"))
            for x in self.lines + self.steps:
                low, high = x.measured_range or (None, None)
                w.writerow(("" if x.users is None else x.users, x.figure, _cell(x.predicted), _cell(x.measured),
                            _cell(x.error), _cell(x.tolerance), "" if x.ok is None else int(x.ok), x.source or "",
                            _cell(low), _cell(high), "" if x.within_range is None else int(x.within_range)))
        return path


def _cell(v) -> str:
    return "" if v is None else f"{v:.6g}"


def _line(name: str, p, ms: list, relative: bool, tol: float | None, users: int | None = None,
          source: str | None = None) -> Line:
    """One figure: predicted ``p`` against the measured values ``ms`` (one per repeat; None
    where a repeat did not observe it), compared with their median."""
    seen = [m for m in ms if m is not None]
    m = statistics.median(seen) if seen else None
    if m is not None and all(isinstance(v, int) for v in seen) and float(m).is_integer():
        m = int(m)
    err = relative_error(p, m) if relative else (None if p is None or m is None else float(p - m))
    ok = None
    if tol is not None:
        ok = (p is None and m is None) or (err is not None and abs(err) <= tol + 1e-12)
    span = within = None
    if len(seen) > 1:                   # a range of one observed value would say nothing
        span = (min(seen), max(seen))
        within = None if p is None else span[0] <= p <= span[1]
    return Line(name, p, m, err, tol, ok, users, source, span, within)


def compare(predicted: Summary, measured: Summary | Sequence[Summary], tolerance: dict[str, float] | None = None,
            check_steps: bool = False) -> Comparison:
    """Every figure of two Summaries and every user step both have, with errors; the figures
    a tolerance names are checked (the steps' too with ``check_steps``). ``measured`` may be
    several Summaries of the same load test repeated: each figure is then their median, with
    their range (a step, over the repeats that reached it)."""
    runs = [measured] if isinstance(measured, Summary) else list(measured)
    if not runs:
        raise ValueError("compare needs at least one measured Summary")
    tol = parse_tolerance(None) if tolerance is None else tolerance
    out = Comparison(repeats=len(runs))
    src = runs[0].sources.get

    def each(get) -> list:
        return [get(r) for r in runs]

    for key, (attr, _, relative) in FIGURES.items():
        out.lines.append(_line(key, getattr(predicted, attr), each(lambda r: getattr(r, attr)), relative,
                               tol.get(key), source=src(attr)))
    for attr in SHOWN:
        out.lines.append(_line(attr, getattr(predicted, attr), each(lambda r: getattr(r, attr)), True, None,
                               source=src(attr)))
    if predicted.client_cpu_ms_per_request is not None and any(r.client_cpu_ms_per_request is not None for r in runs):
        out.lines.append(_line("client cpu ms per request", predicted.client_cpu_ms_per_request,
                               each(lambda r: r.client_cpu_ms_per_request), True, None,
                               source=src("client_cpu_ms_per_request")))
    causes = sorted(set(predicted.failures_by_cause).union(*(r.failures_by_cause for r in runs)))
    for c in causes:
        out.lines.append(_line(f"failures: {c}", predicted.failures_by_cause.get(c, 0),
                               each(lambda r: r.failures_by_cause.get(c, 0)), True, None, source=src("failures")))
    if predicted.server and any(r.server for r in runs):     # inside the server: where a latency miss comes from
        for key, value in predicted.server.items():
            out.lines.append(_line(key.removesuffix("_ms").replace("_", " "), value,
                                   each(lambda r: (r.server or {}).get(key)), True, None, source=src("server")))
    for s in predicted.steps:
        reached = [m for r in runs for m in r.steps if m["users"] == s["users"]]
        if not reached:
            continue
        for key, (_, step_attr, _) in FIGURES.items():
            if step_attr and step_attr in s:
                out.steps.append(_line(step_attr.removesuffix("_ms"), s[step_attr], [m[step_attr] for m in reached],
                                       True, tol.get(key) if check_steps else None, users=s["users"],
                                       source=src("requests")))
        out.steps.append(_line("failures", s["failures"], [m["failures"] for m in reached], True, None,
                               users=s["users"], source=src("failures")))
    return out
