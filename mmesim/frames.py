"""pandas DataFrames of summaries, comparisons, plans and sweeps, for notebooks (a run's
requests: ``Run.to_pandas()``).

Optional (``pip install 'mmesim[pandas]'``): everything else in mmesim works without pandas.
The frames are built from the same objects and files the CLI writes, so a DataFrame of a
prediction and one of a measurement have the same columns."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmesim.errors import ConfigError
from mmesim.optional import require

if TYPE_CHECKING:                         # pragma: no cover
    import pandas as pd

    from mmesim.results.compare import Comparison
    from mmesim.results.summary import Summary

SCALARS = ("kind", "instance_type", "instance_count", "duration_s", "max_models_loaded", "latency_ms",
           "throughput_qps", "max_concurrent_users", "p50_ms", "p95_ms", "p99_ms", "requests", "failures",
           "cold_starts", "loads", "unloads", "peak_gpu_memory_bytes", "gpu_memory_utilization_peak",
           "cost_per_hour_usd", "cost_per_million_usd")
STEP_COLUMNS = ("users", "requests", "failures", "rps", "avg_ms", "p50_ms", "p95_ms", "p99_ms")


def pandas():
    """The pandas module, or one clear line saying which extra brings it."""
    return require("pandas", "pandas", "DataFrames")


def steps_frame(summary: Summary) -> pd.DataFrame:
    """The per-user-step table (requests, failures, requests/s, percentiles), one row per step."""
    return pandas().DataFrame(summary.steps, columns=list(STEP_COLUMNS)).set_index("users")


def summary_frame(*summaries: Summary, names: list[str] | None = None) -> pd.DataFrame:
    """The headline figures, one row per Summary (named by ``names`` or by kind)."""
    pd = pandas()
    rows = [{k: getattr(s, k) for k in SCALARS} for s in summaries]
    index = names or [s.kind for s in summaries]
    return pd.DataFrame(rows, index=pd.Index(index, name="run"))


def failures_frame(summary: Summary) -> pd.DataFrame:
    """Failed requests by cause (SageMaker's names), most frequent first."""
    pd = pandas()
    df = pd.DataFrame(sorted(summary.failures_by_cause.items(), key=lambda kv: -kv[1]), columns=["cause", "requests"])
    return df.set_index("cause")


def comparison_frame(comparison: Comparison | dict) -> pd.DataFrame:
    """Predicted vs measured: one row per figure, then one per (user step, figure)."""
    pd = pandas()
    data = comparison if isinstance(comparison, dict) else comparison.to_dict()
    rows = [dict(r, scope="run") for r in data["figures"]] + [dict(r, scope="step") for r in data["steps"]]
    cols = ["scope", "users", "figure", "predicted", "measured", "error", "tolerance", "ok"]
    return pd.DataFrame(rows, columns=cols)


def plan_frame(plan: Any) -> pd.DataFrame:
    """A plan's ranked candidates (cheapest first), or its closest misses when none is feasible."""
    return pandas().DataFrame(plan.ranked or plan.infeasible)


def sweep_frame(rows: list[dict]) -> pd.DataFrame:
    """A sweep's grid: one row per simulated point, its parameters then its figures."""
    return pandas().DataFrame(rows)


@dataclass
class RunFrames:
    """One output folder (of simulate, loadtest, or each side of validate) as DataFrames."""

    folder: Path
    summary: Summary
    requests: pd.DataFrame | None      # None when the folder has no requests.csv

    @property
    def steps(self) -> pd.DataFrame:
        return steps_frame(self.summary)

    @property
    def failures(self) -> pd.DataFrame:
        return failures_frame(self.summary)

    @property
    def figures(self) -> pd.DataFrame:
        return summary_frame(self.summary)


def read_summary(folder: str | Path) -> Summary:
    from mmesim.results.summary import Summary
    from mmesim.serde import load

    path = Path(folder) / "summary.json"
    if not path.is_file():
        raise ConfigError("no summary.json: not an output folder of mmesim simulate, loadtest or validate",
                          source=str(folder))
    return load(Summary, path)


def read_run(folder: str | Path) -> RunFrames:
    """A folder written by ``simulate --out`` or ``loadtest --out`` (a prediction or a measurement)."""
    from mmesim.results.records import Records

    folder = Path(folder)
    summary = read_summary(folder)
    path = folder / "requests.csv"
    requests = Records.read_csv(path).to_pandas() if path.is_file() else None
    return RunFrames(folder, summary, requests)


@dataclass
class ValidationFrames:
    """A ``validate --out`` folder: both runs and the comparison."""

    folder: Path
    prediction: RunFrames
    measurement: RunFrames
    comparison: pd.DataFrame

    @property
    def figures(self) -> pd.DataFrame:
        return summary_frame(self.prediction.summary, self.measurement.summary,
                             names=["prediction", "measurement"])


def read_folder(folder: str | Path) -> RunFrames | ValidationFrames | pd.DataFrame:
    """Any output folder back as DataFrames: a run's (summary.json), a validation's
    (comparison.json), or the table of a plan (plan.csv, its ranked candidates) or a sweep
    (results.csv, its grid)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError("no such output folder", source=str(folder))
    for table in ("plan.csv", "results.csv"):
        if (folder / table).is_file() and not (folder / "summary.json").is_file():
            return pandas().read_csv(folder / table)
    if (folder / "comparison.json").is_file():
        data = json.loads((folder / "comparison.json").read_text())
        return ValidationFrames(folder, read_run(folder / "prediction"), read_run(folder / "measurement"),
                                comparison_frame(data))
    return read_run(folder)
