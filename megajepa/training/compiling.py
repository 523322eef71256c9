"""Speed switches applied to the objective before DeepSpeed wraps it: train.compile and the attention path."""
from __future__ import annotations

import torch

from megajepa.objective.hybrid import HybridObjective


def use_flex_attention(device: torch.device) -> bool:
    """FlexAttention BlockMask on CUDA; the dense SDPA mask elsewhere (FlexAttention has no CPU backward)."""
    return device.type == "cuda"


def compile_objective(objective: HybridObjective) -> None:
    """train.compile: each decoder block compiled on its own (torchtitan's choice: every layer shares
    one graph, since parameters are graph inputs) and the JEPA gather + distance as one function.
    Shapes are static (fixed row length, bucketed pair counts), so steps do not recompile."""
    for layer in objective.model.layers:
        layer.compile(dynamic=False)
    objective.compile_losses = True
