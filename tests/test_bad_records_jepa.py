"""Records the JEPA objective cannot use (issue 3): an empty view, views that cannot fit one row even
alone (a one-view record is a plain NTP document, issue 16). Skipped and counted with file:line
(data.on_bad_record=skip) or an error naming file:line before any compute (error); a training run never dies on them. ~25 s."""
import json
import os
import subprocess
import sys

import pytest
from helpers import SPECIALS, CharTokenizer

from megajepa.data.examples import BadRecordReport, RecordError, tokenize_records
from megajepa.data.loader import PackedEpochs
from megajepa.data.packing import LayoutConfig
from megajepa.data.sources import Source

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ_LEN = 64


GOOD = [{"views": ["find dog", "dog.*"]}, {"messages": [{"role": "user", "content": "cat"},
                                                        {"role": "assistant", "content": "c.t"}]},
        {"text": "a plain document stays an NTP example"},
        {"views": ["a one-view record of any format is a plain NTP document too"]}]
BAD = {  # record -> reason the report names
    "empty": ({"views": ["find dog", ""]}, "view 1 is empty"),
    # the stream alone fits 64 tokens; with predictors and the isolated copy of Code it does not
    "too_long": ({"views": ["x" * 20, "y" * 25]}, "does not fit one row"),
}


@pytest.fixture
def corpus_file(tmp_path):
    lines, where = [], {}
    for name, (record, _) in BAD.items():
        lines += [json.dumps(g) for g in GOOD]
        lines.append(json.dumps(record))
        where[name] = len(lines)
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(lines * 3) + "\n")  # enough rows for a tiny run
    return str(path), where


def load(path, policy, report, use_jepa=True):
    examples = tokenize_records(Source(path), CharTokenizer(80, 16), policy, report)
    return PackedEpochs(examples, SPECIALS, LayoutConfig(predictors=4), SEQ_LEN, seed=0, use_jepa=use_jepa,
                        policy=policy, report=report)


def test_skip_counts_and_names_each_bad_record(corpus_file):
    path, where = corpus_file
    report = BadRecordReport()
    epochs = load(path, "skip", report)
    assert len(epochs.examples) == 3 * len(BAD) * len(GOOD)  # the file repeats its lines 3 times
    assert report.total == 3 * len(BAD)
    for name, line in where.items():
        assert any(m.startswith(f"{path}:{line}: {BAD[name][1]}") for m in report.first), (name, report.first)
    assert sum(r.n_units for r in epochs.rows(0)) == len(epochs.examples)


def test_without_jepa_only_the_empty_view_is_bad(corpus_file):
    path, where = corpus_file
    report = BadRecordReport()
    load(path, "skip", report, use_jepa=False)  # single view: an NTP document; short stream: fits
    assert report.total == 3 and all(m.startswith(f"{path}:{where['empty']}:") for m in report.first[:1])


@pytest.mark.parametrize("name", list(BAD))
def test_error_policy_names_file_and_line(tmp_path, name):
    path = tmp_path / "one_bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in GOOD + [BAD[name][0]]) + "\n")
    with pytest.raises(RecordError, match=f"{path}:{len(GOOD) + 1}: "):
        load(str(path), "error", BadRecordReport())


@pytest.mark.slow
def test_training_skips_them_and_runs(corpus_file, tmp_path):
    path, where = corpus_file
    args = [f"output_dir={tmp_path}/run", f"data.sources=[{path}]", f"data.seq_len={SEQ_LEN + 32}",
            "data.vocab_size=300", "jepa.predictors=4", "train.max_steps=2", "train.warmup_steps=1", "train.micro_batch_size=1",
            "model.dim=32", "model.n_layers=1", "model.n_heads=2", "model.n_kv_heads=1", "model.ffn_dim=64"]
    result = subprocess.run([sys.executable, os.path.join(REPO, "megajepa", "train.py"), *args], capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped 3 bad record(s)" in result.stderr
    assert f"{path}:{where['empty']}: view 1 is empty" in result.stderr
    assert os.path.exists(tmp_path / "run" / "checkpoints" / "latest")
