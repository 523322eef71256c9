"""The machine cache (data/machine_cache.py): a tokenizer trained on a corpus and the embedded synthetic
corpus are built once per machine and reused only when a rebuild would give the same bytes. CPU only."""
import json
import logging
import shutil

import pytest

from megajepa.config import load_config
from megajepa.data import corpus, synthetic
from megajepa.data.synthetic import task_module
from megajepa.data.tokenizer.sentencepiece import corpus_fingerprint, load_or_train, train_tokenizer
from megajepa.training.build import build_data


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEGAJEPA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def texts(word: str) -> list[str]:
    return [f"{word} number {i} and the rest of a sentence" for i in range(40)]


def test_a_tokenizer_trained_once_is_copied_into_the_next_folder(tmp_path, cache):
    fingerprint = corpus_fingerprint(texts("apples"), 300, seed=0)
    first = load_or_train(tmp_path / "a", lambda: texts("apples"), 300, fingerprint, seed=0)
    second = load_or_train(tmp_path / "b", lambda: pytest.fail("must be copied, not trained"), 300, fingerprint, seed=0)
    reference = train_tokenizer(texts("apples"), tmp_path / "ref" / "tokenizer.model", 300, seed=0)
    assert first.sha256() == second.sha256() == reference.sha256()
    assert (tmp_path / "b" / "tokenizer.fingerprint").read_text().strip() == fingerprint
    assert len(list((cache / "tokenizers").iterdir())) == 1


@pytest.mark.parametrize("change", ["corpus", "seed"])
def test_another_corpus_or_setting_trains_again(tmp_path, cache, change):
    load_or_train(tmp_path / "a", lambda: texts("apples"), 300, corpus_fingerprint(texts("apples"), 300, seed=0), seed=0)
    words, seed = ("pears", 0) if change == "corpus" else ("apples", 1)
    trained = []

    def corpus_texts():
        trained.append(True)
        return texts(words)
    got = load_or_train(tmp_path / "b", corpus_texts, 300, corpus_fingerprint(texts(words), 300, seed=seed), seed=seed)
    reference = train_tokenizer(texts(words), tmp_path / "ref" / "tokenizer.model", 300, seed=seed)
    assert trained and got.sha256() == reference.sha256()


def test_off_and_unwritable_caches_train_and_warn(tmp_path, monkeypatch, caplog):
    fingerprint = corpus_fingerprint(texts("apples"), 300, seed=0)
    monkeypatch.setenv("MEGAJEPA_CACHE", "off")
    load_or_train(tmp_path / "a", lambda: texts("apples"), 300, fingerprint, seed=0)
    calls = []
    load_or_train(tmp_path / "b", lambda: calls.append(1) or texts("apples"), 300, fingerprint, seed=0)
    assert calls  # nothing was cached
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    monkeypatch.setenv("MEGAJEPA_CACHE", str(not_a_folder))
    with caplog.at_level(logging.WARNING):
        got = load_or_train(tmp_path / "c", lambda: texts("apples"), 300, fingerprint, seed=0)
    assert got.sha256() == load_or_train(tmp_path / "a", None, 300, fingerprint, seed=0).sha256()
    assert any("could not write" in r.getMessage() and "MEGAJEPA_CACHE" in r.getMessage() for r in caplog.records)


def test_the_data_summary_says_where_the_tokenizer_came_from(tmp_path, cache, caplog):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts("zebras")))

    def cfg(run):
        return load_config(None, [f"output_dir={tmp_path}/{run}", f"data.sources=[{path}]", "data.vocab_size=300",
                                  "data.seq_len=64"])
    first, _ = build_data(cfg("one"), None, 0)
    with caplog.at_level(logging.INFO):
        second, _ = build_data(cfg("two"), None, 0)
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("data summary"))
    assert f"tokenizer copied from {cache}/tokenizers/" in summary and f"into {tmp_path}/two/" in summary
    assert first.sha256() == second.sha256()


def test_the_synthetic_corpus_is_drawn_once_and_read_back_equal(cache, monkeypatch):
    expected = task_module("regex").split(300, 20, 5)  # the generator itself, uncached
    assert corpus.synthetic_split("regex", 300, 20, 5) == expected  # drawn, then written
    monkeypatch.setattr(task_module("regex"), "split", lambda *a: pytest.fail("must be read from the cache"))
    assert corpus.synthetic_split("regex", 300, 20, 5) == expected


def test_the_synthetic_cache_name_follows_arguments_and_generator_source(tmp_path, monkeypatch):
    names = {corpus.synthetic_cache_name("regex", *args) for args in [(300, 20, 5), (301, 20, 5), (300, 21, 5),
                                                                     (300, 20, 6)]}
    assert len(names) == 4 and corpus.synthetic_cache_name("sql", 300, 20, 5) not in names
    copy = tmp_path / "synthetic"
    shutil.copytree(synthetic.__file__.rsplit("/", 1)[0], copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(synthetic, "__file__", str(copy / "__init__.py"))
    unedited = corpus.synthetic_cache_name("regex", 300, 20, 5)
    assert unedited in names
    with open(copy / "regex.py", "a") as f:
        f.write("\n# an edit\n")
    assert corpus.synthetic_cache_name("regex", 300, 20, 5) != unedited
