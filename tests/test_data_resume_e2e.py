"""Through the real trainer (one process, DeepSpeed ZeRO-3 on CPU): a run on memory-mapped shards,
resumed from its step-4 checkpoint, logs exactly the losses of the uninterrupted run for steps 5-8,
across an epoch end (the data order's state is in the checkpoint). ~60 s."""
import json
import os
import subprocess
import sys

import pytest

from megajepa.config import load_config
from megajepa.data.preprocess import preprocess
from megajepa.data.synthetic import generate
from megajepa.data.tokenizer.sentencepiece import train_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["data.seq_len=128", "train.micro_batch_size=4", "model.dim=64", "model.n_layers=2", "model.n_heads=4",
        "model.n_kv_heads=2", "model.ffn_dim=128", "train.warmup_steps=2", "train.log_interval=1",
        "train.save_interval=4", "train.max_steps=8", "jepa.dropout=0.2"]


def train(out, *args):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, os.path.join(REPO, "megajepa", "train.py"), f"output_dir={out}", *TINY,
                             *args], capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


def losses(out):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(os.path.join(out, "tensorboard"))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in ("loss/lm", "loss/jepa", "data/epoch")}


@pytest.mark.slow
def test_resume_from_shards_reproduces_the_uninterrupted_losses(tmp_path):
    records = generate("regex", 70, 0)
    with open(tmp_path / "pairs.jsonl", "w") as f:
        f.writelines(json.dumps({"views": r["views"]}) + "\n" for r in records)
    tok = train_tokenizer([v for r in records for v in r["views"]], tmp_path / "tok.model", 400, seed=0).path
    shards = str(tmp_path / "shards")
    cfg = load_config(None, [f"data.sources=[{tmp_path}/pairs.jsonl]", f"data.tokenizer={tok}", *TINY])
    rows = preprocess(cfg, shards, workers=1, progress=False)["counts"]["rows"]
    assert 4 * 5 <= rows < 4 * 8  # an epoch ends between the checkpoint (step 4) and step 8
    train(tmp_path / "a", f"data.shards={shards}")
    train(tmp_path / "b", f"data.shards={shards}", f"resume={tmp_path}/a/checkpoints/step_00000004")
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(b["loss/lm"]) == [5, 6, 7, 8]
    assert a["data/epoch"][8] == 1 and a["data/epoch"][4] == 0
    for tag in ("loss/lm", "loss/jepa"):
        assert [b[tag][s] for s in range(5, 9)] == [a[tag][s] for s in range(5, 9)], tag
