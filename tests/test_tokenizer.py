"""Tokenizer: fixed special ids, determinism, atomic writes, HF export equal to sentencepiece."""

import json
import os
import random
import subprocess
import sys

import pytest
import sentencepiece as spm

from megajepa.data.tokenizer import load_tokenizer
from megajepa.data.tokenizer import sentencepiece as T
from megajepa.data.tokenizer.sentencepiece import (
    TokenizerError,
    load_or_train,
    save_hf_tokenizer,
    train_tokenizer,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = [
    "hello world", "  two  spaces  and trailing ", "café 東京 😀 ünïcödé ß", "1234567 + 89 = 3.14",
    r"^.*[A-Z]{3,}\b(foo|bar)?$", "a\nb\tc", "SELECT name FROM users WHERE age > 30;",
    "", " ", "ﬁ full-width ＡＢＣ", "never seen: ℵ ∮ ⟨x⟩",
]


def corpus(n=1500, seed=0):
    rng = random.Random(seed)
    words = ("the quick brown fox jumps over a lazy dog select from where table regex match "
             "digits 12345 café naïve 東京 [a-z]+ \\d{3}").split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 20))) for _ in range(n)]


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def tok(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "tokenizer.model"
    return train_tokenizer(corpus(), path, 500, model_type=request.param)


def test_special_ids(tok):
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    sp = spm.SentencePieceProcessor(model_file=tok.path)  # independent view of the file
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert sp.id_to_piece(tok.sep_id) == "<|sep|>"
    assert [sp.id_to_piece(i) for i in tok.predictor_ids] == [f"<|predictor_{i}|>" for i in range(1, 11)]
    assert len(set([tok.sep_id, *tok.predictor_ids, 0, 1, 2, 3])) == 15
    assert tok.vocab_size == sp.get_piece_size()
    # never produced from ordinary text
    ids = {i for c in CASES + corpus(200, seed=1) for i in tok.encode(c)}
    assert not ids & tok.special_ids


def test_round_trip(tok):
    for c in CASES:
        ids = tok.encode(c)
        assert tok.encode(c)[:1] != [tok.bos_id]
        assert tok.decode(ids) == c
        assert tok.decode([tok.bos_id, *ids, tok.sep_id, *tok.predictor_ids, tok.eos_id]) == c


def test_determinism(tmp_path):
    a = train_tokenizer(corpus(), tmp_path / "a.model", 400, seed=3)
    b = train_tokenizer(corpus(), tmp_path / "b.model", 400, seed=3)
    assert a.sha256() == b.sha256()


def test_bad_model_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.model"):
        load_tokenizer(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="bad.model"):
        load_tokenizer(bad)


def test_foreign_model_rejected(tmp_path):
    # a plain sentencepiece model without our special tokens, trained with sentencepiece defaults
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus()), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=100, hard_vocab_limit=False, minloglevel=2)
    with pytest.raises(TokenizerError, match="tokenizer.model"):
        load_or_train(tmp_path, lambda: pytest.fail("must not train"), 400)


def test_load_or_train_reuses(tmp_path):
    a = load_or_train(tmp_path, corpus, 400)
    mtime = os.path.getmtime(a.path)
    b = load_or_train(tmp_path, lambda: pytest.fail("must not retrain"), 400)
    assert b.sha256() == a.sha256() and os.path.getmtime(b.path) == mtime


def test_atomic_write(tmp_path):
    def exploding():
        yield from corpus(50)
        raise RuntimeError("boom")

    target = tmp_path / "out" / "tokenizer.model"
    with pytest.raises(RuntimeError):
        train_tokenizer(exploding(), target, 400)
    assert not target.exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    # an existing good model survives a failed retrain untouched
    good = train_tokenizer(corpus(), target, 400)
    digest = good.sha256()
    with pytest.raises(RuntimeError):
        train_tokenizer(exploding(), target, 400)
    assert load_tokenizer(target).sha256() == digest
    assert sorted(os.listdir(target.parent)) == ["tokenizer.model"]


