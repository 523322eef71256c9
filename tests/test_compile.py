"""train.compile: compiled decoder blocks and the compiled JEPA gather + distance give the eager loss and
gradients in float32, a new batch of the same bucket runs without recompiling, and a real ZeRO-3 run
with train.compile=true logs the eager run's losses.
(~2-3 min on 2 idle cores, most of it CPU inductor compiles; ~50 s of CPU time in all)"""
import copy

import pytest
import torch
import torch._dynamo
from helpers import random_packed_batch, tiny_model

from megajepa.config import JepaConfig
from megajepa.objective.hybrid import HybridObjective
from megajepa.training.compiling import compile_layers


def loss_and_grads(objective, batch):
    objective.zero_grad()
    labels = (batch["labels"] != -100).sum().float()
    loss, stats = objective(batch, labels, batch["pair_mask"].sum())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in objective.named_parameters()}
    return loss.detach(), stats, grads


@pytest.mark.slow
@pytest.mark.parametrize("distance,regularizer", [("cosine", "none"), ("infonce", "none"), ("cosine", "sigreg")])
def test_compiled_objective_equals_eager(distance, regularizer):
    jepa = JepaConfig.paper(distance=distance, lam=2.0, regularizer=regularizer, reg_weight=0.5)
    eager = HybridObjective(tiny_model(seed=5).train(), jepa)
    compiled = HybridObjective(copy.deepcopy(eager.model), jepa, compile_losses=True)
    compile_layers(compiled.model.layers)
    batch = random_packed_batch(7, seq_len=64, n=8, predictors=2)
    assert batch["pair_mask"].sum() > 0
    loss, stats, grads = loss_and_grads(eager, batch)
    c_loss, c_stats, c_grads = loss_and_grads(compiled, batch)
    torch.testing.assert_close(c_loss, loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c_stats["jepa_sum"], stats["jepa_sum"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c_stats["pred"], stats["pred"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c_stats["reg"], stats["reg"], rtol=1e-5, atol=1e-6)
    assert (stats["reg"] > 0) == (regularizer == "sigreg")
    for name, g in grads.items():
        torch.testing.assert_close(c_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)

    # Same row length and pair bucket, different rows and pair count: no recompilation.
    other = next(b for b in (random_packed_batch(8, seq_len=64, n=n, predictors=2) for n in range(4, 16))
                 if b["seg"].shape == batch["seg"].shape and b["pred_idx"].shape == batch["pred_idx"].shape)
    assert other["pair_mask"].sum() != batch["pair_mask"].sum() or not torch.equal(other["seg"], batch["seg"])
    with torch._dynamo.config.patch(error_on_recompile=True):
        loss_and_grads(compiled, other)


@pytest.mark.slow
def test_train_compile_under_zero3_matches_eager(tmp_path):
    """train.compile through the real trainer and DeepSpeed ZeRO-3 engine (one process): the per-step
    losses equal the eager run's. (~60-120 s: CPU inductor compile inside the run)"""
    import subprocess
    import sys

    from run_helpers import TINY, TRAIN, env

    from megajepa.training.logs import step_log

    losses = {}
    for flag in ("false", "true"):
        out = tmp_path / flag
        cmd = [sys.executable, TRAIN, f"output_dir={out}", *TINY, "train.max_steps=3", "train.save_interval=100",
               f"train.compile={flag}"]
        result = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        losses[flag] = step_log.read(str(out / "losses.jsonl"))
    assert sorted(losses["true"]) == sorted(losses["false"]) == [1, 2, 3]
    for step, record in losses["false"].items():
        for term in ("lm", "jepa"):
            assert losses["true"][step][term] == pytest.approx(record[term], rel=1e-4, abs=1e-5), (step, term)
