"""Seconds from process start to the first optimizer step: the tiny preset (default config), one process,
run directly and under the `deepspeed` launcher; and the floor any torch trainer pays before its first step.

    python benchmarks/startup.py --json runs/bench/startup.json

Time: from just before the process is spawned until rank 0's losses.jsonl gets its first line (written
right after the first engine.step()); the run is stopped there. For the direct run also its CPU seconds
(user + sys until it is stopped): steadier than the wall time on a busy machine. Warm machine: one
unmeasured run first (page cache, any op DeepSpeed built, and the machine cache: the synthetic corpus and
its tokenizer, which every later run in a fresh output_dir copies, as a user's next run in a new directory
does; MEGAJEPA_CACHE=off measures a machine without it); median of --repeats.

Mode `floor`: a process that only imports torch and builds torch's AdamW over one tensor, timed to its
exit. Every torch optimizer's constructor imports torch._dynamo (`torch._disable_dynamo` on
`add_param_group`), so no trainer on torch's optimizers reaches its first step sooner on this machine.
Modes are interleaved per repeat, so a drifting machine shifts them alike.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, "megajepa", "train.py")


FLOOR = "import torch; torch.optim.AdamW([torch.zeros(1, requires_grad=True)])"


def floor_seconds() -> tuple[float, float]:
    """(wall, CPU) seconds of a process that imports torch and builds torch's AdamW."""
    cpu_before, start = cpu_of_reaped_children(), time.perf_counter()
    subprocess.run([sys.executable, "-c", FLOOR], check=True)
    return time.perf_counter() - start, cpu_of_reaped_children() - cpu_before


def command(mode: str, out_dir: str) -> list[str]:
    args = [TRAIN, f"output_dir={out_dir}", "train.max_steps=2", "train.warmup_steps=1"]
    if mode == "python":
        return [sys.executable, *args]
    return [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", "1", *args]


def cpu_of_reaped_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_to_first_step(mode: str, timeout: float = 300.0) -> tuple[float, float]:
    """(wall seconds to the first step, CPU seconds of the reaped process: the launcher's alone in
    deepspeed mode, its killed children are not reaped by it)."""
    with tempfile.TemporaryDirectory() as out_dir:
        losses = os.path.join(out_dir, "losses.jsonl")
        env = dict(os.environ, PYTHONPATH=REPO)
        cpu_before, start = cpu_of_reaped_children(), time.perf_counter()
        proc = subprocess.Popen(command(mode, out_dir), env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            while not (os.path.exists(losses) and os.path.getsize(losses) > 0):
                if proc.poll() is not None:
                    raise RuntimeError(f"{mode} run exited with {proc.returncode} before its first step: "
                                       f"{proc.stderr.read()[-2000:]}")
                if time.perf_counter() - start > timeout:
                    raise RuntimeError(f"{mode} run took over {timeout:.0f} s to its first step")
                time.sleep(0.01)
            wall = time.perf_counter() - start
        finally:
            os.killpg(proc.pid, 9)  # the launcher's children go with it
            proc.wait()
        return wall, cpu_of_reaped_children() - cpu_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["python", "deepspeed", "floor"],
                        choices=["python", "deepspeed", "floor"])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    measure = {mode: floor_seconds if mode == "floor" else functools.partial(time_to_first_step, mode)
               for mode in args.modes}
    for mode in args.modes:
        measure[mode]()  # warm-up
    samples = {mode: [] for mode in args.modes}
    for _ in range(args.repeats):
        for mode in args.modes:
            samples[mode].append(measure[mode]())
    result = {}
    for mode in args.modes:
        runs, cpus = zip(*samples[mode])
        result[mode] = {"first_step_s": statistics.median(runs), "runs_s": list(runs)}
        if mode != "deepspeed":  # the launcher's killed children are not reaped by it
            result[mode].update(cpu_s=statistics.median(cpus), runs_cpu_s=list(cpus))
        what = "to exit (import torch, build AdamW)" if mode == "floor" else "to the first optimizer step"
        print(f"{mode}: {result[mode]['first_step_s']:.2f} s {what} ({runs})"
              + (f", CPU {result[mode]['cpu_s']:.2f} s" if "cpu_s" in result[mode] else ""), flush=True)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
