"""Record formats, file formats through `datasets`, folders/globs/streaming, the weighted mixture, and a
corpus of deliberately broken records under both bad-record policies. CPU only, ~15 s."""
import json
import os
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from megajepa.config import ConfigError, load_config
from megajepa.data.examples import BadRecordReport, RecordError, tokenize_records
from megajepa.data.mixture import mixture
from megajepa.data.records import BadRecord, record_views
from megajepa.data.sources import Source

from helpers import CharTokenizer

SYSTEM = {"role": "system", "content": "Convert."}


def msg(user, assistant=None):
    return [{"role": "user", "content": user}] + ([{"role": "assistant", "content": assistant}] if assistant else [])


def write_parquet(path, records):
    keys = sorted({k for r in records for k in r})  # every row's columns, null where a row lacks one
    pq.write_table(pa.Table.from_pydict({k: [r.get(k) for r in records] for k in keys}), path)


def write_jsonl(path, records):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


# ------------------------------------------------------------------ formats
def test_three_record_formats():
    assert record_views({"messages": [SYSTEM, *msg("find dog", "dog.*")]}) == ["find dog", "dog.*"]
    assert record_views({"views": ["a", "b", "c"]}) == ["a", "b", "c"]
    assert record_views({"text": "a document"}) == ["a document"]


def test_extra_message_fields_add_views_after_text_and_code():
    record = {"messages": [SYSTEM, *msg("find dog", "dog.*")],
              "paraphrases": [msg("look for dog"), [SYSTEM, *msg("dog lines", "ignored")]],
              "single": msg("one more")}
    assert record_views(record, ["paraphrases", "single"]) == ["find dog", "dog.*", "look for dog", "dog lines",
                                                               "one more"]
    assert record_views(record) == ["find dog", "dog.*"]  # not configured: ignored
    assert record_views({"messages": msg("a", "b")}, ["paraphrases"]) == ["a", "b"]  # absent: no extra views
    with pytest.raises(BadRecord, match="'paraphrases' must be a list"):
        record_views({**record, "paraphrases": "x"}, ["paraphrases"])
    with pytest.raises(BadRecord, match=r"paraphrases\[0\]' needs a user turn"):
        record_views({**record, "paraphrases": [[{"role": "assistant", "content": "x"}]]}, ["paraphrases"])


# ------------------------------------------------------------------ the broken corpus
GOOD = {"views": ["find dog", "dog.*"]}
BROKEN = [  # (line bytes, expected reason prefix)
    (b'{"views": ["a", "b"]', "bad JSON"),
    (b'{"text": "caf\xe9"}', "invalid UTF-8"),
    (json.dumps({"text": 5}).encode(), "field 'text' must be a string"),
    (json.dumps({"views": "a b"}).encode(), "field 'views' must be a list of strings"),
    (json.dumps({"messages": [{"role": "user"}]}).encode(), "messages[0] needs string fields"),
    (json.dumps({"messages": msg("only a question")}).encode(), "field 'messages' needs a user turn and an assistant"),
    (json.dumps({"title": "x"}).encode(), "record has none of the fields"),
    (json.dumps({"views": []}).encode(), "record has no views"),
    (json.dumps({"views": ["a", "  "]}).encode(), "view 1 is empty"),
    (json.dumps([1, 2]).encode(), "expected a JSON object, got list"),
]


@pytest.fixture
def broken_file(tmp_path):
    """Good records on odd lines, one broken record of each kind on even lines, and a blank line."""
    path = tmp_path / "broken.jsonl"
    lines, expected = [], {}
    for raw, reason in BROKEN:
        lines.append(json.dumps(GOOD).encode())
        lines.append(raw)
        expected[len(lines)] = reason
    lines.append(b"   ")
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path), expected


def test_skip_policy_counts_and_names_every_broken_record(broken_file):
    path, expected = broken_file
    report = BadRecordReport()
    examples = tokenize_records(Source(path), CharTokenizer(500, 20), "skip", report)
    assert len(examples) == len(BROKEN)
    assert [e.source for e in examples] == [f"{path}:{line - 1}" for line in expected]
    assert report.total == len(BROKEN)
    assert len(report.first) == len(BROKEN)
    for message, (line, reason) in zip(report.first, expected.items()):
        assert message.startswith(f"{path}:{line}: {reason}"), (message, line, reason)


def test_error_policy_stops_at_the_first_broken_record(broken_file):
    path, expected = broken_file
    first_line, reason = next(iter(expected.items()))
    with pytest.raises(RecordError, match=f"{path}:{first_line}: {reason}"):
        tokenize_records(Source(path), CharTokenizer(500, 20), "error", BadRecordReport())


@pytest.mark.slow
def test_error_policy_stops_the_trainer_before_training(broken_file, tmp_path):
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path, expected = broken_file
    result = subprocess.run([sys.executable, os.path.join(repo, "megajepa", "train.py"), f"output_dir={tmp_path}/run",
                             f"data.sources=[{path}]", "data.on_bad_record=error", "data.vocab_size=300"],
                            capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=repo))
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{path}:2: bad JSON" in result.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


# ------------------------------------------------------------------ file formats, folders, globs, streaming
RECORDS = [{"messages": [SYSTEM, *msg(f"q{i}", f"a{i}")]} if i % 3 == 0 else
           {"views": [f"v{i}", f"w{i}", f"x{i}"]} if i % 3 == 1 else {"text": f"document {i}"} for i in range(12)]


