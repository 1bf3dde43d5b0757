"""Write everything a run produced into one folder: machine-readable files first
(summary.json, Locust CSVs, request records, CloudWatch series), then charts.

It sits above ``results`` (numbers) and ``report`` (pictures), which know nothing of each other."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from mmesim.report import plot_run_memory, plot_steps
from mmesim.results import cloudwatch
from mmesim.results.locust_csv import write_locust_csv
from mmesim.results.records import Run
from mmesim.results.summary import Summary
from mmesim.units import MiB


def write_outputs(run: Run, summary: Summary, out: str | Path, prefix: str = "mmesim") -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["summary"] = out / "summary.json"
    files["summary"].write_text(json.dumps(summary.model_dump(mode="json"), indent=2) + "\n")
    files.update(write_locust_csv(run, out / prefix))
    files["requests"] = run.records.write_csv(out / "requests.csv")
    files["cloudwatch"] = cloudwatch.write_csv(run, out / "cloudwatch.csv")
    if run.memory_trace:
        files["max_models_trace"] = out / "max_models_trace.csv"
        with files["max_models_trace"].open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["models_loaded", "gpu_memory_used_mib", "used_share"])
            for n, used in run.memory_trace:
                w.writerow([n, f"{used / MiB:.1f}", f"{used / run.gpu_total_bytes:.4f}"])
    title = f"{', '.join(run.profiles)} on {run.instance_count} x {run.instance_type}"
    if summary.steps:
        files["steps_png"] = plot_steps(summary.steps, out / "steps.png", title=title)
    if run.memory:
        files["memory_png"] = plot_run_memory(run, out / "memory.png", title=title)
    return files
