"""Continued pretraining: a transformers checkpoint into the megajepa model, also under ZeRO-3.

Under ZeRO-3 the model is built partitioned (`deepspeed.zero.Init`); each parameter is then gathered
alone, filled by rank 0 from a lazily opened safetensors file, and re-partitioned
(`GatheredParameters(modifier_rank=0)`), so the checkpoint is read once and no rank ever holds more
than one full parameter. New vocabulary rows (tokens the objective adds) get the mean embedding.
"""
from __future__ import annotations

import dataclasses
import logging

import torch

from megajepa.config import ConfigError, ModelConfig
from megajepa.data.tokenizer.hf import HFTokenizer
from megajepa.interop.adapter import VOCAB_ROWS, is_hf_parameter, to_hf_name
from megajepa.interop.hf_files import CheckpointError, HFCheckpoint
from megajepa.model.architecture import ModelArchitecture
from megajepa.training.checkpoint.locate import hf_tokenizer_dir

log = logging.getLogger("megajepa")


def model_config_for(ckpt: HFCheckpoint, tokenizer, requested: ModelConfig | None = None) -> ModelArchitecture:
    """The checkpoint's architecture with room for the tokenizer's ids (grown to a multiple of 64)."""
    cfg = ckpt.model_config
    if isinstance(tokenizer, HFTokenizer) and tokenizer.original_size > cfg.vocab_size:
        raise CheckpointError(f"{ckpt.path}: the tokenizer has {tokenizer.original_size} ids but the model's "
                              f"embedding has {cfg.vocab_size} rows (config.json vocab_size): they do not belong "
                              "together")
    if tokenizer.vocab_size > cfg.vocab_size:
        cfg = dataclasses.replace(cfg, vocab_size=-(-tokenizer.vocab_size // 64) * 64)
    if requested is not None:  # explicit model.* settings must not contradict the checkpoint
        for field in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size"):
            want = getattr(requested, field)
            if want and want != getattr(cfg, field):
                raise ConfigError(f"model.{field}={want} contradicts model.init_from_hf={ckpt.path} "
                                  f"({getattr(cfg, field)}); leave it unset")
    return cfg


def check_names(model: torch.nn.Module, ckpt: HFCheckpoint) -> None:
    """Every parameter has a tensor in the checkpoint and vice versa (rotary buffers and a tied head aside)."""
    ours = {to_hf_name(n) for n, _ in model.named_parameters()}
    theirs = {n for n in ckpt.names() if is_hf_parameter(n, model.config.tie_embeddings)}
    missing, unexpected = sorted(ours - theirs), sorted(theirs - ours)
    if missing or unexpected:
        raise CheckpointError(f"{ckpt.path}: tensors do not match the architecture in config.json; missing: "
                              f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected: {unexpected[:5]}")


def _fill(param: torch.Tensor, name: str, src: torch.Tensor, new_rows: list[int], where: str) -> None:
    if name in VOCAB_ROWS and src.shape[1:] == param.shape[1:] and src.shape[0] <= param.shape[0]:
        mean = (src.sum(0, dtype=torch.float64) / src.shape[0]).to(param.dtype)  # no float64 copy of the matrix
        param[:src.shape[0]].copy_(src)
        param[src.shape[0]:] = mean
        rows = [i for i in new_rows if i < src.shape[0]]
        if rows:
            param[rows] = mean
        return
    if tuple(src.shape) != tuple(param.shape):
        raise CheckpointError(f"{where}: tensor {to_hf_name(name)} has shape {tuple(src.shape)}, the model "
                              f"needs {tuple(param.shape)}")
    param.copy_(src)


@torch.no_grad()
def load_hf_weights(model: torch.nn.Module, ckpt: HFCheckpoint, new_rows: list[int], rank: int) -> None:
    import deepspeed

    check_names(model, ckpt)
    for name, param in model.named_parameters():
        partitioned = hasattr(param, "ds_id")
        with deepspeed.zero.GatheredParameters([param], modifier_rank=0, enabled=partitioned):
            if rank == 0 or not partitioned:  # partitioned: rank 0 reads, the exit broadcasts its shard
                _fill(param.data, name, ckpt.tensor(to_hf_name(name)), new_rows, ckpt.path)
    ckpt.close()
    if rank == 0:
        log.info("loaded %d tensors from %s (%d new vocabulary rows set to the mean embedding)",
                 len(list(model.parameters())), ckpt.path, len(new_rows))


def run_tokenizer(source: str, output_dir: str, rank: int) -> HFTokenizer:
    """The checkpoint's tokenizer with our tokens added, saved once into the run (`output_dir/tokenizer_hf`)
    so checkpoints and `convert_to_hf` find the exact ids without the source directory."""
    from megajepa import distributed

    tok = HFTokenizer(source)
    copy = hf_tokenizer_dir(output_dir)
    if rank == 0:
        tok.save(copy)
    distributed.barrier()
    tok.path = copy
    return tok
