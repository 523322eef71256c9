"""SentencePiece tokenizer: training, loading, special tokens, HF export.

Fixed ids: <pad>=0 <unk>=1 <bos>=2 <eos>=3, then <|sep|> and <|predictor_1..10|> (ids 4..14).
sep/predictor tokens are sentencepiece *control* symbols: one id each, never produced by
`encode` from text. A text that literally contains "<|sep|>" is encoded as ordinary characters
by `SentencePieceTokenizer.encode`, whereas the exported HF tokenizer maps the literal string to the special id
(what chat templates need). The trainer inserts these tokens by id, never by string.

Settings follow Llama's: identity normalization (lossless, no NFKC), whitespace kept as is,
digits split, byte fallback (no <unk> on unseen characters).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterable

import sentencepiece as spm

from megajepa.data import machine_cache

log = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SEP = "<|sep|>"
NUM_PREDICTORS = 10
PREDICTORS = [f"<|predictor_{i}|>" for i in range(1, NUM_PREDICTORS + 1)]
CONTROL_SYMBOLS = [SEP, *PREDICTORS]
MODEL_FILE = "tokenizer.model"
FINGERPRINT_FILE = "tokenizer.fingerprint"  # corpus_fingerprint of what the cached model was trained on
# sentencepiece skips longer training sentences; longer texts are cut into chunks of this many chars
_MAX_SENTENCE_CHARS = 16384


class TokenizerError(ValueError):
    """A tokenizer model file that is corrupt or lacks megajepa's special tokens."""


