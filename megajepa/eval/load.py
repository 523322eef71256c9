"""Load a model for evaluation: a megajepa DeepSpeed checkpoint (any ZeRO world size) or a transformers
directory, with its tokenizer and (megajepa only) the run config it was trained with."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import torch

from megajepa.config import ModelConfig
from megajepa.model.transformer import Transformer


class LoadError(ValueError):
    """A path that holds no loadable model; the message names the path and what is missing."""


@dataclass
class LoadedModel:
    model: Transformer
    tokenizer: object  # megajepa.data.tokenizer.sentencepiece.Tokenizer or interop.hf_tokenizer.HFTokenizer
    run_config: dict | None  # the training run's config (megajepa checkpoints), else None
    source: str  # what was loaded, for reports


def _legacy(root: str) -> str | None:
    """Checkpoints from before the COMPLETE marker (no tag has one): DeepSpeed's own `latest`, which it
    writes after the tag's files."""
    from megajepa.training.checkpoint import store as checkpoint
    latest = os.path.join(root, "latest")
    if checkpoint.complete_tags(root) or not os.path.isfile(latest):
        return None
    with open(latest) as f:
        return f.read().strip() or None


def resolve_tag(path: str) -> tuple[str, str]:
    """(checkpoints root, tag) for a run dir or a `checkpoints/` dir (its newest complete tag, as resume
    picks it) or one tag dir (which must be complete)."""
    from megajepa.training.checkpoint import store as checkpoint
    path = os.path.abspath(path)
    if glob.glob(os.path.join(path, "*model_states.pt")):
        root, tag = os.path.dirname(path), os.path.basename(path)
        if not checkpoint.is_complete(root, tag) and not _legacy(root):
            raise LoadError(f"{path}: incomplete checkpoint (no {checkpoint.COMPLETE} marker: its write was "
                            f"interrupted); complete ones: {checkpoint.complete_tags(root)}")
        return root, tag
    for output_dir in (path, os.path.dirname(path)):  # a run dir, or its checkpoints/ dir
        root = checkpoint.checkpoint_dir(output_dir)
        if os.path.isdir(root) and (output_dir == path or root == path):
            tag = _legacy(root) or checkpoint.latest_tag(output_dir)
            if tag is None:
                raise LoadError(f"{root}: no complete checkpoint")
            return root, tag
    raise LoadError(f"{path}: not a megajepa checkpoint (no *model_states.pt here, no checkpoints/ folder) "
                    "and not a transformers directory (no config.json)")


def _client_state(tag_dir: str) -> dict:
    """The trainer's client state (model config, tokenizer path, run config) stored beside rank 0's shard."""
    files = sorted(glob.glob(os.path.join(tag_dir, "*mp_rank_00_model_states.pt")))
    if not files:
        raise LoadError(f"{tag_dir}: no mp_rank_00_model_states.pt")
    state = torch.load(files[0], map_location="cpu", weights_only=False)
    for key in ("model_config", "tokenizer"):
        if key not in state:
            raise LoadError(f"{files[0]}: no {key!r} in the client state (not written by megajepa's trainer?)")
    return state


def _find_tokenizer(recorded: str, root: str, override: str | None) -> str:
    """The recorded tokenizer path, else the run's own `tokenizer/tokenizer.model` (a moved run dir)."""
    candidates = [override] if override else [recorded, os.path.join(os.path.dirname(root), "tokenizer",
                                                                      "tokenizer.model")]
    for path in candidates:
        if path and os.path.exists(path):
            return path
    raise LoadError(f"tokenizer not found (tried {', '.join(str(c) for c in candidates)}); pass --tokenizer")


def load_tokenizer(path: str):
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "tokenizer.model")):
        from megajepa.data.tokenizer.hf import HFTokenizer  # a transformers tokenizer directory
        return HFTokenizer(path)
    from megajepa.data.tokenizer.sentencepiece import Tokenizer
    return Tokenizer.load(os.path.join(path, "tokenizer.model") if os.path.isdir(path) else path)


def load_megajepa(path: str, tokenizer: str | None = None) -> LoadedModel:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    root, tag = resolve_tag(path)
    state = _client_state(os.path.join(root, tag))
    model = Transformer(ModelConfig(**state["model_config"]))
    weights = get_fp32_state_dict_from_zero_checkpoint(root, tag)  # merges every rank's ZeRO shard
    weights = {k[len("model."):] if k.startswith("model.") else k: v for k, v in weights.items()}
    model.load_state_dict(weights, strict=True)
    tok = load_tokenizer(_find_tokenizer(state["tokenizer"], root, tokenizer))
    return LoadedModel(model.eval(), tok, state.get("config"), os.path.join(root, tag))


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
        raise LoadError(f"{path}: no such checkpoint")
    if os.path.isfile(os.path.join(path, "config.json")):
        return load_hf(path, tokenizer)
    return load_megajepa(path, tokenizer)
