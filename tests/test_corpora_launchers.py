"""Bad corpora through the real entry points (issue 16): the `deepspeed` launcher running megajepa/train.py
and the installed `megajepa-preprocess` script exit 2 with the file:line reason, before any compute, and
preprocessing leaves no manifest. tests/test_corpora.py checks the same cases in-process."""
import json
import os
import subprocess
import sys

import pytest

import run_helpers as rh

pytestmark = pytest.mark.slow

SMALL = ["data.vocab_size=300", "data.seq_len=64", "train.max_steps=2", "train.warmup_steps=1"]


def bad_corpus(path):
    """Every record bad: a JSON array on a .jsonl line, then a record with none of the known fields."""
    with open(path, "w") as f:
        f.write(json.dumps([{"text": "a"}, {"text": "b"}]) + "\n")
        f.write(json.dumps({"prompt": "no known field"}) + "\n")
    return path


def one_bad_record(path):
    with open(path, "w") as f:
        for i in range(40):
            f.write(json.dumps({"views": [f"find word {i}", f"word{i}.*"]}) + "\n")
        f.write("{not json\n")
    return path


def run(cmd, tmp_path):
    p = subprocess.run(cmd, capture_output=True, text=True, env=rh.env(), cwd=rh.REPO, timeout=600)
    return p.returncode, p.stdout + p.stderr


def deepspeed_train(tmp_path, corpus, *extra):
    return run([os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", "1", "--master_port",
                str(rh.free_port()), rh.TRAIN, f"output_dir={tmp_path}/run", f"data.sources=[{corpus}]", *SMALL,
                *extra], tmp_path)


def preprocess(tmp_path, corpus, *extra):
    return run([os.path.join(os.path.dirname(sys.executable), "megajepa-preprocess"), "--out", str(tmp_path / "shards"),
                "--workers", "1", "--no-progress", f"data.sources=[{corpus}]", *SMALL[:2], *extra], tmp_path)


def test_a_corpus_with_no_usable_record_exits_2_from_both_entry_points(tmp_path):
    corpus = bad_corpus(tmp_path / "bad.jsonl")
    for code, out in (deepspeed_train(tmp_path, corpus), preprocess(tmp_path, corpus)):
        assert code == 2, out[-3000:]
        assert f"{corpus}:1: expected a JSON object, got list" in out, out[-3000:]
        assert "Traceback" not in out
    assert not os.path.exists(tmp_path / "shards" / "manifest.json")
    assert not os.path.exists(tmp_path / "run" / "checkpoints")  # stopped before the model was built


def test_on_bad_record_error_names_the_line_from_both_entry_points(tmp_path):
    corpus = one_bad_record(tmp_path / "pairs.jsonl")
    for code, out in (deepspeed_train(tmp_path, corpus, "data.on_bad_record=error"),
                      preprocess(tmp_path, corpus, "data.on_bad_record=error")):
        assert code == 2, out[-3000:]
        assert f"{corpus}:41:" in out, out[-3000:]
    assert not os.path.exists(tmp_path / "shards" / "manifest.json")
