"""A profile measured on a GPU that no SageMaker instance type has (here an A100: NVIDIA's
published BERT-large TensorRT execution times, mmesim/derive/reference/dle/) predicted on
catalogue instances, and checked where the corpus has the target GPU's own rows (T4, V100).

    python examples/profile_from_any_gpu.py [--out DIR] [--seed 0]

Writes the A100 profile to DIR (default: a temporary folder), so that
`mmesim simulate --profile DIR/bert-large-tensorrt-a100-80gb.json --instance ml.g5.2xlarge`
gives the same prediction.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from mmesim.catalog import load_catalog
from mmesim.derive import corpus
from mmesim.endpoint import EndpointConfig
from mmesim.results.summary import summarize
from mmesim.sim.mme import simulate
from mmesim.sim.translate import translate
from mmesim.workload import load_workload


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="mmesim-a100-"))
    out.mkdir(parents=True, exist_ok=True)
    family = [r for r in corpus.rows() if r.model == "bert-large" and r.engine == "TensorRT"]
    a100 = corpus.measured_profile(family, "a100-80gb")
    path = out / f"{a100.name}.json"
    a100.save(path)
    print(f"profile measured on {a100.gpu}: {path}")
    cat = load_catalog()
    print("| instance (GPU) | batch | execution ms, predicted | published on that GPU |")
    print("|---|---|---|---|")
    for name in ("ml.g4dn.2xlarge", "ml.p3.2xlarge", "ml.g5.2xlarge"):
        inst = cat.instance(name)
        pub = {r.batch: r.latency_s for r in family if r.gpu == inst.gpu}
        for t in translate(a100, inst).service:
            ref = f"{1000 * pub[t.batch]:.1f} ({100 * (t.seconds / pub[t.batch] - 1):+.0f} %)" if t.batch in pub else "-"
            print(f"| {name} ({inst.gpu}) | {t.batch} | {1000 * t.seconds:.1f} | {ref} |")
    s = summarize(simulate([a100], EndpointConfig(instance_type="ml.g5.2xlarge"), load_workload("blog"), seed=args.seed))
    print(f"\nml.g5.2xlarge, blog workload: max models {s.max_models_loaded}, latency {s.latency_ms:.0f} ms, "
          f"throughput {s.throughput_qps:.0f} req/s, max users {s.max_concurrent_users}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
