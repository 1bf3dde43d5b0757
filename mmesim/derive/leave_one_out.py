"""Leave one GPU out: the only honest check of cross-GPU translation the published rows allow.

Profiles are derived from ONE GPU's rows alone (its load-generator ceiling, decoding, fits
and host/GPU split), translated to the other GPU's instance, and the simulated load test is
compared with that GPU's published rows, which nothing was fitted on. The one-GPU profiles
are shipped in mmesim/derive/one_gpu/<gpu>/ (regenerate: ``python -m
mmesim.derive.leave_one_out --write``; a test re-derives one and compares).

Targets (issue 8): max models within 2, latency and throughput within 15 %, max concurrent
users within one step (20 users).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mmesim.derive import blog
from mmesim.endpoint import EndpointConfig
from mmesim.profile import ModelProfile, load_profile
from mmesim.results.summary import summarize
from mmesim.sim.mme import simulate
from mmesim.workload import load_workload

GPUS = {"T4": "ml.g4dn.2xlarge", "A10G": "ml.g5.2xlarge"}
TARGETS = {"max_models_loaded": 2, "latency_ms": 0.15, "throughput_qps": 0.15, "max_concurrent_users": 20}
METRICS = tuple(TARGETS)


def one_gpu_dir(gpu: str) -> Path:
    return Path(str(resources.files(__package__))) / "one_gpu" / blog.GPU_KEYS[gpu]


def derive_gpu(gpu: str, verbose: bool = False, report=None, only: str | None = None) -> list[ModelProfile]:
    """Every profile of ``gpu`` ("T4" or "A10G") from that GPU's published rows alone."""
    fits, _ = blog.derive_all(verbose=verbose, only=only, report=report, gpus=[gpu])
    return [f.profile for f in fits]


def one_gpu_profiles(gpu: str) -> list[ModelProfile]:
    return [load_profile(p) for p in sorted(one_gpu_dir(gpu).glob("*.json"))]


@dataclass
class Row:
    profile: str
    source: str                 # GPU the profile was derived on
    instance_type: str          # where it is predicted
    published: dict | None      # None: no published row (V100)
    predicted: dict

    def error(self, metric: str) -> float | None:
        if self.published is None or self.predicted[metric] is None:
            return None
        pub, pred = self.published[metric], self.predicted[metric]
        return (pred - pub) / pub if metric in ("latency_ms", "throughput_qps") else pred - pub

    def within(self, metric: str) -> bool:
        err = self.error(metric)
        return err is not None and abs(err) <= TARGETS[metric] + 1e-9


def predict(profile: ModelProfile, instance_type: str, seed: int = 0) -> dict:
    s = summarize(simulate([profile], EndpointConfig(instance_type=instance_type), load_workload("blog"), seed=seed))
    return {m: getattr(s, m) for m in METRICS}


def leave_one_out(source: str, instance_type: str | None = None, models: list[str] | None = None,
                  seed: int = 0, profiles: list[ModelProfile] | None = None) -> list[Row]:
    """Predict the other GPU's rows (or ``instance_type``'s, e.g. ml.p3.2xlarge) from the
    profiles derived on ``source`` alone."""
    target = instance_type or next(i for g, i in GPUS.items() if g != source)
    published = {(r["model"], r["framework"]): r for r in blog.reference_rows() if r["instance_type"] == target}
    out = []
    for p in profiles if profiles is not None else one_gpu_profiles(source):
        if models and p.model not in models:
            continue
        row = published.get((p.model, p.framework))
        out.append(Row(p.name, source, target, {m: row[m] for m in METRICS} if row else None, predict(p, target, seed)))
    return out


def markdown(rows: list[Row]) -> str:
    if rows and rows[0].published is None:
        head = ["| profile (derived on " + rows[0].source + ") | max models | latency ms | throughput req/s | max users |",
                "|---|---|---|---|---|"]
        body = [f"| {r.profile} | {r.predicted['max_models_loaded']} | {_num(r.predicted['latency_ms'])} | "
                f"{_num(r.predicted['throughput_qps'])} | {r.predicted['max_concurrent_users']} |" for r in rows]
        return "\n".join(head + body)
    head = [f"| profile (derived on {rows[0].source}) -> {rows[0].instance_type} | max models (pub / pred) | "
            "latency ms (pub / pred) | throughput req/s (pub / pred) | max users (pub / pred) |",
            "|---|---|---|---|---|"]
    body = []
    for r in rows:
        cells = []
        for m in METRICS:
            pub, pred, err = r.published[m], r.predicted[m], r.error(m)
            mark = "" if r.within(m) else " **x**"
            if m in ("latency_ms", "throughput_qps"):
                cells.append(f"{pub} / {_num(pred)} ({100 * err:+.0f}%){mark}" if err is not None else f"{pub} / -{mark}")
            else:
                cells.append(f"{pub} / {pred}{mark}")
        body.append(f"| {r.profile} | " + " | ".join(cells) + " |")
    return "\n".join(head + body + ["", score(rows)])


def score(rows: list[Row]) -> str:
    n = len(rows)
    within = {m: sum(r.within(m) for r in rows) for m in METRICS}
    every = sum(all(r.within(m) for m in METRICS) for r in rows)
    errs = sorted(abs(r.error("throughput_qps")) for r in rows if r.error("throughput_qps") is not None)
    lat = sorted(abs(r.error("latency_ms")) for r in rows if r.error("latency_ms") is not None)
    med = (lambda v: 100 * v[len(v) // 2] if v else float("nan"))
    return (f"within target on every metric: {every}/{n} rows; max models {within['max_models_loaded']}/{n}, "
            f"latency {within['latency_ms']}/{n}, throughput {within['throughput_qps']}/{n}, "
            f"max users {within['max_concurrent_users']}/{n}; median |error| latency {med(lat):.0f}%, "
            f"throughput {med(errs):.0f}%")


def _num(v) -> str:
    return "-" if v is None else f"{v:.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="re-derive the one-GPU profiles and write them")
    ap.add_argument("--gpu", choices=list(GPUS), action="append", help="only this source GPU (repeatable)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    for gpu in args.gpu or list(GPUS):
        if args.write:
            out = one_gpu_dir(gpu)
            out.mkdir(parents=True, exist_ok=True)
            for p in derive_gpu(gpu, args.verbose, report=lambda f: print(f"{f.profile.name}: {f.latency_ms:.1f} ms "
                                                                         f"{f.throughput_qps:.1f} qps", flush=True)):
                p.save(out / f"{p.name}.json")
        print(markdown(leave_one_out(gpu)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
