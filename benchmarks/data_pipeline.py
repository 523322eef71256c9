"""Data path figures: preprocessing throughput, and the fraction of a training step spent waiting for data.

    python benchmarks/data_pipeline.py --json runs/bench/data_pipeline.json

1. Preprocessing: a synthetic regex + paraphrase corpus (--records records) through
   tools/preprocess_data.py with 1 and 2 workers; tokens/s counts reading, tokenizing, packing and
   writing shards (the tokenizer is trained once beforehand and not timed).
2. Data wait: `megajepa/train.py` (one process) for --steps steps per preset, reading the shards
   (data.shards) and, for comparison, packing in memory; data/wait_fraction is the host time spent in
   the loader's next_batch over the wall time of each step (TensorBoard scalar, logged every step).
   The first step holds the in-memory path's packing of epoch 0, so it is reported apart too.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRESETS = {  # preset -> run overrides (a short seq_len for 125m keeps CPU steps to seconds)
    "tiny": ["model.preset=tiny", "data.seq_len=512", "train.micro_batch_size=4"],
    "125m": ["model.preset=125m", "data.seq_len=256", "train.micro_batch_size=2"],
}


def write_corpus(out: str, n: int) -> list[str]:
    from megajepa.data.synthetic import generate
    paths = []
    for task, count in (("regex", n * 3 // 4), ("paraphrase", n // 4)):
        path = os.path.join(out, f"{task}.jsonl")
        with open(path, "w") as f:
            for r in generate(task, count, 0):
                f.write(json.dumps({"views": r["views"]}) + "\n")
        paths.append(path)
    return paths


def run(cmd: list[str], timeout: int = 3600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


def preprocess(sources: list[str], tokenizer: str, out: str, workers: int, seq_len: int) -> dict:
    """The tool's summary counts, plus the CPU seconds of the whole process tree (workers included)."""
    spec = "[" + ", ".join(f"{{path: {p}, weight: {w}}}" for p, w in zip(sources, (3, 1))) + "]"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run([sys.executable, "tools/preprocess_data.py", "--out", out, "--workers", str(workers), "--no-progress",
         f"data.tokenizer={tokenizer}", f"data.sources={spec}", f"data.seq_len={seq_len}", "data.train_all=true"])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(os.path.join(out, "manifest.json")) as f:
        counts = json.load(f)["counts"]
    counts["tree_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)  # incl. imports
    return counts


def wait_fraction(overrides: list[str], out: str, steps: int) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    start = time.perf_counter()
    run([sys.executable, "megajepa/train.py", f"output_dir={out}", f"train.max_steps={steps}", "train.log_interval=1",
         f"train.save_interval={steps + 1}", "train.warmup_steps=1", *overrides])
    acc = EventAccumulator(os.path.join(out, "tensorboard"))
    acc.Reload()
    waits = [e.value for e in acc.Scalars("data/wait_fraction")]
    tps = [e.value for e in acc.Scalars("throughput/tokens_per_s")][1:]
    return {"wait_fraction_mean": sum(waits) / len(waits), "wait_fraction_first_step": waits[0],
            "wait_fraction_after_first": sum(waits[1:]) / len(waits[1:]), "wait_fraction_max": max(waits),
            "tokens_per_s": sum(tps) / len(tps), "steps_measured": len(waits), "wall_s": time.perf_counter() - start}


def batch_latency_ms(shards: str, micro_batch: int, n: int = 200) -> float:
    """Mean host time of one ShardRows.batch (memory-map read + tensors): what a faster accelerator's
    step would have to hide."""
    from megajepa.data.shards import ShardRows
    rows = ShardRows(shards, seed=0)
    rows.batch(0, 0, micro_batch)  # the epoch's permutation is computed once per epoch, not per batch
    start = time.perf_counter()
    for i in range(n):
        rows.batch(0, (i * micro_batch) % (rows.total - micro_batch), micro_batch)
    return (time.perf_counter() - start) / n * 1000


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", required=True)
    p.add_argument("--records", type=int, default=40000)
    p.add_argument("--presets", default="tiny,125m")
    p.add_argument("--steps", default="tiny=20,125m=4", help="steps per preset")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--modes", default="shards,memory", help="training runs per preset (empty: batch latency only)")
    args = p.parse_args(argv)
    steps = dict((k, int(v)) for k, v in (s.split("=") for s in args.steps.split(",")))
    from megajepa.data.tokenizer.sentencepiece import train_tokenizer

    results = {"machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}, "preprocess": {}, "wait": {}}
    with tempfile.TemporaryDirectory() as tmp:
        sources = write_corpus(tmp, args.records)
        texts = [v for path in sources for line in open(path) for v in json.loads(line)["views"]]
        tokenizer = train_tokenizer(texts[:200000], os.path.join(tmp, "tok.model"), 4096, seed=0).path
        for workers in map(int, args.workers.split(",")):
            counts = preprocess(sources, tokenizer, os.path.join(tmp, f"pre{workers}"), workers, 512)
            results["preprocess"][workers] = {k: counts[k] for k in ("records_read", "tokens", "rows", "seconds",
                                                                     "tokens_per_s", "fill", "main_process_cpu_s",
                                                                     "tree_cpu_s")}
            print(f"preprocess workers={workers}: {counts['tokens']} tokens in {counts['seconds']:.1f} s = "
                  f"{counts['tokens_per_s']:,.0f} tokens/s; main process {counts['main_process_cpu_s']:.1f} CPU s, "
                  f"whole tree {counts['tree_cpu_s']:.1f} CPU s (imports included)", flush=True)
        for preset in filter(None, args.presets.split(",")):
            base = PRESETS[preset] + [f"data.tokenizer={tokenizer}", "data.train_all=true"]
            seq = next(o for o in base if o.startswith("data.seq_len=")).split("=")[1]
            shards = os.path.join(tmp, f"shards_{seq}")
            if not os.path.isdir(shards):
                preprocess(sources, tokenizer, shards, 2, int(seq))
            micro = int(next(o for o in base if o.startswith("train.micro_batch_size=")).split("=")[1])
            results["wait"][f"{preset}/batch_ms"] = ms = batch_latency_ms(shards, micro)
            print(f"{preset}: one {micro} x {seq} batch from the shards in {ms:.2f} ms", flush=True)
            spec = "[" + ", ".join(f"{{path: {p}, weight: {w}}}" for p, w in zip(sources, (3, 1))) + "]"
            modes = {"shards": [f"data.shards={shards}"], "memory": [f"data.sources={spec}"]}
            for mode, extra in ((m, modes[m]) for m in filter(None, args.modes.split(","))):
                r = wait_fraction(base + extra, os.path.join(tmp, f"run_{preset}_{mode}"), steps[preset])
                results["wait"][f"{preset}/{mode}"] = r
                print(f"{preset} {mode}: wait {r['wait_fraction_mean']:.4%} (first step "
                      f"{r['wait_fraction_first_step']:.4%}, later {r['wait_fraction_after_first']:.4%}) "
                      f"at {r['tokens_per_s']:,.0f} tokens/s over {r['steps_measured']} steps", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
