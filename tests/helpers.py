"""Small builders shared by tests: tiny model configs, fixed special-token ids, hand-made checkpoint tags."""
from __future__ import annotations

import os

import torch

from megajepa.config import ModelConfig
from megajepa.model.architecture import ModelArchitecture
from megajepa.data.packing import Specials
from megajepa.model.transformer import Transformer, resolve_model_config

VOCAB = 96
SPECIALS = Specials(bos=2, eos=3, sep=4, pad=0, predictors=list(range(5, 15)))


class CharTokenizer:
    """One id per character (ord(c) % span + first): independent of sentencepiece, ids a test controls."""

    def __init__(self, span: int, first: int):
        self.span, self.first = span, first

    def encode(self, text: str) -> list[int]:
        return [ord(c) % self.span + self.first for c in text]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]


def fake_tag(root: str, step: int, complete: bool = True) -> str:
    """A checkpoint tag folder as the locator sees one: rank 0's model-state file, and the COMPLETE marker."""
    from megajepa.training.checkpoint import locate
    tag = os.path.join(root, locate.tag_for(step))
    os.makedirs(tag)
    open(os.path.join(tag, "zero_pp_rank_0_mp_rank_00_model_states.pt"), "w").close()
    if complete:
        open(os.path.join(tag, locate.COMPLETE), "w").close()
    return tag


def tiny_config(**overrides) -> ModelArchitecture:
    fields = dict(preset="tiny", vocab_size=VOCAB, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128)
    fields.update(overrides)
    return resolve_model_config(ModelConfig(**fields))


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(tiny_config(**overrides)).eval()


def random_views(rng, n_views: int = 2, low: int = 1, high: int = 12) -> list[list[int]]:
    """Content tokens only (ids >= 16 never collide with specials)."""
    return [[int(t) for t in rng.integers(16, VOCAB, size=int(rng.integers(low, high + 1)))] for _ in range(n_views)]


def run_gloo_ranks(fn, world_size: int = 2, *args) -> None:
    """Run fn(rank, *args) in `world_size` spawned processes joined in a gloo process group."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gloo_entry, args=(world_size, port, fn, args), nprocs=world_size, join=True)


def _gloo_entry(rank, world_size, port, fn, args):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def random_packed_batch(seed: int, seq_len: int = 96, n: int = 14, high: int = 12, predictors: int | None = None):
    """Collated rows packed from random two-view examples (random k, embed_at, JEPA dropout; padded)."""
    import numpy as np

    from megajepa.data.collate import collate
    from megajepa.data.packing import LayoutConfig, build_unit, place

    rng = np.random.default_rng(seed)
    k = int(rng.integers(0, 4)) if predictors is None else predictors
    layout = LayoutConfig(predictors=k, embed_at=("end", "last")[seed % 2])
    units = [build_unit(random_views(rng, high=high), SPECIALS, layout, with_jepa=bool(rng.integers(0, 4)))
             for _ in range(n)]
    return collate(place(units, seq_len, SPECIALS))


def direct_keeps(seed, epoch, record, p):
    """The documented rule for one record, written out: U(seed, epoch, record) >= p, U the record's
    entry in its block of BLOCK draws."""
    import numpy as np

    from megajepa.data.loss_dropout import BLOCK, DROPOUT_STREAM
    u = np.random.default_rng([seed, DROPOUT_STREAM, epoch, record // BLOCK]).random(BLOCK)[record % BLOCK]
    return bool(u >= p)
