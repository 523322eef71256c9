"""Launch tiny 2-rank training runs through the real launchers for the resume/preemption/fault tests."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from megajepa.training.logs import step_log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, "megajepa", "train.py")
FAULTS = os.path.join(REPO, "tests", "probes", "train_with_faults.py")
# Smaller than test_train_e2e's TINY: these tests compare runs, they do not need the model to learn.
TINY = ["data.num_train=300", "data.vocab_size=384", "data.seq_len=128", "train.micro_batch_size=2", "model.dim=64",
        "model.n_layers=1", "model.ffn_dim=128", "train.warmup_steps=2", "train.log_interval=100"]
STEPS = 16  # long enough that a signal or kill sent after step 1-3 lands mid-run even on a fast machine
# grad_accum=2: resume, skips and stops are also exercised across an accumulation boundary
RUN = TINY + [f"train.max_steps={STEPS}", "train.save_interval=2", "train.keep_last=2", "train.grad_accum=2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                           "MASTER_PORT")}
    e.update(PYTHONPATH=REPO, OMP_NUM_THREADS="1", **extra)
    return e


def deepspeed_cmd(output_dir, *args, script=TRAIN) -> list[str]:
    return [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", "2", "--master_port",
            str(free_port()), script, f"output_dir={output_dir}", *RUN, *args]


def start(cmd, log_path, **extra_env) -> subprocess.Popen:
    """In its own session, so a test can signal the launcher alone or kill the whole tree."""
    log = open(log_path, "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env(**extra_env), cwd=REPO,
                            start_new_session=True)


def run(cmd, log_path, timeout=600, **extra_env) -> tuple[int, str]:
    proc = start(cmd, log_path, **extra_env)
    rc = proc.wait(timeout=timeout)
    return rc, open(log_path).read()


def losses(output_dir) -> dict[int, dict]:
    path = os.path.join(output_dir, "losses.jsonl")
    return step_log.read(path) if os.path.exists(path) else {}


def wait_for_step(proc, output_dir, step, timeout=300) -> int:
    """Block until losses.jsonl holds `step` (returns the newest step seen); fails if the run ends first."""
    end = time.monotonic() + timeout
    while True:
        seen = losses(output_dir)
        if seen and max(seen) >= step:
            return max(seen)
        ended = proc.poll()
        assert ended is None, f"run ended ({ended}) before step {step}"
        assert time.monotonic() < end, f"no step {step} after {timeout}s"
        time.sleep(0.05)


def rank_pids(launcher_pid: int) -> dict[int, int]:
    """local rank -> pid of the deepspeed launcher's worker processes."""
    import psutil
    out = {}
    for child in psutil.Process(launcher_pid).children(recursive=True):
        for arg in child.cmdline():
            if arg.startswith("--local_rank="):
                out[int(arg.split("=")[1])] = child.pid
    return out


def same_losses(got: dict[int, dict], want: dict[int, dict], steps) -> None:
    """Bitwise: every logged float of every step equal."""
    for s in steps:
        for key in ("loss", "lm", "jepa", "grad_norm", "lr"):
            assert got[s][key] == want[s][key], (s, key, got[s][key], want[s][key])


REFERENCE = {}


def reference_losses(tmp_root) -> dict[int, dict]:
    """The uninterrupted run, once per session (shared by the resume and preemption tests)."""
    if not REFERENCE:
        out = os.path.join(tmp_root, "reference")
        rc, log = run(deepspeed_cmd(out), os.path.join(tmp_root, "reference.log"))
        assert rc == 0, log[-3000:]
        REFERENCE.update(losses(out))
        assert sorted(REFERENCE) == list(range(1, STEPS + 1)), REFERENCE
    return REFERENCE
