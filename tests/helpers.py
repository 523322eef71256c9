"""Small builders shared by tests: tiny model configs and fixed special-token ids."""
from __future__ import annotations

import torch

from megajepa.config import ModelConfig
from megajepa.model import Transformer, resolve_model_config
from megajepa.packing import Specials

VOCAB = 96
SPECIALS = Specials(bos=2, eos=3, sep=4, pad=0, predictors=list(range(5, 15)))


def tiny_config(**overrides) -> ModelConfig:
    fields = dict(preset="tiny", vocab_size=VOCAB, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128)
    fields.update(overrides)
    return resolve_model_config(ModelConfig(**fields))


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(tiny_config(**overrides)).eval()


def random_views(rng, n_views: int = 2, low: int = 1, high: int = 12) -> list[list[int]]:
    """Content tokens only (ids >= 16 never collide with specials)."""
    return [[int(t) for t in rng.integers(16, VOCAB, size=int(rng.integers(low, high + 1)))] for _ in range(n_views)]
