"""An independent multi-GPU corpus: NVIDIA DeepLearningExamples' Triton results (offline:
one request at a time, static batches), T4, V100, A30, A40 and A100, copied number for number
in mmesim/derive/reference/dle/ with the source file and commit of every row.

What the blog's two GPUs cannot show, fitted here per model and engine ("family") on several
GPUs at once, so that it can be tested on a GPU the fit never saw:

    time of a batch of b = c + h b + max( (b + k SMs) F / (eta P),  (W + b A) / BW )

- ``c + h b``: host time per execution and per item (request handling, input copies): the
  same on every GPU;
- compute: the batch's FLOPs ``b F`` at a fraction ``eta`` of the GPU's tensor peak ``P``, once
  the GPU is full. A batch too small to fill it runs as if it held ``k`` items per streaming
  multiprocessor more: the batching gain grows with the GPU's size (its SM count);
- memory: the weights ``W`` once per execution and ``A`` bytes of activation traffic per item at
  the GPU's bandwidth ``BW``; a GPU runs at whichever of compute and memory is slower.
F and W come from the architecture (mmesim.derive.architectures); c, h, k, eta and A are
fitted by least squares on log time. ``leave_one_gpu_out`` fits every family without one GPU
and predicts that GPU's rows.

    python -m mmesim.derive.corpus [--markdown]
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from mmesim.catalog import GPU, load_catalog
from mmesim.derive.architectures import Count, bert, resnet50
from mmesim.profile import BatchTiming, GpuWork, ModelProfile, Provenance
from mmesim.sim.translate import gpu_seconds

CORPUS = "reference/dle/triton-offline.csv"
FITTED = "reference/dle/fit.json"
TARGET = 0.10       # median |error| of latency and throughput, leave one GPU out
# Which corpus family stands for a profile's (framework, architecture class) in translation:
# the blog's TensorRT engines are FP16 like the corpus's; its TorchScript runs FP32, whose
# activations move twice the bytes (mmesim.derive.architectures halves the intensity). The
# corpus has no TorchScript CNN: ResNet-50's ONNX Runtime + TensorRT rows stand for both.
STANDS_FOR = {"tensorrt/transformer": ("bert-large", "TensorRT"), "pytorch/transformer": ("bert-large", "PyTorch"),
              "tensorrt/cnn": ("resnet50", "ONNX Runtime + TensorRT"), "pytorch/cnn": ("resnet50", "ONNX Runtime + TensorRT")}


def _work(model: str) -> Count:
    """The corpus's models as they were served: BERT-large on SQuAD sequences of 384 tokens,
    ResNet-50 on 224x224 images."""
    return {"bert-large": lambda: bert(24, 1024, 4096, 30522, 512, tokens=384), "resnet50": resnet50}[model]()


@dataclass(frozen=True)
class Row:
    model: str
    engine: str         # backend, and its accelerator if any: "ONNX Runtime + TensorRT"
    precision: str
    gpu: str            # catalogue key
    batch: int
    throughput: float   # inferences per second
    latency_s: float    # average latency of one request (one batch)
    source: str
    compute_infer_s: float | None = None    # Triton's "compute infer": for TorchScript, launching the kernels

    @property
    def family(self) -> tuple[str, str, str]:
        return self.model, self.engine, self.precision


def rows() -> list[Row]:
    """Every offline row of the corpus."""
    text = resources.files(__package__).joinpath(CORPUS).read_text()
    out = []
    for r in csv.DictReader(text.splitlines()):
        engine = r["backend"] + (f" + {r['accelerator']}" if r["accelerator"] else "")
        out.append(Row(r["model"], engine, r["precision"], r["gpu"], int(r["batch"]), float(r["inferences_per_s"]),
                       float(r["avg_ms"]) / 1000, f"{r['source_file']}@{r['source_commit'][:8]}",
                       float(r["server_compute_infer_ms"]) / 1000 if r["server_compute_infer_ms"] else None))
    return out


@dataclass
class Fit:
    """One family's fitted figures (seconds, items per SM, fraction of peak, bytes per item)."""
    model: str
    c: float
    h: float
    k: float
    eta: float
    A: float

    def work(self) -> GpuWork:
        w = _work(self.model)
        return GpuWork.model_construct(flops_per_item=2 * w.macs, weight_bytes=w.params * 2, peak_fraction=self.eta,
                                       activation_bytes_per_item=self.A, fill_items_per_sm=self.k)

    def seconds(self, gpu: GPU, batch: int) -> float:
        """Host time, then the GPU roofline (mmesim.sim.translate.gpu_seconds) at FP16 peak."""
        return self.c + self.h * batch + gpu_seconds(self.work(), batch, gpu, "tensorrt")


