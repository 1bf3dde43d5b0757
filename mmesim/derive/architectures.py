"""FLOPs and weights of the reference's five models, counted from their architectures.

A multiply-add counts as 2 FLOPs. Only the matrix work is counted (convolutions, linear
layers, attention products); normalisation, activations and softmax are a few per cent
and run wherever the matrices run. Embedding lookups cost no FLOPs but their weights are
resident. Inputs as the reference sent them: images 1x3x224x224, token sequences of 128.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from mmesim.profile import GpuWork, WorkingMemory


@dataclass
class Count:
    macs: float = 0.0
    params: int = 0
    lookup_params: int = 0      # embedding tables: resident, but an execution reads only its rows
    layers: int = 0             # transformer encoder layers
    peak_elements: int = 0      # largest input + output of one layer, elements per item (working memory)

    def _live(self, elements: int) -> None:
        self.peak_elements = max(self.peak_elements, elements)

    def conv(self, h: int, w: int, cin: int, cout: int, k: int, groups: int = 1, bias: bool = False) -> None:
        """A conv whose OUTPUT is h x w (its input counted at the same size: a lower bound
        for strided convs)."""
        self._live(h * w * (cin + cout))
        self.macs += h * w * cout * (cin // groups) * k * k
        self.params += cout * (cin // groups) * k * k + (cout if bias else 0)

    def linear(self, tokens: int, fin: int, fout: int, bias: bool = True) -> None:
        self._live(tokens * (fin + fout))
        self.macs += tokens * fin * fout
        self.params += fin * fout + (fout if bias else 0)


def resnet50() -> Count:
    """torchvision's ResNet-50 (v1.5: stride on the 3x3 of each bottleneck); batch norms
    folded (their parameters are negligible and not counted)."""
    c = Count()
    c.conv(112, 112, 3, 64, 7)
    size, cin = 56, 64
    for i, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        for b in range(blocks):
            stride = 2 if (b == 0 and i > 0) else 1
            out = size // stride
            c.conv(size, size, cin, width, 1)
            c.conv(out, out, width, width, 3)
            c.conv(out, out, width, width * 4, 1)
            if b == 0:
                c.conv(out, out, cin, width * 4, 1)
            cin, size = width * 4, out
    c.linear(1, 2048, 1000)
    return c


def convnext_base() -> Count:
    """ConvNeXt-B: stem 4x4/4, stages of depth (3, 3, 27, 3) and width (128 ... 1024), each
    block a 7x7 depthwise conv and a 4x MLP; 2x2/2 downsampling convs between stages."""
    c = Count()
    dims, depths = (128, 256, 512, 1024), (3, 3, 27, 3)
    c.conv(56, 56, 3, dims[0], 4, bias=True)
    size = 56
    for i, (d, n) in enumerate(zip(dims, depths)):
        if i:
            size //= 2
            c.conv(size, size, dims[i - 1], d, 2, bias=True)
        for _ in range(n):
            c.conv(size, size, d, d, 7, groups=d, bias=True)
            c.linear(size * size, d, 4 * d)
            c.linear(size * size, 4 * d, d)
    c.linear(1, dims[-1], 1000)
    return c


def encoder(c: Count, tokens: int, d: int, ffn: int, layers: int) -> None:
    """Transformer encoder layers: QKV and output projections, the two attention products
    (scores and weighted values, tokens^2 x d each), and the MLP."""
    c.layers += layers
    for _ in range(layers):
        c.linear(tokens, d, 3 * d)
        c._live(3 * tokens * d + (d // 64) * tokens * tokens)   # Q, K, V and the scores of d/64 heads
        c.macs += 2 * tokens * tokens * d
        c.linear(tokens, d, d)
        c.linear(tokens, d, ffn)
        c.linear(tokens, ffn, d)


def vit_large_patch16_224() -> Count:
    """ViT-L/16 at 224: 196 patches + a class token, 24 layers of width 1024, MLP 4096."""
    c = Count()
    c.conv(14, 14, 3, 1024, 16, bias=True)
    c.params += 197 * 1024 + 1024               # position embeddings, class token (read whole)
    encoder(c, 197, 1024, 4096, 24)
    c.linear(1, 1024, 1000)
    return c


def bert(layers: int, d: int, ffn: int, vocab: int, positions: int, tokens: int = 128) -> Count:
    c = Count()
    c.lookup_params += (vocab + positions + 2) * d      # token, position and type embeddings
    encoder(c, tokens, d, ffn, layers)
    c.linear(1, d, d)                            # pooler on the first token
    return c


ARCHITECTURES = {
    "resnet50": resnet50,
    "convnext_base": convnext_base,
    "vit_large_patch16_224": vit_large_patch16_224,
    "bert-base-uncased": lambda: bert(12, 768, 3072, 30522, 512),
    "roberta-large": lambda: bert(24, 1024, 4096, 50265, 514),
}


CNN = {"resnet50", "convnext_base"}


@lru_cache(maxsize=1)
def corpus_figures() -> dict:
    """Activation traffic and GPU fill by (framework, architecture class), fitted on the
    multi-GPU corpus (``python -m mmesim.derive.corpus --write``)."""
    return json.loads(resources.files(__package__).joinpath("reference/dle/fit.json").read_text())


def gpu_work(model: str, framework: str) -> GpuWork:
    """The work of one item of ``model``: FLOPs, the weight bytes an execution reads
    (embedding tables excepted) and the activation bytes an item moves, in FP16 for TensorRT
    engines, FP32 otherwise; activation traffic from the corpus's family of the same engine
    and architecture class (FP32 moves twice the FP16 bytes); for TorchScript transformers the
    host time launching the kernels, per encoder layer (the corpus has no TorchScript CNN, so
    CNNs get none). The corpus's GPU-fill figure is
    not carried: it was measured one request at a time, while in an endpoint other copies'
    executions fill the GPU (the profile's sharing model holds that)."""
    c = ARCHITECTURES[model]()
    width = 2 if framework == "tensorrt" else 4
    fam = corpus_figures()[f"{'tensorrt' if framework == 'tensorrt' else 'pytorch'}/{'cnn' if model in CNN else 'transformer'}"]
    flops = float(f"{2 * c.macs:.4g}")
    launch = fam.get("launch_s_per_layer", 0.0) * c.layers
    return GpuWork(flops_per_item=flops, weight_bytes=c.params * width,
                   activation_bytes_per_item=float(f"{flops / fam['flops_per_activation_byte'] * width / 2:.4g}"),
                   launch_s=float(f"{launch:.4g}"),
                   source=f"mmesim.derive.architectures (counted from the architecture; activation traffic from the "
                          f"DeepLearningExamples corpus, {fam['from']})")


WORKING_SOURCE = ("estimate, not measured: mmesim.derive.architectures counts the largest input + output of one "
                  "layer per item (FP32); PyTorch allocates activations per execution through its caching "
                  "allocator, which keeps them, so an execution of batch b needs b times that above the loaded "
                  "weights (a lower bound: no cuBLAS/cuDNN workspace, no allocator rounding). TensorRT engines "
                  "allocate their activation memory with the execution context at load, so it is in the "
                  "resident bytes: 0 here. Leak: 0, no published size (reports: triton-inference-server/server "
                  "issues 3320, 2023, 675); measure with `mmesim calibrate --cycles`")


def working_estimate(model: str, framework: str, batches: list[int]) -> list[WorkingMemory]:
    """Working memory by batch size for a built-in profile until one is measured (WORKING_SOURCE says how)."""
    per_item = 0 if framework == "tensorrt" else ARCHITECTURES[model]().peak_elements * 4
    return [WorkingMemory(batch=b, bytes=b * per_item) for b in batches]