def test_json_parquet_jsonl_read_the_same_records(tmp_path):
    write_jsonl(tmp_path / "r.jsonl", RECORDS)
    (tmp_path / "r.json").write_text(json.dumps(RECORDS))
    write_parquet(tmp_path / "r.parquet", RECORDS)
    want = [record_views(r) for r in RECORDS]
    for name in ("r.jsonl", "r.json", "r.parquet"):
        for streaming in (False, True):
            got = list(Source(str(tmp_path / name), streaming=streaming))
            assert [record_views(r) for _, r in got] == want, (name, streaming)
    assert [s for s, _ in Source(str(tmp_path / "r.parquet"))][:2] == [f"{tmp_path}/r.parquet:row 1",
                                                                        f"{tmp_path}/r.parquet:row 2"]


def test_folders_and_globs_in_sorted_order(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    write_jsonl(tmp_path / "d" / "b.jsonl", RECORDS[4:8])
    write_jsonl(tmp_path / "d" / "a.jsonl", RECORDS[:4])
    write_parquet(tmp_path / "d" / "sub" / "c.parquet", RECORDS[8:])
    (tmp_path / "d" / "notes.txt").write_text("not data")
    want = [record_views(r) for r in RECORDS]
    assert [record_views(r) for _, r in Source(str(tmp_path / "d"))] == want
    assert [record_views(r) for _, r in Source(str(tmp_path / "d" / "*.jsonl"))] == want[:8]
    with pytest.raises(RecordError, match="matches no"):
        Source(str(tmp_path / "nothing*.jsonl")).files()


def test_unloadable_parquet_is_named(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(RecordError, match="bad.parquet: datasets cannot load"):
        list(Source(str(tmp_path / "bad.parquet")))


# ------------------------------------------------------------------ the mixture
def test_weighted_mixture_first_exhausted(tmp_path):
    write_jsonl(tmp_path / "text.jsonl", [{"text": f"t{i}"} for i in range(3000)])
    write_jsonl(tmp_path / "pairs.jsonl", [{"views": [f"a{i}", f"b{i}"]} for i in range(3000)])
    specs = [{"path": str(tmp_path / "text.jsonl"), "weight": 9}, {"path": str(tmp_path / "pairs.jsonl"), "weight": 1}]
    got = list(mixture(specs, seed=3))
    assert got == list(mixture(specs, seed=3))  # deterministic
    assert got != list(mixture(specs, seed=4))
    n_text = sum("text" in r for _, r in got)
    assert n_text == 3000  # the text source ran out first and ended the mixture
    n_pairs = len(got) - n_text
    # Each record is text with p = 0.9: n_pairs ~ NegBin; 3000/9 = 333 expected, sd ~ 19.
    assert 333 - 5 * 19 < n_pairs < 333 + 5 * 19
    assert len({s for s, _ in got}) == len(got)  # nothing repeated


def test_weighted_mixture_all_exhausted_oversamples_the_small_source(tmp_path):
    write_jsonl(tmp_path / "big.jsonl", [{"text": f"t{i}"} for i in range(900)])
    write_jsonl(tmp_path / "small.jsonl", [{"text": f"s{i}"} for i in range(20)])
    specs = [{"path": str(tmp_path / "big.jsonl"), "weight": 1}, {"path": str(tmp_path / "small.jsonl"), "weight": 1}]
    got = [r["text"] for _, r in mixture(specs, seed=0, stopping="all_exhausted")]
    counts = Counter(t[0] for t in got)
    assert counts["t"] == 900 and set(got) >= {f"s{i}" for i in range(20)}
    assert abs(counts["s"] - 900) < 5 * 30  # equal weights: the small source repeated ~45 times


def test_sources_config_is_validated():
    with pytest.raises(ConfigError, match=r"data.sources\[1\].weight' must be > 0"):
        load_config(None, ["data.sources=[a.jsonl, {path: b, weight: 0}]"])
    with pytest.raises(ConfigError, match=r"unknown config key 'data.sources\[0\].wieght'"):
        load_config(None, ["data.sources=[{path: b, wieght: 2}]"])
    with pytest.raises(ConfigError, match=r"data.sources\[0\].format' must be"):
        load_config(None, ["data.sources=[{path: b, format: csv}]"])


PAPER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "datasets", "llm-jepa")


@pytest.mark.skipif(not os.path.isdir(PAPER), reason="the LLM-JEPA paper's files are not on this machine")
def test_the_paper_files_read_without_a_bad_record():
    from megajepa.data.examples import system_turn
    for name in ("synth_train.jsonl", "spider_train.jsonl", "gsm8k_test.jsonl"):
        path = os.path.join(PAPER, name)
        report = BadRecordReport()
        examples = tokenize_records(Source(path), CharTokenizer(500, 20), "error", report, with_prompt=True)
        with open(path) as f:
            raw = [json.loads(line) for line in f]
        assert report.total == 0 and len(examples) == len(raw)
        first = raw[0]["messages"]
        assert examples[0].views == [CharTokenizer(500, 20).encode(first[1]["content"]), CharTokenizer(500, 20).encode(first[2]["content"])]
        assert examples[0].prompt == CharTokenizer(500, 20).encode(system_turn(raw[0]))
