"""A transformers tokenizer behind megajepa's `Tokenizer` protocol (megajepa/data/tokenizer/__init__.py).

Continued pretraining keeps the checkpoint's own tokenizer: we only add what the objective needs
(`<|sep|>`, `<|predictor_1..10|>`) and any of bos/eos/pad it lacks, appended after its last id, so
every id the checkpoint was trained on keeps its meaning.
"""
from __future__ import annotations

import hashlib
import json
import os

from megajepa.data.tokenizer.sentencepiece import (
    BOS,
    EOS,
    PAD,
    PREDICTORS,
    SEP,
    TokenizerError,
)

HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def is_hf_tokenizer_dir(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f)) for f in HF_TOKENIZER_FILES)


class HFTokenizer:
    """A checkpoint's transformers tokenizer with megajepa's tokens added (the `Tokenizer` protocol)."""

    def __init__(self, path: str):
        from transformers import AutoTokenizer

        self.path = str(path)
        if not is_hf_tokenizer_dir(self.path):
            raise TokenizerError(f"{self.path}: no transformers tokenizer here (expected one of "
                                 f"{', '.join(HF_TOKENIZER_FILES)})")
        try:
            self.hf = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise TokenizerError(f"{self.path}: the transformers tokenizer does not load ({e})") from e
        self.original_size = len(self.hf)  # ids below this come from the checkpoint
        self.added = self._add_missing()
        self.bos_id, self.eos_id, self.pad_id = self.hf.bos_token_id, self.hf.eos_token_id, self.hf.pad_token_id
        self.unk_id = self.hf.unk_token_id
        self.sep_id = self.hf.convert_tokens_to_ids(SEP)
        self.predictor_ids = [self.hf.convert_tokens_to_ids(p) for p in PREDICTORS]
        self.vocab_size = len(self.hf)
        self.special_ids = frozenset(i for i in [*self.hf.all_special_ids, self.sep_id, *self.predictor_ids]
                                     if i is not None)

    def _add_missing(self) -> list[str]:
        """Add sep/predictors and any missing bos/eos/pad as special tokens; returns what was added."""
        added = []
        roles = {}
        for role, default in (("bos_token", BOS), ("eos_token", EOS), ("pad_token", PAD)):
            if getattr(self.hf, role) is None:
                roles[role] = default
                added.append(default)
        if roles:
            self.hf.add_special_tokens(roles)
        vocab = self.hf.get_vocab()
        missing = [t for t in (SEP, *PREDICTORS) if t not in vocab]
        if missing:
            self.hf.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
            added += missing
        return added

    def added_ids(self) -> list[int]:
        """Ids this adapter created (their embedding rows are new)."""
        return [i for i in self.hf.convert_tokens_to_ids(self.added) if i >= self.original_size]

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """`encode` of each text; a fast tokenizer encodes a list in Rust, in parallel."""
        return self.hf(list(texts), add_special_tokens=False)["input_ids"] if texts else []

    def decode(self, ids) -> str:
        return self.hf.decode([int(i) for i in ids if int(i) not in self.special_ids])

    def sha256(self) -> str:
        """Of the whole serialised pipeline (vocabulary, merges, normalizer, added tokens)."""
        backend = getattr(self.hf, "backend_tokenizer", None)
        text = backend.to_str() if backend is not None else json.dumps(sorted(self.hf.get_vocab().items()))
        return hashlib.sha256(text.encode()).hexdigest()

    def save(self, out_dir: str) -> None:
        self.hf.save_pretrained(out_dir)

    def __repr__(self) -> str:
        return f"HFTokenizer({self.path!r}, vocab_size={self.vocab_size}, added={len(self.added)})"
