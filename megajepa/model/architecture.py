"""The resolved model architecture: every size filled. The run config's `model.*` (config.ModelConfig: a
preset, sizes left None to take the preset's) is a request; `resolve_model_config` (model/transformer.py)
or a transformers config (interop/adapter.py) turns it into this, which builds the model, is stored in
checkpoints and is what logs print."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# request-only fields that checkpoints written before ModelArchitecture carried beside the sizes
_REQUEST_ONLY = ("preset", "init_from_hf")


@dataclass
class ModelArchitecture:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int  # grouped-query attention
    ffn_dim: int
    rope_theta: float
    max_seq_len: int
    tie_embeddings: bool
    norm_eps: float = 1e-5
    qkv_bias: bool = False  # Qwen2-style
    sliding_window: int | None = None  # Mistral-style (interop only); None: full attention
    rope_scaling: dict | None = None  # Llama-3.1/3.2 `llama3` frequency remapping; None: plain RoPE
    init_std: float = 0.02

    @classmethod
    def from_saved(cls, saved: dict, where: str) -> ModelArchitecture:
        """From a checkpoint's `model_config`. Strict: a field this megajepa does not know (a newer
        checkpoint) is an error, never dropped, so the model built is the model trained."""
        saved = {k: v for k, v in saved.items() if k not in _REQUEST_ONLY}
        unknown = sorted(set(saved) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{where}: model_config has field(s) {unknown} that this megajepa's "
                             "ModelArchitecture does not know (written by a newer version?)")
        return cls(**saved)
