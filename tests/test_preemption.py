"""Preemption outside Slurm, 2 ranks through the deepspeed launcher: SIGTERM to the launcher's process
group, then, after resume=auto, SIGUSR1 to one rank only. Each time every
rank stops after the same step, one complete checkpoint is saved, the ranks exit with 75, and the
losses up to there equal the uninterrupted run's bit for bit."""
import os
import re
import signal

import psutil
import pytest
from run_helpers import STEPS, deepspeed_cmd, losses, rank_pids, reference_losses, same_losses, start, wait_for_step

from megajepa.training.checkpoint import store as checkpoint
from megajepa.training.guards.preemption import EXIT_REQUEUE


def stopped_ranks(log: str, step: int, signame: str) -> set[str]:
    return set(re.findall(rf"\[(rank\d)\] WARNING stopped after step {step} on {signame}: checkpoint", log))


def assert_checkpoint_at(out: str, step: int) -> None:
    root = checkpoint.checkpoint_dir(out)
    assert checkpoint.latest_tag(out) == checkpoint.tag_for(step)
    assert checkpoint.is_complete(root, checkpoint.tag_for(step))


@pytest.mark.slow
def test_sigterm_then_usr1_on_one_rank_checkpoint_and_resume(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("preempt"))
    want = reference_losses(str(tmp_path_factory.getbasetemp()))
    out = os.path.join(root, "run")

    proc = start(deepspeed_cmd(out, "train.save_interval=100"), os.path.join(root, "sigterm.log"))  # signal-only saves
    wait_for_step(proc, out, 1)
    ranks = [psutil.Process(pid) for pid in rank_pids(proc.pid).values()]
    # The whole process group, as Ctrl-C, `docker stop` or a scheduler would: the `deepspeed` runner dies
    # at once, its launch.py forwards SIGTERM again, the ranks save and exit.
    os.killpg(proc.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(ranks, timeout=180)
    assert not alive
    proc.wait(timeout=60)
    log = open(os.path.join(root, "sigterm.log")).read()
    k1 = max(losses(out))
    assert k1 < STEPS, "the run finished before the signal"
    assert stopped_ranks(log, k1, "SIGTERM") == {"rank0", "rank1"}, log[-3000:]
    assert_checkpoint_at(out, k1)

    proc = start(deepspeed_cmd(out, "resume=auto", "train.save_interval=100"), os.path.join(root, "usr1.log"))
    wait_for_step(proc, out, k1 + 1)
    os.kill(rank_pids(proc.pid)[1], signal.SIGUSR1)  # one rank: the other learns it from the all-reduce
    rc = proc.wait(timeout=180)
    log = open(os.path.join(root, "usr1.log")).read()
    k2 = max(losses(out))
    assert rc == EXIT_REQUEUE, log[-3000:]  # the launcher passes the ranks' exit code on
    assert k1 < k2 < STEPS
    assert stopped_ranks(log, k2, "SIGUSR1") == {"rank0", "rank1"}, log[-3000:]
    assert_checkpoint_at(out, k2)
    same_losses(losses(out), want, range(1, k2 + 1))


def test_stop_signals_record_the_first_signal_and_restore_the_old_handlers():
    from megajepa.training.guards.preemption import StopSignals
    before = signal.getsignal(signal.SIGUSR1)
    stop = StopSignals()
    try:
        assert not stop.agreed()
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)  # a repeat changes nothing; the process is not terminated
        assert stop.agreed() and stop.name == "SIGUSR1"
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGUSR1) is before
