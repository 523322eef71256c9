"""megajepa <-> transformers Llama-family: config translation and a state-dict rename.

Our parameter names are transformers' without the `model.` prefix (and `lm_head.weight` as is), so
the mapping is a prefix rule; a tied head has no `lm_head.weight` on either side.
"""
from __future__ import annotations

import dataclasses

import torch

from megajepa.config import ModelConfig

HEAD = "lm_head.weight"


def to_hf_state_dict(state: dict[str, torch.Tensor], tie_embeddings: bool) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in state.items():
        if name == HEAD:
            if not tie_embeddings:
                out[HEAD] = tensor
        else:
            out["model." + name] = tensor
    return out


def from_hf_state_dict(state: dict[str, torch.Tensor], tie_embeddings: bool) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in state.items():
        if name == HEAD:
            if not tie_embeddings:
                out[HEAD] = tensor
        elif name.startswith("model."):
            out[name[len("model."):]] = tensor
        elif "rotary_emb" not in name:
            raise KeyError(f"unexpected parameter in the transformers checkpoint: {name}")
    return out


def architecture_for(cfg: ModelConfig) -> str:
    if cfg.sliding_window:
        return "MistralForCausalLM"
    return "Qwen2ForCausalLM" if cfg.qkv_bias else "LlamaForCausalLM"


def to_hf_config(cfg: ModelConfig, bos_id: int = 2, eos_id: int = 3, pad_id: int = 0):
    """A transformers config object of the architecture that matches `cfg`."""
    import transformers
    arch = architecture_for(cfg)
    config_cls = {"LlamaForCausalLM": transformers.LlamaConfig, "Qwen2ForCausalLM": transformers.Qwen2Config,
                  "MistralForCausalLM": transformers.MistralConfig}[arch]
    kwargs = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.ffn_dim,
                  num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                  num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.dim // cfg.n_heads,
                  max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
                  rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_embeddings, bos_token_id=bos_id,
                  eos_token_id=eos_id, pad_token_id=pad_id, hidden_act="silu", architectures=[arch])
    if arch == "LlamaForCausalLM":
        kwargs.update(attention_bias=False, mlp_bias=False)
    if arch == "MistralForCausalLM":
        kwargs.update(sliding_window=cfg.sliding_window)
    if arch == "Qwen2ForCausalLM":
        kwargs.update(use_sliding_window=False)
    return config_cls(**kwargs)


def from_hf_config(hf_config) -> ModelConfig:
    """ModelConfig from a transformers Llama/Qwen2/Mistral config."""
    arch = (getattr(hf_config, "architectures", None) or [type(hf_config).__name__])[0]
    supported = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")
    if arch not in supported:
        raise ValueError(f"unsupported architecture {arch!r}; supported: {', '.join(supported)}")
    rope_theta = getattr(hf_config, "rope_theta", None)
    if rope_theta is None:  # transformers 5 keeps it in rope_parameters
        rope_theta = (getattr(hf_config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    dim, heads = hf_config.hidden_size, hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None) or dim // heads
    if head_dim * heads != dim:
        raise ValueError(f"head_dim {head_dim} x {heads} heads != hidden_size {dim}: not supported")
    window = getattr(hf_config, "sliding_window", None) if arch == "MistralForCausalLM" else None
    return ModelConfig(preset="tiny", vocab_size=hf_config.vocab_size, dim=dim,
                       n_layers=hf_config.num_hidden_layers, n_heads=heads,
                       n_kv_heads=hf_config.num_key_value_heads or heads, ffn_dim=hf_config.intermediate_size,
                       rope_theta=float(rope_theta), norm_eps=hf_config.rms_norm_eps,
                       tie_embeddings=bool(hf_config.tie_word_embeddings),
                       qkv_bias=arch == "Qwen2ForCausalLM" or bool(getattr(hf_config, "attention_bias", False)),
                       sliding_window=window, max_seq_len=hf_config.max_position_embeddings)


def config_fields(cfg: ModelConfig) -> dict:
    return dataclasses.asdict(cfg)
