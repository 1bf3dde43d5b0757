"""Built-in models: the reference's five (architectures from ``transformers`` configs, with
RANDOM weights: nothing is downloaded, and weights do not change memory or speed) and tiny
ones for tests."""

from __future__ import annotations

from typing import Callable

from mmesim.errors import ConfigError
from mmesim.triton.modelspec import ModelSpec, TensorSpec

IMAGE = (TensorSpec("INPUT__0", "FP32", (3, 224, 224)),)
TOKENS = (TensorSpec("INPUT__0", "INT32", (128,), high=30000), TensorSpec("INPUT__1", "INT32", (128,), high=2))


def _logits(n: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec("OUTPUT__0", "FP32", (n,)),)


def _first_output(model):
    """Wrap a transformers model so that tracing sees tensors in and one tensor out."""
    import torch

    class FirstOutput(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            if len(inputs) == 2:     # token ids, attention mask (INT32 on the wire)
                return self.inner(input_ids=inputs[0].long(), attention_mask=inputs[1].long())[0]
            return self.inner(inputs[0])[0]

    return FirstOutput(model).eval()


def _resnet50():
    from transformers import ResNetConfig, ResNetForImageClassification
    return _first_output(ResNetForImageClassification(ResNetConfig(
        embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3], layer_type="bottleneck",
        num_labels=1000, torchscript=True)))


def _convnext_base():
    from transformers import ConvNextConfig, ConvNextForImageClassification
    return _first_output(ConvNextForImageClassification(ConvNextConfig(
        hidden_sizes=[128, 256, 512, 1024], depths=[3, 3, 27, 3], num_labels=1000, torchscript=True)))


def _vit_large():
    from transformers import ViTConfig, ViTForImageClassification
    return _first_output(ViTForImageClassification(ViTConfig(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, image_size=224,
        patch_size=16, num_labels=1000, torchscript=True)))


def _bert_base():
    from transformers import BertConfig, BertForSequenceClassification
    return _first_output(BertForSequenceClassification(BertConfig(num_labels=2, torchscript=True)))


def _roberta_large():
    from transformers import RobertaConfig, RobertaForSequenceClassification
    return _first_output(RobertaForSequenceClassification(RobertaConfig(
        vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        max_position_embeddings=514, type_vocab_size=1, num_labels=2, torchscript=True)))


def _tiny_mlp():
    import torch
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                               torch.nn.ReLU(), torch.nn.Linear(1024, 10)).eval()


def _tiny_cnn():
    import torch
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 128, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(128, 10)).eval()


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification
    return _first_output(BertForSequenceClassification(BertConfig(
        vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512,
        max_position_embeddings=64, num_labels=2, torchscript=True)))


# name -> (spec, builder). CV models: max batch 32, preferred 16, as in the reference.
BUILTINS: dict[str, tuple[ModelSpec, Callable]] = {
    "resnet50": (ModelSpec("resnet50", IMAGE, _logits(1000), 32, (16,), "25.6M parameters"), _resnet50),
    "convnext_base": (ModelSpec("convnext_base", IMAGE, _logits(1000), 32, (16,), "88.6M parameters"), _convnext_base),
    "vit_large_patch16_224": (ModelSpec("vit_large_patch16_224", IMAGE, _logits(1000), 32, (16,), "304M parameters"),
                              _vit_large),
    "bert-base-uncased": (ModelSpec("bert-base-uncased", TOKENS, _logits(2), 32, (16,), "109M parameters"), _bert_base),
    "roberta-large": (ModelSpec("roberta-large", TOKENS, _logits(2), 32, (16,), "355M parameters"), _roberta_large),
    "tiny-mlp": (ModelSpec("tiny-mlp", (TensorSpec("INPUT__0", "FP32", (64,)),), _logits(10), 16, (),
                           "1.1M parameters, for tests"), _tiny_mlp),
    "tiny-cnn": (ModelSpec("tiny-cnn", (TensorSpec("INPUT__0", "FP32", (3, 64, 64)),), _logits(10), 16, (),
                           "94K parameters, for tests"), _tiny_cnn),
    "tiny-bert": (ModelSpec("tiny-bert", (TensorSpec("INPUT__0", "INT32", (32,), high=1000),
                                          TensorSpec("INPUT__1", "INT32", (32,), high=2)), _logits(2), 16, (),
                            "0.5M parameters, for tests"), _tiny_bert),
}
REFERENCE_MODELS = ["resnet50", "convnext_base", "vit_large_patch16_224", "bert-base-uncased", "roberta-large"]


def builtin(name: str):
    """(spec, builder) of a built-in model; ConfigError lists the names."""
    try:
        return BUILTINS[name]
    except KeyError:
        raise ConfigError(f"not a built-in model and not a file; built-in: {', '.join(BUILTINS)}",
                          field="--model", value=name) from None