class SentencePieceTokenizer:
    """A trained sentencepiece model with megajepa's special tokens at fixed ids."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"tokenizer model not found: {self.path}")
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(self.path)
        except (RuntimeError, OSError) as e:
            raise TokenizerError(f"{self.path}: not a valid sentencepiece model ({e})") from e
        expected = {PAD: 0, UNK: 1, BOS: 2, EOS: 3}
        for piece, want in expected.items():
            got = self.sp.id_to_piece(want) if want < self.sp.get_piece_size() else None
            if got != piece:
                raise TokenizerError(f"{self.path}: id {want} is {got!r}, expected {piece!r}")
        for piece in CONTROL_SYMBOLS:
            i = self.sp.piece_to_id(piece)
            if i == self.sp.unk_id() or not self.sp.is_control(i):
                raise TokenizerError(f"{self.path}: missing control symbol {piece!r}")
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = 0, 1, 2, 3
        self.sep_id = self.sp.piece_to_id(SEP)
        self.predictor_ids = [self.sp.piece_to_id(p) for p in PREDICTORS]
        self.vocab_size = self.sp.get_piece_size()
        self.special_ids = frozenset([0, 1, 2, 3, self.sep_id, *self.predictor_ids])

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; no bos/eos added."""
        return self.sp.encode(text, out_type=int)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """`encode` of each text; sentencepiece encodes a list on its own threads."""
        return self.sp.encode(list(texts), out_type=int) if texts else []

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`, special tokens (pad/unk/bos/eos/sep/predictors) skipped."""
        return self.sp.decode([int(i) for i in ids if int(i) not in self.special_ids])

    def sha256(self) -> str:
        """Of the model file."""
        with open(self.path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({self.path!r}, vocab_size={self.vocab_size})"


def _sentences(texts: Iterable[str]) -> Iterable[str]:
    for t in texts:
        for start in range(0, len(t), _MAX_SENTENCE_CHARS):
            chunk = t[start : start + _MAX_SENTENCE_CHARS]
            if chunk.strip():
                yield chunk


def train_tokenizer(
    texts: Iterable[str],
    model_path: str | os.PathLike,
    vocab_size: int,
    model_type: str = "bpe",
    byte_fallback: bool = True,
    seed: int = 0,
) -> SentencePieceTokenizer:
    """Train with sentencepiece's own trainer and write `model_path` atomically.

    Deterministic for a given corpus and seed (single thread, no sentence sampling).
    `hard_vocab_limit=False`: a small corpus yields a smaller vocabulary instead of an error.
    """
    if model_type not in ("bpe", "unigram"):
        raise ValueError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}")
    n_fixed = 4 + len(CONTROL_SYMBOLS) + (256 if byte_fallback else 0)
    if vocab_size <= n_fixed:
        raise ValueError(f"vocab_size {vocab_size} must exceed the {n_fixed} special/byte pieces")
    model_path = Path(model_path)
    seen = [0]

    def counted(it: Iterable[str]) -> Iterable[str]:
        for s in it:
            seen[0] += 1
            yield s

    spm.set_random_generator_seed(seed)
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(counted(_sentences(texts))),
            model_writer=buf,
            model_type=model_type,
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            character_coverage=1.0,
            byte_fallback=byte_fallback,
            pad_id=0, unk_id=1, bos_id=2, eos_id=3,
            pad_piece=PAD, unk_piece=UNK, bos_piece=BOS, eos_piece=EOS,
            control_symbols=CONTROL_SYMBOLS,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=True,
            split_digits=True,
            max_sentence_length=4 * _MAX_SENTENCE_CHARS,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as e:
        if seen[0] == 0:
            raise ValueError(f"no training text for tokenizer {model_path}") from e
        raise
    model_path.parent.mkdir(parents=True, exist_ok=True)
    machine_cache.write_bytes_atomically(model_path, buf.getvalue())
    return SentencePieceTokenizer(model_path)


def load_or_train(
    cache_dir: str | os.PathLike,
    texts_fn: Callable[[], Iterable[str]],
    vocab_size: int,
    fingerprint: str | None = None,
    **kw,
) -> SentencePieceTokenizer:
    """Reuse `cache_dir/tokenizer.model`, else train it from `texts_fn()` (called lazily). `fingerprint`
    (corpus_fingerprint of the texts and settings): recorded beside a model trained here; a cached model
    recorded with another one (or none) is retrained, saying so, never silently reused. With a
    fingerprint, a model this machine already trained from the same corpus and settings (machine_cache)
    is copied instead of trained again.

    Distributed runs: call this on rank 0 only, then barrier, then `load_tokenizer` on the other
    ranks; this function does no collective itself.
    """
    path = Path(cache_dir) / MODEL_FILE
    recorded = recorded_fingerprint(cache_dir)
    if path.exists() and (fingerprint is None or recorded == fingerprint):
        return SentencePieceTokenizer(path)  # raises TokenizerError naming the file if it lacks our tokens
    if path.exists():
        log.warning("%s was trained on another corpus or settings (fingerprint %s, this run's %s): retraining it",
                    path, recorded[:12] if recorded else "not recorded", fingerprint[:12])
    if fingerprint is None:
        return train_tokenizer(texts_fn(), path, vocab_size, **kw)
    shared = machine_cache_name(fingerprint, kw)
    model = machine_cache.read("tokenizers", shared)
    if model is None:
        train_tokenizer(texts_fn(), path, vocab_size, **kw)
        machine_cache.write("tokenizers", shared, path.read_bytes())
    else:
        log.info("tokenizer %s: copied from %s", path, machine_cache.entry_path("tokenizers", shared))
        path.parent.mkdir(parents=True, exist_ok=True)
        machine_cache.write_bytes_atomically(path, model)
    (Path(cache_dir) / FINGERPRINT_FILE).write_text(fingerprint + "\n")
    return SentencePieceTokenizer(path)


def machine_cached_model(fingerprint: str, **train_settings) -> Path | None:
    """The model this machine's cache holds for that corpus and those settings, None when it has none."""
    path = machine_cache.entry_path("tokenizers", machine_cache_name(fingerprint, train_settings))
    return path if path is not None and path.exists() else None


def machine_cache_name(fingerprint: str, train_settings: dict) -> str:
    """The corpus fingerprint, the trainer's settings, sentencepiece's version and this file's source
    (which holds every other training option): a model cached under it is what training would give."""
    h = hashlib.sha256(json.dumps([fingerprint, train_settings, spm.__version__], sort_keys=True).encode())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest() + ".model"


def corpus_fingerprint(texts: Iterable[str], vocab_size: int, **kw) -> str:
    """sha256 of the training texts and every setting: equal fingerprints train equal models."""
    h = hashlib.sha256(json.dumps({"vocab_size": vocab_size, **kw}, sort_keys=True).encode())
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little") + data)  # length-prefixed: ["ab", "c"] != ["a", "bc"]
    return h.hexdigest()


def recorded_fingerprint(cache_dir: str | os.PathLike) -> str | None:
    """The corpus fingerprint recorded beside the cached model, None when absent."""
    path = Path(cache_dir) / FINGERPRINT_FILE
    return path.read_text().strip() if path.exists() else None


def _hf_backend(tok: SentencePieceTokenizer):
    """A `tokenizers.Tokenizer` that encodes/decodes exactly like the sentencepiece model."""
    from tokenizers import AddedToken, Regex, decoders, normalizers
    from tokenizers import Tokenizer as HFTok
    from tokenizers.models import BPE, Unigram
    from transformers.convert_slow_tokenizer import generate_merges, import_protobuf

    proto = import_protobuf().ModelProto()
    with open(tok.path, "rb") as f:
        proto.ParseFromString(f.read())
    pieces = [(p.piece, p.score, p.type) for p in proto.pieces]
    normal = 1  # ModelProto.SentencePiece.Type.NORMAL; others never come from text in sentencepiece
    byte_fallback = proto.trainer_spec.byte_fallback
    if proto.trainer_spec.model_type == 2:  # BPE
        vocab = {p: i for i, (p, _, _) in enumerate(pieces)}
        skip = [p for p, _, t in pieces if t != normal]
        model = BPE(vocab, generate_merges(vocab, None, skip), unk_token=UNK, fuse_unk=True,
                    byte_fallback=byte_fallback)
    elif proto.trainer_spec.model_type == 1:  # unigram
        # unk penalty is 10 below the lowest score, which sentencepiece takes over normal pieces
        # only; a literal "<0xNN>" in text may still match a byte piece here (not in sentencepiece)
        floor = min(s for _, s, t in pieces if t == normal)
        vocab = [(p, s if t == normal else floor) for p, s, t in pieces]
        model = Unigram(vocab, unk_id=tok.unk_id, byte_fallback=byte_fallback)
    else:
        raise TokenizerError(f"{tok.path}: unsupported sentencepiece model_type")
    hf = HFTok(model)
    hf.normalizer = normalizers.Sequence(
        [normalizers.Prepend("▁"), normalizers.Replace(Regex(" "), "▁")])
    steps = [decoders.Replace("▁", " ")]
    if byte_fallback:
        steps += [decoders.ByteFallback()]
    hf.decoder = decoders.Sequence(steps + [decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    hf.add_special_tokens([AddedToken(p, special=True, normalized=False)
                           for p in [PAD, UNK, BOS, EOS, *CONTROL_SYMBOLS]])
    return hf


def save_hf_tokenizer(tok: SentencePieceTokenizer, out_dir: str | os.PathLike, chat_template: str | None = None):
    """Write a transformers tokenizer that `AutoTokenizer.from_pretrained(out_dir)` loads offline.

    Same ids as `tok` for every piece, bos/eos/pad/unk and sep/predictors registered as special.
    Returns the `PreTrainedTokenizerFast`.
    """
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=_hf_backend(tok),
        bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        extra_special_tokens=list(CONTROL_SYMBOLS),
        add_bos_token=False, add_eos_token=False,
        clean_up_tokenization_spaces=False,
    )
    if chat_template is not None:
        hf.chat_template = chat_template
    hf.save_pretrained(str(out_dir))
    return hf