def _unpack(model: str, x: np.ndarray) -> Fit:
    c, h, k, eta, a = np.exp(x)
    return Fit(model, c, h, k, min(eta, 1.0), a)


def fit(family_rows: list[Row]) -> Fit:
    """Least squares on log(time of a batch), by Nelder-Mead from a physical start."""
    cat = load_catalog()
    model = family_rows[0].model
    w = _work(model)
    obs = np.log([r.batch / r.throughput for r in family_rows])
    gpus = [cat.gpu(r.gpu) for r in family_rows]

    def loss(x: np.ndarray) -> float:
        f = _unpack(model, x)
        if f.eta >= 1.0:
            return 1e9
        pred = np.log([f.seconds(g, r.batch) for g, r in zip(gpus, family_rows)])
        return float(np.sum((pred - obs) ** 2))

    start = np.log([1e-3, 1e-4, 0.01, 0.4, 2 * w.macs / 60])
    best = _nelder_mead(loss, start)
    for _ in range(3):      # restarts: the max() makes the surface kinked
        best = _nelder_mead(loss, best)
    return _unpack(model, best)


def _nelder_mead(f, x0: np.ndarray, step: float = 0.7, iters: int = 1500) -> np.ndarray:
    n = len(x0)
    pts = [x0] + [x0 + step * np.eye(n)[i] for i in range(n)]
    vals = [f(p) for p in pts]
    for _ in range(iters):
        order = np.argsort(vals)
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        if vals[-1] - vals[0] < 1e-12:
            break
        centre = np.mean(pts[:-1], axis=0)
        xr = centre + (centre - pts[-1])
        fr = f(xr)
        if fr < vals[0]:
            xe = centre + 2 * (centre - pts[-1])
            fe = f(xe)
            pts[-1], vals[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = xr, fr
        else:
            xc = centre + 0.5 * (pts[-1] - centre)
            fc = f(xc)
            if fc < vals[-1]:
                pts[-1], vals[-1] = xc, fc
            else:
                pts = [pts[0] + 0.5 * (p - pts[0]) for p in pts]
                vals = [f(p) for p in pts]
    return pts[int(np.argmin(vals))]


@dataclass
class Prediction:
    row: Row
    latency_s: float
    throughput: float

    def error(self, metric: str) -> float:
        if metric == "latency":
            return self.latency_s / self.row.latency_s - 1
        return self.throughput / self.row.throughput - 1


def leave_one_gpu_out(data: list[Row] | None = None) -> list[Prediction]:
    """Each GPU's rows predicted by fits on the other GPUs' rows of the same family (a family
    seen on fewer than three other GPUs is not predicted)."""
    data = data if data is not None else rows()
    cat = load_catalog()
    out = []
    for gpu in sorted({r.gpu for r in data}):
        for family in sorted({r.family for r in data if r.gpu == gpu}):
            train = [r for r in data if r.family == family and r.gpu != gpu]
            if len({r.gpu for r in train}) < 3:
                continue
            f = fit(train)
            for r in data:
                if r.family == family and r.gpu == gpu:
                    t = f.seconds(cat.gpu(gpu), r.batch)
                    out.append(Prediction(r, t, r.batch / t))
    return out


def median_abs(preds: list[Prediction], metric: str) -> float:
    return float(np.median([abs(p.error(metric)) for p in preds]))


def markdown(preds: list[Prediction]) -> str:
    lines = ["| GPU left out | model, engine | batch | latency ms (pub / pred) | throughput /s (pub / pred) |",
             "|---|---|---|---|---|"]
    for p in preds:
        r = p.row
        mark = lambda e: f"({100 * e:+.0f}%)" + (" **x**" if abs(e) > TARGET else "")
        lines.append(f"| {r.gpu} | {r.model}, {r.engine} | {r.batch} | {1000 * r.latency_s:.1f} / {1000 * p.latency_s:.1f} "
                     f"{mark(p.error('latency'))} | {r.throughput:.0f} / {p.throughput:.0f} {mark(p.error('throughput'))} |")
    return "\n".join(lines + ["", summary(preds)])


def summary(preds: list[Prediction]) -> str:
    by_gpu = {}
    for p in preds:
        by_gpu.setdefault(p.row.gpu, []).append(p)
    per = "; ".join(f"{g} {100 * median_abs(v, 'latency'):.0f} % / {100 * median_abs(v, 'throughput'):.0f} %"
                    for g, v in by_gpu.items())
    within = sum(abs(p.error("latency")) <= TARGET and abs(p.error("throughput")) <= TARGET for p in preds)
    return (f"{len(preds)} rows, {within} within {100 * TARGET:.0f} % on both; median |error| latency "
            f"{100 * median_abs(preds, 'latency'):.1f} %, throughput {100 * median_abs(preds, 'throughput'):.1f} % "
            f"(by GPU, latency / throughput: {per})")


def measured_profile(family_rows: list[Row], gpu: str) -> ModelProfile:
    """A profile as calibrating this family on ``gpu`` would give it: execution times by batch
    from the GPU's published rows (offline: one batch at a time, so latency = execution), GPU
    work from the architecture with activation traffic and fill fitted on the other GPUs' rows.
    Not published, and set by stated rules: weights as the artifact and resident memory
    (FP16), load 1 s + 200 MB/s, host share 0 (the engine's own time is nearly all
    "compute infer")."""
    own = sorted((r for r in family_rows if r.gpu == gpu), key=lambda r: r.batch)
    if not own:
        raise ValueError(f"no corpus rows for {gpu}")
    r0 = own[0]
    f = fit([r for r in family_rows if r.gpu != gpu])
    work = GpuWork(**{**f.work().model_dump(), "peak_fraction": round(f.eta, 4), "activation_bytes_per_item": float(f"{f.A:.4g}"),
                      "fill_items_per_sm": float(f"{f.k:.4g}"),
                      "source": "mmesim.derive.corpus (architecture counted; traffic, fill and peak fraction fitted on other GPUs)"})
    size = work.weight_bytes
    return ModelProfile(
        name=f"{r0.model}-{'tensorrt' if 'TensorRT' in r0.engine else 'pytorch'}-{gpu}", model=r0.model,
        framework="tensorrt" if "TensorRT" in r0.engine else "pytorch", gpu=gpu,
        artifact_bytes=size, gpu_memory_bytes=size, baseline_gpu_bytes=0, load_s=round(1 + size / 200e6, 3), unload_s=0.5,
        service=[BatchTiming(batch=r.batch, seconds=round(r.latency_s, 6), cv=0.05) for r in own],
        input_bytes=3 * 384 * 4 if r0.model == "bert-large" else 3 * 224 * 224 * 4, decode_s_per_byte=0.0,
        work=work, triton={"max_batch_size": own[-1].batch, "preferred_batch_sizes": [own[-1].batch]},
        provenance=Provenance(method="measured", source=f"{r0.source} ({r0.engine}, {r0.precision})", date="2021",
                              notes="execution times published by NVIDIA DeepLearningExamples; memory, load time and "
                                    "payload by stated rules (mmesim.derive.corpus.measured_profile)"))


def translation_figures(data: list[Row] | None = None) -> dict[str, dict[str, float]]:
    """What translation between GPUs takes from the corpus, per (framework, architecture
    class): FLOPs per byte of activation traffic (F / A), items per SM a batch needs to fill
    the GPU (k), each fitted on every corpus GPU, and TorchScript's launch time per layer."""
    data = data if data is not None else rows()
    out = {}
    for key, (model, engine) in STANDS_FOR.items():
        f = fit([r for r in data if r.model == model and r.engine == engine])
        out[key] = {"flops_per_activation_byte": float(f"{2 * _work(model).macs / f.A:.4g}"),
                    "fill_items_per_sm": float(f"{f.k:.4g}"), "from": f"{model}, {engine}"}
    out["pytorch/transformer"]["launch_s_per_layer"] = float(f"{launch_per_layer(data):.4g}")
    return out


def launch_per_layer(data: list[Row]) -> float:
    """Host seconds launching one encoder layer's kernels in TorchScript: Triton's "compute
    infer" for BERT-large at batch 1 (the forward call returns once the kernels are queued;
    "compute output" waits for the GPU), median over the corpus's hosts, over its 24 layers.
    It is flat in batch and GPU-independent (the host's CPU sets it)."""
    infer = [r.compute_infer_s for r in data if r.model == "bert-large" and r.engine == "PyTorch" and r.batch == 1]
    return float(np.median(infer)) / _work("bert-large").layers


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true", help="the whole table, as in the README")
    ap.add_argument("--write", action="store_true", help=f"write the figures translation uses to mmesim/derive/{FITTED}")
    args = ap.parse_args(argv)
    if args.write:
        path = Path(__file__).parent / FITTED
        path.write_text(json.dumps(translation_figures(), indent=1) + "\n")
        print(f"wrote {path}")
        return 0
    preds = leave_one_gpu_out()
    print(markdown(preds) if args.markdown else summary(preds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
