"""A real two-rank ZeRO-3 run through the `deepspeed` launcher on CPU: both loss terms fall, a
checkpoint is written, TensorBoard holds the scalars."""
import glob
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # every test shares one 2-rank launcher run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["data.num_train=1500", "data.vocab_size=512", "data.seq_len=256", "train.micro_batch_size=2",
        "model.dim=128", "model.n_layers=2", "model.ffn_dim=256", "train.warmup_steps=5", "train.log_interval=5"]


def launch(args, output_dir, timeout=600):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    cmd = [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", "2",
           os.path.join(REPO, "megajepa", "train.py"), f"output_dir={output_dir}", *TINY, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def scalars(output_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(os.path.join(output_dir, "tensorboard"))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("e2e") / "run")
    result = launch(["train.max_steps=30"], out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result


def test_both_loss_terms_fall(two_rank_run):
    out, _ = two_rank_run
    s = scalars(out)
    assert len(s["loss/lm"]) == 6
    assert s["loss/lm"][-1] < s["loss/lm"][0] - 0.5
    # A falling JEPA loss proves nothing (a collapse drives 1 - cos to 0 too), and 30 steps are too few for
    # SIGReg to spread the embeddings: that the default keeps them alive is tests/test_default_objective.py.
    assert all(0 < v < 2 for v in s["loss/jepa"]) and all(v > 0 for v in s["loss/reg"]), (s["loss/jepa"], s["loss/reg"])


def test_tensorboard_holds_the_scalars(two_rank_run):
    s = scalars(two_rank_run[0])
    for tag in ("loss/total", "loss/lm", "loss/jepa", "jepa/cosine", "lr", "grad_norm", "throughput/tokens_per_s",
                "collapse/erank_enc", "collapse/erank_pred", "collapse/cos_pred_target", "collapse/cos_pred_other"):
        assert tag in s and len(s[tag]) == 6, tag
    assert all(v > 0 for v in s["throughput/tokens_per_s"])


def test_checkpoint_written_by_both_ranks(two_rank_run):
    out, result = two_rank_run
    root = os.path.join(out, "checkpoints")
    assert open(os.path.join(root, "latest")).read().strip() == "step_00000030"
    shards = glob.glob(os.path.join(root, "step_00000030", "zero_pp_rank_*_mp_rank_00_optim_states.pt"))
    assert len(shards) == 2
    assert "launcher=deepspeed rank=0/2" in result.stdout + result.stderr


def test_model_flops_logged_per_device(two_rank_run):
    """throughput/gflops (per device) over throughput/tokens_per_s (global) is the model FLOPs per token:
    at least 6 x the matmul weights, plus attention of at most seq_len keys per query."""
    from megajepa.config import ModelConfig
    from megajepa.data.tokenizer import load_tokenizer
    from megajepa.model.flops import matmul_params
    from megajepa.model.transformer import resolve_model_config

    out = two_rank_run[0]
    vocab = load_tokenizer(os.path.join(out, "tokenizer", "tokenizer.model")).vocab_size
    cfg = resolve_model_config(ModelConfig(preset="tiny", dim=128, n_layers=2, ffn_dim=256), vocab)
    s = scalars(out)
    per_token = [g * 1e9 * 2 / t for g, t in zip(s["throughput/gflops"], s["throughput/tokens_per_s"])]
    low = 6 * matmul_params(cfg)
    assert len(per_token) == 6
    assert all(low < p < low + 12 * cfg.n_layers * cfg.dim * 256 for p in per_token), (per_token, low)


def test_resume_on_one_plain_process_converts_the_two_rank_checkpoint(two_rank_run, tmp_path):
    """No launcher, one process: the 2-rank ZeRO-3 checkpoint goes through DeepSpeed's universal
    checkpoint (tests/test_resume_other_world.py checks the losses; this checks the plain-python path)."""
    out, _ = two_rank_run
    tag = os.path.join(out, "checkpoints", "step_00000030")
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, os.path.join(REPO, "megajepa", "train.py"),
                             f"output_dir={tmp_path / 'one'}", *TINY, "train.max_steps=32", f"resume={tag}"],
                            capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "written by 2 ranks: converting it to a universal checkpoint" in result.stderr
    assert "resumed from" in result.stderr and "at step 30" in result.stderr
    assert os.path.isfile(os.path.join(tmp_path, "one", "checkpoints", "step_00000032", "COMPLETE"))