"""megajepa <-> transformers Llama-family: the one name, shape and config map (torchtitan's StateDictAdapter).

Our parameter names are transformers' without the decoder's `model.` prefix, the output head
(`lm_head.weight`) keeps its name, and a tied head has no `lm_head.weight` on either side; rotary
buffers exist only in transformers. Export, continued pretraining, import and evaluation all go
through these functions.
"""
from __future__ import annotations

import torch

from megajepa.model.architecture import ModelArchitecture

HEAD = "lm_head.weight"
VOCAB_ROWS = ("embed_tokens.weight", HEAD)  # our parameters with one row per token id
_DECODER = "model."  # transformers' prefix for everything but the head


def to_hf_name(name: str) -> str:
    return name if name == HEAD else _DECODER + name


def from_hf_name(hf_name: str) -> str:
    if hf_name == HEAD:
        return HEAD
    if not hf_name.startswith(_DECODER):
        raise KeyError(f"unexpected parameter in the transformers checkpoint: {hf_name}")
    return hf_name[len(_DECODER):]


def is_hf_parameter(hf_name: str, tie_embeddings: bool) -> bool:
    """False for tensors with no megajepa parameter: rotary buffers, and the head of a tied model."""
    return "rotary_emb" not in hf_name and not (tie_embeddings and hf_name == HEAD)


def to_hf_state_dict(state: dict[str, torch.Tensor], tie_embeddings: bool) -> dict[str, torch.Tensor]:
    return {to_hf_name(n): t for n, t in state.items() if not (tie_embeddings and n == HEAD)}


def from_hf_state_dict(state: dict[str, torch.Tensor], tie_embeddings: bool) -> dict[str, torch.Tensor]:
    return {from_hf_name(n): t for n, t in state.items() if is_hf_parameter(n, tie_embeddings)}


def architecture_for(cfg: ModelArchitecture) -> str:
    if cfg.sliding_window:
        return "MistralForCausalLM"
    return "Qwen2ForCausalLM" if cfg.qkv_bias else "LlamaForCausalLM"


def to_hf_config(cfg: ModelArchitecture, bos_id: int = 2, eos_id: int = 3, pad_id: int = 0):
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
    if cfg.rope_scaling:
        kwargs.update(rope_scaling=dict(cfg.rope_scaling))
    if arch == "MistralForCausalLM":
        kwargs.update(sliding_window=cfg.sliding_window)
    if arch == "Qwen2ForCausalLM":
        kwargs.update(use_sliding_window=False)
    return config_cls(**kwargs)


ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}


class UnsupportedCheckpoint(ValueError):
    """A transformers checkpoint whose architecture or options the megajepa model cannot reproduce."""


def _reject(where: str, what: str) -> None:
    raise UnsupportedCheckpoint(f"{where}: {what} is not supported (megajepa reproduces Llama, Qwen2 and Mistral "
                                "with default RoPE, SiLU MLP and no output/MLP biases)")


def from_hf_config(hf_config, where: str = "config.json") -> ModelArchitecture:
    """The architecture of a transformers Llama/Qwen2/Mistral config; anything we cannot reproduce exactly
    is refused here, so a loaded model never silently differs from transformers."""
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in ARCHITECTURES:
        archs = getattr(hf_config, "architectures", None) or [model_type]
        raise UnsupportedCheckpoint(f"{where}: unsupported architecture {archs[0]!r} (model_type {model_type!r}); "
                                    f"supported: {', '.join(ARCHITECTURES.values())}")
    rope = dict(getattr(hf_config, "rope_parameters", None) or {})
    rope_type = rope.get("rope_type", "default")
    if rope_type not in ("default", "llama3"):
        _reject(where, f"rope_type {rope_type!r}")
    scaling = None
    if rope_type == "llama3":  # Llama-3.1/3.2 frequency remapping
        scaling = {k: rope[k] for k in ("rope_type", "factor", "low_freq_factor", "high_freq_factor",
                                        "original_max_position_embeddings")}
    rope_theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    if getattr(hf_config, "hidden_act", "silu") != "silu":
        _reject(where, f"hidden_act {hf_config.hidden_act!r}")
    if getattr(hf_config, "mlp_bias", False):
        _reject(where, "mlp_bias=true")
    if model_type == "llama" and getattr(hf_config, "attention_bias", False):
        _reject(where, "attention_bias=true (Llama puts a bias on o_proj too)")
    if model_type == "qwen2" and getattr(hf_config, "use_sliding_window", False):
        _reject(where, "Qwen2 use_sliding_window=true (per-layer windows)")
    dim, heads = hf_config.hidden_size, hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None) or dim // heads
    if head_dim * heads != dim:
        _reject(where, f"head_dim {head_dim} x {heads} heads != hidden_size {dim}")
    window = getattr(hf_config, "sliding_window", None) if model_type == "mistral" else None
    return ModelArchitecture(vocab_size=hf_config.vocab_size, dim=dim, n_layers=hf_config.num_hidden_layers,
                             n_heads=heads, n_kv_heads=hf_config.num_key_value_heads or heads,
                             ffn_dim=hf_config.intermediate_size, rope_theta=float(rope_theta),
                             norm_eps=hf_config.rms_norm_eps, tie_embeddings=bool(hf_config.tie_word_embeddings),
                             qkv_bias=model_type == "qwen2", sliding_window=window,
                             max_seq_len=hf_config.max_position_embeddings, rope_scaling=scaling)

