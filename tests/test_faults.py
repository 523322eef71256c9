"""Faults: a rank killed while writing a checkpoint, non-finite losses on one rank, a rank that dies.

Unit tests (no launch) for the checkpoint bookkeeping and the non-finite guard; then real 2-rank runs
through the deepspeed launcher with faults injected by tests/probes/train_with_faults.py, and two bare
ranks (env launcher, no supervisor that would kill the survivor for us) for the dead-rank bound.
"""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from run_helpers import FAULTS, RUN, TRAIN, deepspeed_cmd, env, free_port, losses, start, wait_for_step

from megajepa.training.checkpoint import store as checkpoint
from megajepa.training.guards.nonfinite import EXIT_NONFINITE, NonFiniteError, NonFiniteGuard, poison


# ------------------------------------------------------------------ unit: bookkeeping
def fake_tag(root, step, complete=True):
    tag = os.path.join(root, checkpoint.tag_for(step))
    os.makedirs(tag)
    open(os.path.join(tag, "weights.pt"), "w").close()
    if complete:
        open(os.path.join(tag, checkpoint.COMPLETE), "w").close()


def test_latest_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    root = checkpoint.checkpoint_dir(str(tmp_path))
    fake_tag(root, 2)
    fake_tag(root, 4)
    fake_tag(root, 6, complete=False)  # a write that was killed
    with open(os.path.join(root, "latest"), "w") as f:
        f.write(checkpoint.tag_for(6))  # as DeepSpeed's own `latest` could have said
    assert checkpoint.latest_tag(str(tmp_path)) == checkpoint.tag_for(4)
    with pytest.raises(FileNotFoundError, match="incomplete"):
        checkpoint.load(None, root, checkpoint.tag_for(6), 0)


def test_prune_keeps_the_newest_complete_and_drops_older_partials(tmp_path):
    root = str(tmp_path)
    for step in (1, 2, 3, 5):
        fake_tag(root, step)
    fake_tag(root, 4, complete=False)  # older than the newest complete one: garbage
    fake_tag(root, 6, complete=False)  # newer: could be a write in progress, kept
    deleted = checkpoint.prune(root, keep_last=2)
    assert sorted(deleted) == [checkpoint.tag_for(s) for s in (1, 2, 4)]
    assert sorted(os.listdir(root)) == [checkpoint.tag_for(s) for s in (3, 5, 6)]


def test_guard_counts_skips_and_stops_on_the_nth_in_a_row():
    guard = NonFiniteGuard(max_in_a_row=2)
    good, bad = {"lm": 1.0, "jepa": 0.5}, {"lm": math.nan, "jepa": 0.5}
    assert guard.update(True, bad) and not guard.update(True, good)  # a good step resets the run
    assert guard.update(False, good)  # the engine skipped it: a non-finite gradient
    guard.check(3, good, "ckpt/step_2")
    assert guard.update(True, bad) and guard.total == 3
    with pytest.raises(NonFiniteError, match=r"step 4: .* 2 steps in a row .*lm=nan .*last good checkpoint: ckpt/step_2"):
        guard.check(4, bad, "ckpt/step_2")


def test_poison_keeps_finite_losses_and_makes_nan_gradients_otherwise():
    w = torch.ones(3, requires_grad=True)
    finite = poison((w * 2).sum())
    finite.backward()
    assert finite.item() == 6 and torch.equal(w.grad, torch.full((3,), 2.0))
    w.grad = None
    overflow = poison((w * 2).sum() + torch.tensor(math.inf))  # inf loss whose own gradient is finite
    overflow.backward()
    assert torch.isnan(w.grad).all()


