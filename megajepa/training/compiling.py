"""Speed switches chosen when the objective is built: train.compile and the attention path."""
from __future__ import annotations

import torch
from torch import nn


def use_flex_attention(device: torch.device) -> bool:
    """FlexAttention BlockMask on CUDA; the dense SDPA mask elsewhere (FlexAttention has no CPU backward)."""
    return device.type == "cuda"


def compile_layers(layers: nn.ModuleList) -> None:
    """train.compile: each decoder block compiled on its own (torchtitan's choice: every layer shares
    one graph, since parameters are graph inputs); the objective compiles the JEPA gather + distance.
    Shapes are static (fixed row length, bucketed pair counts), so steps do not recompile."""
    for layer in layers:
        layer.compile(dynamic=False)
