"""The model preset table and the shape rules every architecture obeys (no torch: the config checks
them before any compute)."""
from __future__ import annotations

# name: (dim, n_layers, n_heads, n_kv_heads, ffn_dim, rope_theta, tie_embeddings, max_seq_len)
PRESETS = {
    "tiny": (256, 4, 4, 2, 688, 10000.0, True, 2048),
    "125m": (768, 12, 12, 12, 2048, 10000.0, True, 2048),
    "350m": (1024, 24, 16, 16, 2816, 10000.0, True, 2048),
    "1b": (2048, 16, 32, 8, 8192, 500000.0, True, 8192),  # Llama-3.2-1B shape
    "3b": (3072, 28, 24, 8, 8192, 500000.0, True, 8192),  # Llama-3.2-3B shape
    "7b": (4096, 32, 32, 32, 11008, 10000.0, False, 4096),  # Llama-2-7B shape
}
PRESET_VOCAB = 32000  # vocabulary assumed when a preset is sized without a tokenizer
SIZED = ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "rope_theta", "max_seq_len")  # 0: the preset's


_COLUMNS = ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "rope_theta", "tie_embeddings", "max_seq_len")


def preset_value(preset: str, name: str):
    return PRESETS[preset][_COLUMNS.index(name)]


def check_heads(dim: int, n_heads: int, n_kv_heads: int) -> None:
    """Grouped-query attention and RoPE need dim % n_heads == 0, n_heads % n_kv_heads == 0, an even head dim."""
    if dim % n_heads or n_heads % n_kv_heads:
        raise ValueError(f"model: dim ({dim}) must divide by n_heads ({n_heads}) and n_heads by "
                         f"n_kv_heads ({n_kv_heads})")
    if (dim // n_heads) % 2:
        raise ValueError(f"model: head dim {dim // n_heads} must be even for RoPE")
