"""Load a model for evaluation: a megajepa DeepSpeed checkpoint (any ZeRO world size) or a transformers
directory, with its tokenizer and (megajepa only) the run config it was trained with. Checkpoints are
found and read by training/checkpoint/locate, as resume and export find them."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from megajepa.data.tokenizer import load_tokenizer
from megajepa.model.transformer import Transformer
from megajepa.training.checkpoint.locate import CheckpointError, open_checkpoint


@dataclass
class LoadedModel:
    model: Transformer
    tokenizer: object  # megajepa.data.tokenizer: sentencepiece Tokenizer or HFTokenizer
    run_config: dict | None  # the training run's config (megajepa checkpoints), else None
    source: str  # what was loaded, for reports


def load_megajepa(path: str, tokenizer: str | None = None) -> LoadedModel:
    saved = open_checkpoint(path)
    model = Transformer(saved.model_config())
    model.load_state_dict(saved.weights(), strict=True)  # merges every rank's ZeRO shard
    return LoadedModel(model.eval(), load_tokenizer(saved.tokenizer(tokenizer)), saved.run_config(), saved.path)


def load_hf(path: str, tokenizer: str | None = None) -> LoadedModel:
    import transformers

    from megajepa.interop.adapter import from_hf_config, from_hf_state_dict

    hf = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    cfg = from_hf_config(hf.config)
    model = Transformer(cfg)
    model.load_state_dict(from_hf_state_dict(hf.state_dict(), cfg.tie_embeddings), strict=True)
    return LoadedModel(model.eval(), load_tokenizer(tokenizer or path), None, os.path.abspath(path))


def load_model(path: str, tokenizer: str | None = None) -> LoadedModel:
    """A transformers directory (config.json) or a megajepa checkpoint (run dir, checkpoints dir, tag dir)."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint")
    if os.path.isfile(os.path.join(path, "config.json")):
        return load_hf(path, tokenizer)
    return load_megajepa(path, tokenizer)
