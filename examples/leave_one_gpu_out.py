"""Leave one GPU out: predict every ml.g5.2xlarge (A10G) row from profiles derived on
ml.g4dn.2xlarge (T4) rows alone, and every T4 row from A10G-only profiles; then predict
ml.p3.2xlarge (V100), whose published rows the project does not have, from each.

    python examples/leave_one_gpu_out.py [--markdown] [--seed 0] [--rederive] [--corpus]

Cells: published / predicted (relative error for latency and throughput); **x** marks a
figure outside the targets (max models within 2, latency and throughput within 15 %,
max users within one 20-user step). --rederive re-fits the one-GPU profiles first (about
5 minutes a GPU) instead of reading the shipped ones in mmesim/derive/one_gpu/.
--corpus first prints the same test on the multi-GPU corpus (NVIDIA DeepLearningExamples,
mmesim.derive.corpus): each of T4, V100, A30, A40 and A100 predicted from the others.
"""

from __future__ import annotations

import argparse

from mmesim.derive import corpus
from mmesim.derive import leave_one_out as loo


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown (the README's)")
    ap.add_argument("--rederive", action="store_true", help="re-derive the one-GPU profiles instead of reading them")
    ap.add_argument("--no-v100", action="store_true", help="skip the ml.p3.2xlarge predictions")
    ap.add_argument("--corpus", action="store_true", help="also leave each GPU out of the DeepLearningExamples corpus")
    args = ap.parse_args()
    if args.corpus:
        preds = corpus.leave_one_gpu_out()
        print("\n### Corpus: each GPU predicted from the others\n" if args.markdown else "\nCorpus:")
        print(corpus.markdown(preds) if args.markdown else corpus.summary(preds))
    v100 = {}
    for source in loo.GPUS:
        profiles = loo.derive_gpu(source) if args.rederive else loo.one_gpu_profiles(source)
        rows = loo.leave_one_out(source, seed=args.seed, profiles=profiles)
        print(f"\n### {source}-derived profiles -> {rows[0].instance_type}\n" if args.markdown else
              f"\n{source}-derived profiles predicting {rows[0].instance_type}:")
        print(loo.markdown(rows))
        if not args.no_v100:
            v100[source] = loo.leave_one_out(source, "ml.p3.2xlarge", seed=args.seed, profiles=profiles)
    if v100:
        print("\n### ml.p3.2xlarge (V100) predictions\n" if args.markdown else "\nml.p3.2xlarge (V100) predictions:")
        print("| model, framework | max models (T4 / A10G-derived) | latency ms | throughput req/s | max users |")
        print("|---|---|---|---|---|")
        by = {s: {(r.profile.rsplit("-", 1)[0]): r.predicted for r in rows} for s, rows in v100.items()}
        for key in by["T4"]:
            t, a = by["T4"][key], by["A10G"].get(key, {})
            cells = [f"{_n(t.get(m))} / {_n(a.get(m))}" for m in loo.METRICS]
            print(f"| {key} | " + " | ".join(cells) + " |")
    return 0


def _n(v) -> str:
    return "-" if v is None else f"{v:.0f}"


if __name__ == "__main__":
    raise SystemExit(main())
