"""megajepa's tokenizers behind one small protocol: a sentencepiece model trained for the run
(sentencepiece.py) or a transformers tokenizer kept from a checkpoint (hf.py). `load_tokenizer` opens
whichever a path holds; `export_tokenizer` writes either as a transformers tokenizer directory."""
from __future__ import annotations

import os
from typing import Iterable, Protocol

from megajepa.data.tokenizer.hf import HFTokenizer, is_hf_tokenizer_dir
from megajepa.data.tokenizer.sentencepiece import MODEL_FILE, SentencePieceTokenizer, save_hf_tokenizer


class Tokenizer(Protocol):
    """What packing, training, evaluation and export read of a tokenizer (special ids are fixed by the run)."""

    path: str  # the file or directory it was loaded from; checkpoints record it
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int | None
    sep_id: int
    predictor_ids: list[int]
    special_ids: frozenset[int]  # never produced by encode, skipped by decode

    def encode(self, text: str) -> list[int]: ...  # no bos/eos added

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...  # encode of each, in one native call

    def decode(self, ids: Iterable[int]) -> str: ...

    def sha256(self) -> str: ...  # equal digests encode text to equal ids (shards record it)


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """A transformers tokenizer directory -> HFTokenizer; a sentencepiece model file, or a directory holding
    only `tokenizer.model`, -> SentencePieceTokenizer."""
    path = str(path)
    if is_hf_tokenizer_dir(path):
        return HFTokenizer(path)
    return SentencePieceTokenizer(os.path.join(path, MODEL_FILE) if os.path.isdir(path) else path)


def export_tokenizer(tok: Tokenizer, out_dir: str, chat_template: str | None = None) -> None:
    """Write either kind as a transformers tokenizer (AutoTokenizer loads it offline)."""
    if isinstance(tok, HFTokenizer):
        if chat_template is not None:
            tok.hf.chat_template = chat_template
        tok.save(out_dir)
    else:
        save_hf_tokenizer(tok, out_dir, chat_template=chat_template)
