"""Llama-family decoder: RMSNorm, RoPE, SwiGLU, grouped-query attention, tied or untied head.

Parameter names mirror transformers' LlamaForCausalLM without its `model.` prefix, so HF interop is a
rename. `forward` returns final-norm hidden states; `lm_head` applies the output projection, so the
training loss never materialises full logits.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from megajepa.config import ModelConfig
from megajepa.model.architecture import ModelArchitecture
from megajepa.model.attention import BlockDiagonal
from megajepa.model.presets import (
    PRESET_VOCAB,
    PRESETS,
    SIZED,
    check_heads,
    preset_value,
)


def resolve_model_config(cfg: ModelConfig, vocab_size: int | None = None) -> ModelArchitecture:
    """The requested model with unset fields (0/None) filled from the preset and the tokenizer; explicit
    fields win."""
    if cfg.preset not in PRESETS:
        raise ValueError(f"model.preset must be one of {', '.join(PRESETS)}, got {cfg.preset!r}")
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(ModelArchitecture)}
    for name in SIZED:
        if not fields[name]:
            fields[name] = preset_value(cfg.preset, name)
    if fields["tie_embeddings"] is None:
        fields["tie_embeddings"] = preset_value(cfg.preset, "tie_embeddings")
    if not fields["vocab_size"]:
        fields["vocab_size"] = -(-(vocab_size or PRESET_VOCAB) // 64) * 64  # multiple of 64 for fast matmuls
    elif vocab_size and fields["vocab_size"] < vocab_size:
        raise ValueError(f"model.vocab_size={fields['vocab_size']} is smaller than the tokenizer's {vocab_size} ids")
    check_heads(fields["dim"], fields["n_heads"], fields["n_kv_heads"])
    return ModelArchitecture(**fields)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 as transformers does, then cast back before the weight.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """RoPE inverse frequencies; `scaling` supports Llama-3.1/3.2's `llama3` frequency remapping."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if not scaling:
        return inv_freq
    if scaling.get("rope_type") != "llama3":
        raise ValueError(f"model.rope_scaling: only rope_type 'llama3' is supported, got {scaling!r}")
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, smoothed, scaled)


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype,
                 scaling: dict | None = None):
    """cos/sin [B, T, head_dim] for arbitrary (packed) position ids; HF's half-rotation layout."""
    inv_freq = rope_inv_freq(head_dim, theta, scaling).to(position_ids.device)
    freqs = position_ids.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


class Attention(nn.Module):
    def __init__(self, cfg: ModelArchitecture):
        super().__init__()
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = cfg.dim // cfg.n_heads
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * self.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * self.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * self.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_heads * self.head_dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin, attn_mask, kv_cache=None):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)
        out = attend(q, k, v, attn_mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


def attend(q, k, v, attn_mask):
    """SDPA with a dense boolean mask (CPU and generation) or FlexAttention with a BlockMask (CUDA)."""
    if isinstance(attn_mask, BlockDiagonal):
        return attn_mask.attend(q, k, v)
    if attn_mask is not None and not isinstance(attn_mask, torch.Tensor):
        from megajepa.model.attention import flex_attend
        return flex_attend(q, k, v, attn_mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=q.shape[1] != k.shape[1])


class MLP(nn.Module):
    def __init__(self, cfg: ModelArchitecture):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelArchitecture):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x, cos, sin, attn_mask, kv_cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attn_mask, kv_cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class OutputHead(nn.Module):
    """The output projection. Called as a module so ZeRO-3 gathers its weight (or the tied embedding,
    registered as an external parameter) around whatever reads it: the logits, or the objective's fused
    loss passed in as `loss_fn(hidden, weight)` (the model itself knows no loss)."""

    def __init__(self, cfg: ModelArchitecture, tied_embedding: nn.Embedding | None):
        super().__init__()
        self._tied = [tied_embedding]  # a list hides the module from nn.Module registration
        if tied_embedding is None:
            self.weight = nn.Parameter(torch.empty(cfg.vocab_size, cfg.dim))

    @property
    def projection(self) -> torch.Tensor:
        return self.weight if self._tied[0] is None else self._tied[0].weight

    def forward(self, hidden: torch.Tensor, loss_fn=None):
        """Logits, or `loss_fn(hidden, projection weight)` (e.g. a fused linear cross-entropy: no logits kept)."""
        return F.linear(hidden, self.projection) if loss_fn is None else loss_fn(hidden, self.projection)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelArchitecture, checkpoint_every: int = 0):
        """`checkpoint_every` n > 0: every n-th decoder layer recomputes its activations in backward."""
        super().__init__()
        self.config = cfg
        self.checkpoint_every = checkpoint_every
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = OutputHead(cfg, self.embed_tokens if cfg.tie_embeddings else None)
        if not any(hasattr(p, "ds_id") for p in self.parameters()):  # ZeRO-3: engine.build_model inits
            init_parameters(self)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attn_mask, kv_caches=None):
        x = self.embed_tokens(input_ids)
        cos, sin = rope_cos_sin(position_ids, self.config.dim // self.config.n_heads, self.config.rope_theta,
                                x.dtype, self.config.rope_scaling)
        for i, layer in enumerate(self.layers):
            cache = kv_caches[i] if kv_caches is not None else None
            if self.checkpoint_every and self.training and i % self.checkpoint_every == 0:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, attn_mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, attn_mask, cache)
        return self.norm(x)


def init_parameter(name: str, p: torch.Tensor, cfg: ModelArchitecture) -> None:
    """Normal(0, init_std) weights, residual projections scaled by depth (GPT-2), norms 1, biases 0."""
    with torch.no_grad():
        if "norm" in name:
            p.fill_(1.0)
        elif name.endswith(".bias"):
            p.zero_()
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            p.normal_(0.0, cfg.init_std / math.sqrt(2 * cfg.n_layers))
        else:
            p.normal_(0.0, cfg.init_std)


def init_parameters(model: "Transformer") -> None:
    for name, p in model.named_parameters():
        init_parameter(name, p, model.config)


def count_parameters(cfg: ModelArchitecture) -> int:
    """Exact parameter count from the config (no model needed, so it works under ZeRO-3 partitioning)."""
    hd = cfg.dim // cfg.n_heads
    attn = cfg.dim * hd * (cfg.n_heads * 2 + cfg.n_kv_heads * 2)
    if cfg.qkv_bias:
        attn += hd * (cfg.n_heads + 2 * cfg.n_kv_heads)
    layer = attn + 3 * cfg.dim * cfg.ffn_dim + 2 * cfg.dim
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * cfg.dim
    return cfg.vocab_size * cfg.dim + cfg.n_layers * layer + cfg.dim + head


def describe(cfg: ModelArchitecture) -> str:
    n = count_parameters(cfg)
    # the shape, not the preset name: a model converted from a transformers checkpoint has no preset
    return (f"model: {n / 1e6:.2f}M parameters (dim {cfg.dim}, {cfg.n_layers} layers, "
            f"{cfg.n_heads} heads / {cfg.n_kv_heads} kv, ffn {cfg.ffn_dim}, vocab {cfg.vocab_size}, "
            f"{'tied' if cfg.tie_embeddings else 'untied'} head)")
