"""The machinery of a resumable, splittable study (benchmarks/study_v2.py): one training process per run
directory through megajepa/train.py with resume=auto, a lock file per run so several processes share the
work, the code version each run trained with, and the step and FLOP counts a budget is sized from."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Callable, Hashable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK = "study.lock"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def seeds(text: str) -> list[int]:
    """'1-5' or '1,2,3'."""
    if "-" in text:
        first, last = map(int, text.split("-"))
        return list(range(first, last + 1))
    return [int(s) for s in text.split(",") if s]


def write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # two processes preparing the same file: the last identical copy wins


def code_version() -> dict:
    def git(*a):
        return subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def claim(run_dir: str) -> bool:
    """Take the run's lock (a lock whose process is gone on this host is taken over)."""
    os.makedirs(run_dir, exist_ok=True)
    lock = os.path.join(run_dir, LOCK)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            with open(lock) as f:
                host, _, pid = f.read().partition(" ")
            if host != socket.gethostname() or _alive(int(pid or 0)):
                return False
            os.remove(lock)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()}")
        return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def steps_for_epochs(config: str, overrides: list[str], epochs: int) -> int:
    """Optimizer steps for `epochs` epochs of the run's own packing: the loader drops each epoch's tail a
    whole optimizer step at a time (megajepa/data/loader.py), one process."""
    from megajepa.config import load_config
    from megajepa.interop.hf_files import HFCheckpoint
    from megajepa.training.build import build_data
    cfg = load_config(config, overrides)
    hf = HFCheckpoint(cfg.model.init_from_hf) if cfg.model.init_from_hf else None
    _, rows = build_data(cfg, hf, 0)
    per_step = cfg.train.micro_batch_size * cfg.train.grad_accum
    return sum(rows.num_rows(epoch) // per_step for epoch in range(epochs))


def trained_flops(run_dir: str) -> tuple[int, float]:
    """(steps, model FLOPs) of a finished run, from its losses.jsonl (the last line of a redone step wins)."""
    from megajepa.training.logs import step_log
    steps = step_log.read(os.path.join(run_dir, "losses.jsonl"))
    return len(steps), sum(r["flops"] for r in steps.values())


def train(run_dir: str, config: str, overrides: list[str], steps: int, threads: int, meta: dict) -> float:
    """Train (or resume) `run_dir` to `steps` with `config` + `overrides`; writes study_run.json (the
    command, `meta`, the code version) first; the wall seconds of this attempt."""
    os.makedirs(run_dir, exist_ok=True)
    cmd = [sys.executable, os.path.join(REPO, "megajepa", "train.py"), "--config", config,
           f"output_dir={run_dir}", *overrides, f"train.max_steps={steps}", "resume=auto"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(os.path.join(run_dir, "study_run.json"), "w") as f:
        json.dump({"command": cmd, "config": os.path.relpath(config, REPO), "steps": steps, **meta,
                   "code": code_version()}, f, indent=2)
    t0 = time.time()
    with open(os.path.join(run_dir, "train.log"), "a") as logf:
        proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if proc.returncode:
        raise RuntimeError(f"training {run_dir} failed (exit {proc.returncode}); see {run_dir}/train.log")
    return time.time() - t0


def run_all(runs: list, run_dir: Callable[[Hashable], str], deps: Callable[[Hashable], list],
            do_run: Callable[[Hashable], None], wait: float) -> list[str]:
    """Every run done here or by another process (a run is done when its directory holds result.json);
    the failures' messages. A run waits for its `deps`; one held by another process is left to it."""
    def done(run) -> bool:
        return os.path.isfile(os.path.join(run_dir(run), "result.json"))

    pending, failed = list(runs), {}
    while pending:
        progress = False
        for run in list(pending):
            if done(run) or run in failed:
                pending.remove(run)
                continue
            if any(not done(d) for d in deps(run)):
                if any(d in failed for d in deps(run)):
                    failed[run] = f"{run_dir(run)}: a run it depends on failed"
                    pending.remove(run)
                continue
            if not claim(run_dir(run)):
                continue
            try:
                t0 = time.time()
                do_run(run)
                log(f"{run_dir(run)}: done in {time.time() - t0:.0f}s")
            except RuntimeError as e:
                failed[run] = str(e)
            finally:
                os.remove(os.path.join(run_dir(run), LOCK))
            pending.remove(run)
            progress = True
        if pending and not progress:
            time.sleep(wait)  # the rest are held by other processes or wait for runs they hold
    return list(failed.values())
