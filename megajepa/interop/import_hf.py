"""A transformers checkpoint -> a megajepa run directory holding a step-0 DeepSpeed checkpoint.

The weights are loaded exactly as `model.init_from_hf` loads them (partitioned under ZeRO-3), then the
engine writes its checkpoint with the same client state the trainer writes, plus `config.yaml`, so

    python megajepa/train.py --config OUT/config.yaml     (same launcher and rank count)

continues from it. Everything is written under `OUT.partial` and renamed at the end.
"""
from __future__ import annotations

import dataclasses
import os
import shutil

import yaml

from megajepa import distributed
from megajepa.config import ConfigError, RunConfig
from megajepa.interop.hf_files import HFCheckpoint
from megajepa.interop.load_hf import load_hf_weights, model_config_for, run_tokenizer
from megajepa.objective.hybrid import HybridObjective
from megajepa.training.checkpoint import store as checkpoint
from megajepa.training.checkpoint.locate import hf_tokenizer_dir
from megajepa.training.engine import build_engine, build_model, resolve_ds_config


def run_config_for(cfg: RunConfig, model_cfg, tokenizer_dir: str) -> dict:
    """The run config that continues from the converted checkpoint without the source directory."""
    out = cfg.to_dict()
    out["model"] = dataclasses.asdict(model_cfg)  # every size explicit: the preset no longer matters
    out["data"]["tokenizer"] = tokenizer_dir
    out["resume"] = "auto"
    return out


def convert_from_hf(cfg: RunConfig, rank: int, world: int) -> str:
    source, output = cfg.model.init_from_hf, os.path.abspath(cfg.output_dir)
    if not source:
        raise ConfigError("convert_from_hf needs a transformers checkpoint directory (--hf)")
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise ConfigError(f"{output} already exists and is not empty; choose a new --output")
    ckpt = HFCheckpoint(source)  # architecture, config and shards checked before anything is written
    ds = resolve_ds_config(cfg, world)
    partial = output + ".partial"
    distributed.barrier()
    if rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
    distributed.barrier()
    try:
        tok = run_tokenizer(source, partial, rank)
        model_cfg = model_config_for(ckpt, tok, cfg.model)
        model = build_model(model_cfg, ds)
        load_hf_weights(model, ckpt, tok.added_ids(), rank)
        engine = build_engine(HybridObjective(model, cfg.jepa), ds, cfg.train.weight_decay)
        tokenizer_dir = hf_tokenizer_dir(output)
        final = dataclasses.replace(cfg, output_dir=output)
        micro = cfg.train.micro_batch_size
        state = {"step": 0, "data": {"epoch": 0, "consumed": 0, "global_batch": micro * world, "seed": cfg.seed},
                 "config": final.to_dict(), "model_config": dataclasses.asdict(model_cfg),
                 "tokenizer": tokenizer_dir, "converted_from": os.path.abspath(source)}
        checkpoint.save(engine, partial, 0, state, rank)
        distributed.barrier()
        if rank == 0:
            with open(os.path.join(partial, "config.yaml"), "w") as f:
                yaml.safe_dump(run_config_for(final, model_cfg, tokenizer_dir), f, sort_keys=False)
            if os.path.isdir(output):
                os.rmdir(output)  # empty, checked above
            os.replace(partial, output)
        distributed.barrier()
    except BaseException:
        if rank == 0:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    return output