# ------------------------------------------------------------------ real runs
def optimizer_state(tag_dir, rank):
    path = os.path.join(tag_dir, f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    state = torch.load(path, weights_only=False)["optimizer_state_dict"]
    return {"fp32 weights": state["fp32_flat_groups"], "adam": state["optimizer_state_dict"]}


def assert_equal_tree(a, b, where=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_equal_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_tree(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.slow
def test_kill_during_checkpoint_write_then_nonfinite_steps(tmp_path):
    out = str(tmp_path / "run")
    root = checkpoint.checkpoint_dir(out)
    step2, step4, step6 = (checkpoint.tag_for(s) for s in (2, 4, 6))
    # 1. rank 0 SIGKILLs itself inside DeepSpeed's write of the step-4 checkpoint
    proc = start(deepspeed_cmd(out, script=FAULTS), tmp_path / "killed.log", MEGAJEPA_FAULT_KILL_IN_SAVE="0:4")
    rc = proc.wait(timeout=600)
    log = (tmp_path / "killed.log").read_text()
    assert rc != 0 and "FAULT: rank 0 killing itself while writing step_00000004" in log, log[-3000:]
    assert os.listdir(os.path.join(root, step4)) and not checkpoint.is_complete(root, step4)  # partial
    assert open(os.path.join(root, "latest")).read() == step2  # never pointed at the partial one
    assert checkpoint.latest_tag(out) == step2

    # 2. resume=auto from step 2; rank 1 alone gets a NaN loss at step 3, NaN gradients (finite loss) at 5
    # and 6, a NaN loss at 7: 3 in a row = stop
    proc = start(deepspeed_cmd(out, "resume=auto", "train.max_nonfinite_steps=3", script=FAULTS),
                 tmp_path / "nan.log", MEGAJEPA_FAULT_NAN_LOSS="1:3,7", MEGAJEPA_FAULT_NAN_GRAD="1:5,6")
    rc = proc.wait(timeout=600)
    log = (tmp_path / "nan.log").read_text()
    assert rc == EXIT_NONFINITE, log[-3000:]
    assert f"resumed from {os.path.join(root, step2)} at step 2" in log, log[-3000:]
    assert ("step 7: non-finite loss or gradient for 3 steps in a row (train.max_nonfinite_steps=3), 4 skipped in "
            "all; loss terms: loss=nan lm=nan") in log, log[-3000:]
    assert f"last good checkpoint: {os.path.join(root, step6)}" in log
    got = losses(out)
    assert [s for s in range(3, 8) if got[s]["skipped"]] == [3, 5, 6, 7]
    assert got[7]["skipped_total"] == 4 and math.isnan(got[3]["loss"]) and math.isfinite(got[4]["loss"])
    assert math.isfinite(got[5]["loss"]) and math.isinf(got[5]["grad_norm"])  # caught on the gradient alone
    assert got[3]["lr"] == got[2]["lr"] and got[4]["lr"] != got[3]["lr"]  # a skipped step leaves the schedule
    # Steps 5 and 6 were skipped on both ranks (rank 0's own loss was finite): the step-6 checkpoint holds
    # exactly the weights and optimizer state of step 4. Step 4's re-save replaced the partial directory.
    assert checkpoint.is_complete(root, step4) and checkpoint.is_complete(root, step6)
    for rank in (0, 1):
        assert_equal_tree(optimizer_state(os.path.join(root, step4), rank),
                          optimizer_state(os.path.join(root, step6), rank), f"rank{rank}")
    assert json.load(open(os.path.join(root, step6, checkpoint.COMPLETE)))["step"] == 6


@pytest.mark.slow
@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP], ids=["dead", "hung"])
def test_dead_or_hung_rank_makes_the_survivor_exit_within_the_timeout(tmp_path, fault):
    """SIGKILL: gloo sees the closed socket at once. SIGSTOP (a hung rank, sockets still open): only the
    process-group timeout (train.dist_timeout_minutes) ends the survivor's wait."""
    timeout_min, slack_s = 0.25, 30
    out = str(tmp_path / "run")
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        procs.append(subprocess.Popen(
            [sys.executable, TRAIN, f"output_dir={out}", *RUN, f"train.dist_timeout_minutes={timeout_min}",
             "train.max_steps=1000"],
            env=env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
            stdout=open(tmp_path / f"rank{rank}.log", "w"), stderr=subprocess.STDOUT, cwd=os.path.dirname(TRAIN)))
    try:
        wait_for_step(procs[0], out, 2)
        procs[1].send_signal(fault)
        faulted = time.monotonic()
        rc = procs[0].wait(timeout=timeout_min * 60 + slack_s)
        took = time.monotonic() - faulted
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    log = (tmp_path / "rank0.log").read_text()
    assert rc == 1 and "megajepa: error: rank 0: a collective failed: another rank died, or hung longer than " \
                       f"train.dist_timeout_minutes={timeout_min:g}" in log, log[-3000:]
    print(f"{fault.name}: survivor exited {took:.1f}s after the fault (rc={rc}, timeout {timeout_min * 60:.0f}s)")
    assert took < timeout_min * 60 + slack_s
