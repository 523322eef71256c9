"""What fits: DeepSpeed's ZeRO-3 model-state memory estimate for the 1b/3b/7b presets on one node.

    python benchmarks/zero_memory.py [--presets 1b 3b 7b] [--gpus 8] [--gpu-gb 40 80]

Prints DeepSpeed's own `estimate_zero3_model_states_mem_needs_all_live` for each preset, then a
markdown table (the README's): per-GPU and per-node CPU memory of the model states (fp32 master
weights, Adam moments, gradients; activations excluded) for each ds_configs/ choice, and whether it
fits. The model is built on the meta device and each parameter is given a one-element storage seen
through a broadcast view, so the estimator counts the real shapes (tied weights once) without
allocating the model.
"""
from __future__ import annotations

import argparse
import contextlib
import io

import torch
from deepspeed.runtime.zero.stage3 import (
    estimate_zero3_model_states_mem_needs,
    estimate_zero3_model_states_mem_needs_all_live,
    model_to_params,
)

from megajepa.config import ModelConfig
from megajepa.model.transformer import Transformer, resolve_model_config

# ds_configs/ file -> (offload optimizer to CPU, offload parameters to CPU)
CHOICES = {"zero3.json": (False, False), "zero3_offload.json": (True, True)}
GB = 2**30


def shaped_model(preset: str) -> torch.nn.Module:
    """The preset's model with every parameter a broadcast view of its own one-element storage."""
    with torch.device("meta"):
        model = Transformer(resolve_model_config(ModelConfig(preset=preset)))
    seen = {}
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if id(p) not in seen:  # tied weights stay one tensor
                seen[id(p)] = torch.nn.Parameter(torch.zeros(1).expand(p.shape), requires_grad=False)
            setattr(module, name, seen[id(p)])
    return model


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["1b", "3b", "7b"])
    p.add_argument("--gpus", type=int, default=8, help="GPUs per node (one node)")
    p.add_argument("--gpu-gb", type=int, nargs="+", default=[40, 80])
    args = p.parse_args(argv)
    rows = []
    for preset in args.presets:
        model = shaped_model(preset)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            estimate_zero3_model_states_mem_needs_all_live(model, num_gpus_per_node=args.gpus, num_nodes=1)
        print(f"## {preset}\n{buf.getvalue()}")
        total, largest = model_to_params(model)  # what the estimator above derives from the model
        for choice, (off_opt, off_param) in CHOICES.items():
            cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
                total, largest, num_gpus_per_node=args.gpus, num_nodes=1, cpu_offload=off_opt,
                cpu_offload_params=off_param, zero_init=True)
            fits = ["yes" if gpu / GB < gb else "no" for gb in args.gpu_gb]
            rows.append((preset, f"{total / 1e9:.2f}B", choice, f"{gpu / GB:.2f}", f"{cpu / GB:.1f}", *fits))
    header = ["model", "params", "ds_config", "GPU GB/GPU", "CPU GB/node",
              *[f"fits {args.gpus}x{gb}GB" for gb in args.gpu_gb]]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
