"""Reproduce the published MME-on-GPU load test: every row of the reference's results.csv
beside mmesim's prediction for it, and predictions for ml.p3.2xlarge (V100), which the
reference measured but did not give us, by translating the T4 profiles.

    python examples/reproduce_blog.py [--seed 0] [--out out/reproduce]

Writes reproduce.csv and reproduce.json, and prints the comparison with relative errors.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mmesim.derive.blog import profile_name, reference_rows
from mmesim.endpoint import EndpointConfig
from mmesim.profile import load_profile
from mmesim.report import plot_frameworks
from mmesim.results.summary import summarize
from mmesim.sim import simulate
from mmesim.workload import load_workload

METRICS = ("max_models_loaded", "latency_ms", "throughput_qps", "max_concurrent_users")


def predict(profile_name: str, instance: str, seed: int):
    return summarize(simulate([load_profile(profile_name)], EndpointConfig(instance_type=instance),
                              load_workload("blog"), copies="auto", seed=seed))


def markdown(results: list[dict]) -> str:
    """The two tables of the README's Accuracy section."""
    pub = ["| profile | instance | max models (pub / pred) | latency ms (pub / pred) | throughput req/s (pub / pred) "
           "| max users (pub / pred) |", "|---|---|---|---|---|---|"]
    v100 = ["| profile (translated from T4) | max models | latency ms | throughput req/s | max users |",
            "|---|---|---|---|---|"]
    for r in results:
        if r["published_latency_ms"] is None:
            v100.append(f"| {r['profile']} | {r['predicted_max_models_loaded']} | {r['predicted_latency_ms']:.0f} | "
                        f"{r['predicted_throughput_qps']:.0f} | {r['predicted_max_concurrent_users']} |")
            continue

        def cell(m: str, pct: bool) -> str:
            p, q = r[f"published_{m}"], r[f"predicted_{m}"]
            return f"{p} / {q:.0f}" + (f" ({100 * (q - p) / p:+.1f}%)" if pct else "")
        pub.append(f"| {r['profile']} | {r['instance_type']} | {cell('max_models_loaded', False)} | "
                   f"{cell('latency_ms', True)} | {cell('throughput_qps', True)} | {cell('max_concurrent_users', False)} |")
    return "\n".join(pub) + "\n\n" + "\n".join(v100)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/reproduce")
    ap.add_argument("--markdown", action="store_true", help="also print the README's tables")
    args = ap.parse_args()
    console = Console()
    results, summaries = [], {}
    for row in reference_rows():
        s = predict(profile_name(row), row["instance_type"], args.seed)
        summaries[(row["model"], row["instance_type"], row["framework"])] = s
        results.append({"profile": profile_name(row), "instance_type": row["instance_type"],
                        **{f"published_{m}": row[m] for m in METRICS},
                        **{f"predicted_{m}": getattr(s, m) for m in METRICS}})
    for model in dict.fromkeys(r["model"] for r in reference_rows()):
        for fw in ("pytorch", "tensorrt"):
            s = predict(f"{model}-{fw}-t4", "ml.p3.2xlarge", args.seed)
            results.append({"profile": f"{model}-{fw}-t4", "instance_type": "ml.p3.2xlarge",
                            **{f"published_{m}": None for m in METRICS},
                            **{f"predicted_{m}": getattr(s, m) for m in METRICS}})

    table = Table(title=f"reference vs mmesim (seed {args.seed})")
    for col in ("profile", "instance", "max models", "latency ms", "throughput qps", "max users"):
        table.add_column(col, justify="right" if col not in ("profile", "instance") else "left")
    worst = {m: 0.0 for m in METRICS}
    exact = {"max_models_loaded": 0, "max_concurrent_users": 0}
    compared = 0
    for r in results:
        cells = []
        for m in METRICS:
            pub, pred = r[f"published_{m}"], r[f"predicted_{m}"]
            if pub is None:
                cells.append(f"{pred:.0f}" if pred is not None else "-")
                continue
            err = (pred - pub) / pub if pred is not None else float("inf")
            worst[m] = max(worst[m], abs(err))
            if m in exact:
                exact[m] += pred == pub
            cells.append(f"{pub:.0f} / {pred:.0f}" + ("" if m in exact else f" ({100 * err:+.1f}%)"))
        compared += r["published_latency_ms"] is not None
        table.add_row(r["profile"], r["instance_type"], *cells)
    console.print(table)
    console.print("cells: published / predicted. ml.p3.2xlarge rows are predictions only (translated from T4).")
    console.print(f"over {compared} published rows: max models exact {exact['max_models_loaded']}/{compared}, "
                  f"max users exact {exact['max_concurrent_users']}/{compared}, worst latency error "
                  f"{100 * worst['latency_ms']:.1f}%, worst throughput error {100 * worst['throughput_qps']:.1f}%")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reproduce.json").write_text(json.dumps(results, indent=2) + "\n")
    with (out / "reproduce.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(results[0]))
        w.writeheader()
        w.writerows(results)
    if args.markdown:
        print(markdown(results))
    charts = 0
    for (model, instance, fw), s in summaries.items():
        if fw == "pytorch" and (model, instance, "tensorrt") in summaries:
            plot_frameworks({"TorchScript": s, "TensorRT": summaries[(model, instance, "tensorrt")]},
                            out / f"frameworks-{model}-{instance}.png", title=f"{model} on {instance} (predicted)")
            charts += 1
    console.print(f"wrote {out / 'reproduce.csv'}, {out / 'reproduce.json'} and {charts} framework charts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
