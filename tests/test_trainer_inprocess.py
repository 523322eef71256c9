"""The Trainer in-process on 2 gloo ranks (no launcher): the scalars it logs to TensorBoard equal the
lines of losses.jsonl, the total is gamma * lm + lambda * jepa, and the learning rate follows a hand
computation of the warm-up + cosine schedule in both logs, also after a resume (a restored scheduler's
own last LR is stale: the two logs once read the LR from two sources). (~40 s)"""
import json
import math
import os
import shutil

import pytest
from helpers import run_gloo_ranks

STEPS, WARMUP, LR, COS_MIN = 6, 2, 1e-3, 0.1  # COS_MIN: ds_configs/zero3.json's cos_min_ratio
ARGS = ["data.num_train=200", "data.vocab_size=384", "data.seq_len=128", "model.dim=64", "model.n_layers=1",
        "model.ffn_dim=128", "train.micro_batch_size=2", "train.grad_accum=2", f"train.max_steps={STEPS}",
        f"train.warmup_steps={WARMUP}", f"train.lr={LR}", "train.log_interval=1", "jepa.gamma=0.5",
        "jepa.lambda=2.0", "train.save_interval=3"]


def _train(rank, out, *extra):
    # the env contract a launcher would export; the gloo group itself is already up (helpers.run_gloo_ranks)
    os.environ.update(OMP_NUM_THREADS="1", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    from megajepa import distributed
    from megajepa.config import load_config
    from megajepa.training.trainer import train

    train(load_config(None, [f"output_dir={out}", *ARGS, *extra]), distributed.init_distributed())


def hand_lr(step: int) -> float:
    """The LR held after `step` optimizer steps, by DeepSpeed's WarmupCosineLR formula: its iteration
    counter starts at -1 and each step adds one; linear warm-up from 0 over WARMUP iterations, then
    cosine from LR down to COS_MIN * LR."""
    it = step - 1
    if it < WARMUP:
        return LR * it / WARMUP
    progress = min(1.0, (it - WARMUP + 1) / max(1, STEPS - WARMUP))
    return LR * (COS_MIN + (1 - COS_MIN) * (1 + math.cos(math.pi * progress)) / 2)


def tensorboard_scalars(out):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(os.path.join(out, "tensorboard"))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_logged_scalars_agree_with_losses_jsonl_and_the_schedule(tmp_path):
    out = str(tmp_path / "run")
    run_gloo_ranks(_train, 2, out)
    # resume from step 3: drop the final checkpoint and point `latest` back (the documented layout)
    root = os.path.join(out, "checkpoints")
    shutil.rmtree(os.path.join(root, "step_%08d" % STEPS))
    with open(os.path.join(root, "latest"), "w") as f:
        f.write("step_00000003")
    run_gloo_ranks(_train, 2, out, "resume=auto")
    with open(os.path.join(out, "losses.jsonl")) as f:
        lines = {r["step"]: r for r in map(json.loads, f)}
    tb = tensorboard_scalars(out)
    assert sorted(lines) == list(range(1, STEPS + 1))
    for step, r in lines.items():
        assert not r["skipped"] and r["skipped_total"] == 0
        # the total is gamma * lm + lambda * jepa + reg_weight * SIGReg (the default regulariser, weight 0.1)
        assert r["loss"] == 0.5 * r["lm"] + 2.0 * r["jepa"] + 0.1 * r["reg"]
        assert math.isclose(r["lr"], hand_lr(step), rel_tol=1e-12), (step, r["lr"], hand_lr(step))
        # TensorBoard stores float32: the same values to float32 rounding (one step per log interval)
        for tag, key in (("lr", "lr"), ("loss/lm", "lm"), ("loss/jepa", "jepa"), ("loss/total", "loss"),
                         ("grad_norm", "grad_norm")):
            assert math.isclose(tb[tag][step], r[key], rel_tol=1e-6, abs_tol=1e-9), (tag, step, tb[tag][step], r[key])
        # the step's real tokens and model FLOPs (what benchmarks/study_v2.py sums for equal compute): the
        # same counts as the interval's throughput scalars (one step per interval: the elapsed time cancels)
        assert r["tokens"] > 0 and r["flops"] > 6 * r["tokens"] * 64 * 64  # more than the q projection alone
        ratio = tb["throughput/gflops"][step] * 1e9 * 2 / tb["throughput/tokens_per_s"][step]  # per rank x 2 ranks
        assert math.isclose(r["flops"] / r["tokens"], ratio, rel_tol=1e-5), (step, r["flops"] / r["tokens"], ratio)
    assert tb["data/epoch"][STEPS] >= 0 and tb["train/skipped_steps"][STEPS] == 0
    assert os.path.isfile(os.path.join(out, "checkpoints", "step_%08d" % STEPS, "COMPLETE"))