def test_encode_batch_equals_encode_of_each(tok, tmp_path):
    """tokenize_records encodes a whole corpus in one encode_batch call: the sentencepiece model and its HF
    export behind the protocol (HFTokenizer) must give what encode gives text by text."""
    from megajepa.data.tokenizer.hf import HFTokenizer

    texts = CASES + corpus(200, seed=3)
    save_hf_tokenizer(tok, tmp_path)
    for wrapper in (tok, HFTokenizer(str(tmp_path))):
        assert wrapper.encode_batch(texts) == [wrapper.encode(t) for t in texts]
        assert wrapper.encode_batch([]) == []


def test_hf_wrapper_equal(tok, tmp_path):
    from transformers import AutoTokenizer

    tmpl = "{% for m in messages %}{{ bos_token }}{{ m['content'] }}{{ eos_token }}{% endfor %}"
    save_hf_tokenizer(tok, tmp_path, chat_template=tmpl)
    hf = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    for c in CASES + corpus(100, seed=2):
        ids = tok.encode(c)
        assert hf.encode(c, add_special_tokens=False) == ids, c
        assert hf.decode(ids, skip_special_tokens=True) == tok.decode(ids) == c
    assert (hf.pad_token_id, hf.unk_token_id, hf.bos_token_id, hf.eos_token_id) == (0, 1, 2, 3)
    assert hf.convert_tokens_to_ids("<|sep|>") == tok.sep_id
    for i, pid in enumerate(tok.predictor_ids, 1):
        assert hf.encode(f"<|predictor_{i}|>", add_special_tokens=False) == [pid]
    assert set(hf.all_special_ids) >= tok.special_ids
    assert hf.decode([tok.bos_id, tok.sep_id, *tok.predictor_ids], skip_special_tokens=True) == ""
    out = hf.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=True)
    out = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
    assert out == [tok.bos_id, *tok.encode("hi"), tok.eos_id]


def test_cli(tmp_path):
    rows = [{"text": "plain text record"}, {"views": ["match three caps", r"[A-Z]{3}"]},
            {"messages": [{"role": "user", "content": "what is 2+2"}, {"role": "assistant", "content": "4"}]}]
    src = tmp_path / "data.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows * 50) + "\n")
    out = tmp_path / "tok" / "tokenizer.model"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_tokenizer.py"), "--input", str(tmp_path / "*.jsonl"),
           "--out", str(out), "--vocab-size", "350"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    tok = load_tokenizer(out)
    assert tok.decode(tok.encode("what is 2+2")) == "what is 2+2"
    src.write_text('{"text": "ok"}\n{"views": "not a list"}\n')
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "data.jsonl:2" in r.stderr


def test_bad_args(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(corpus(), tmp_path / "x.model", T.NUM_PREDICTORS)
    with pytest.raises(ValueError, match="no training text"):
        train_tokenizer([], tmp_path / "x.model", 400)


def test_load_tokenizer_opens_either_kind_behind_one_protocol(tok, tmp_path):
    """A model file, a folder holding only it, and an exported transformers folder: the same ids and text."""
    from megajepa.data.tokenizer import Tokenizer
    from megajepa.data.tokenizer.hf import HFTokenizer

    folder = tmp_path / "sp"
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes(open(tok.path, "rb").read())
    save_hf_tokenizer(tok, tmp_path / "hf")
    by_file, by_folder, hf = load_tokenizer(tok.path), load_tokenizer(folder), load_tokenizer(tmp_path / "hf")
    assert type(by_file) is type(by_folder) is T.SentencePieceTokenizer and isinstance(hf, HFTokenizer)
    fields = [name for name in Tokenizer.__annotations__]
    for t in (by_file, by_folder, hf):
        assert all(hasattr(t, name) for name in fields) and callable(t.sha256)
        assert (t.bos_id, t.eos_id, t.sep_id, t.predictor_ids) == (tok.bos_id, tok.eos_id, tok.sep_id, tok.predictor_ids)
        for c in CASES[:6]:
            assert t.encode(c) == tok.encode(c) and t.decode(t.encode(c)) == c
    assert by_file.sha256() == by_folder.sha256() != hf.sha256()
    assert hf.sha256() == load_tokenizer(tmp_path / "hf").sha256()  # the pipeline's digest is stable
