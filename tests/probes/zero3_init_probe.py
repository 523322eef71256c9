"""Build the model under ZeRO-3 on every rank, gather it, and compare with a plain single-process build
from the same seed (run by tests/test_zero3_init.py through the deepspeed launcher)."""
import json

import deepspeed
import torch

from megajepa.config import ModelConfig
from megajepa.distributed import init_distributed
from megajepa.model.transformer import Transformer, resolve_model_config
from megajepa.training.engine import build_model

ZERO3 = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3}}

info = init_distributed()
cfg = resolve_model_config(ModelConfig(preset="tiny", dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128), 200)
torch.manual_seed(7)
sharded = build_model(cfg, ZERO3)
local = {n: p.ds_tensor.numel() for n, p in sharded.named_parameters()}
with deepspeed.zero.GatheredParameters(list(sharded.parameters())):
    gathered = {n: p.detach().clone() for n, p in sharded.named_parameters()}
torch.manual_seed(7)
plain = dict(Transformer(cfg).named_parameters())
diff = max((gathered[n] - plain[n]).abs().max().item() for n in plain)
std = gathered["layers.0.mlp.up_proj.weight"].std().item()
full = sum(p.numel() for p in plain.values())
print(json.dumps({"rank": info.rank, "max_diff": diff, "up_proj_std": std, "local": sum(local.values()),
                  "full": full}), flush=True)
