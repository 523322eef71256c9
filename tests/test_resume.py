"""Exact resume: a 2-rank run SIGKILLed mid-training and resumed with resume=auto logs the same per-step
losses, bit for bit, as the uninterrupted run (CPU, gloo, fp32 ZeRO-3)."""
import os
import signal

import pytest
from run_helpers import STEPS, deepspeed_cmd, losses, reference_losses, run, same_losses, start, wait_for_step


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_every_loss_bitwise(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("resume"))
    want = reference_losses(str(tmp_path_factory.getbasetemp()))
    out = os.path.join(root, "run")
    proc = start(deepspeed_cmd(out), os.path.join(root, "killed.log"))
    wait_for_step(proc, out, 3)  # past the step-2 checkpoint
    os.killpg(proc.pid, signal.SIGKILL)  # launcher and both ranks at once, as a node failure would
    proc.wait()
    before = losses(out)
    assert max(before) < STEPS, "the run finished before it was killed"
    with open(os.path.join(out, "checkpoints", "latest")) as f:
        resumed_at = int(f.read().strip().split("_")[1])
    assert 2 <= resumed_at < max(before)

    rc, log = run(deepspeed_cmd(out, "resume=auto"), os.path.join(root, "resumed.log"))
    assert rc == 0, log[-3000:]
    assert f"resumed from {os.path.join(out, 'checkpoints', f'step_{resumed_at:08d}')}" in log, log[-3000:]
    got = losses(out)  # the last line per step: steps after the checkpoint are the resumed run's
    assert sorted(got) == list(range(1, STEPS + 1))
    same_losses(got, want, range(1, STEPS + 1))
    same_losses(before, want, before)  # the killed run agreed too, up to where it got
