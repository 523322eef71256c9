"""Tokens/s and peak memory of a full training step: megajepa vs transformers' LlamaForCausalLM.

    python benchmarks/throughput.py --json runs/bench/throughput.json --presets tiny,3.65m,125m --dtype fp32,bf16

Per preset, both models get the same config, the same weights and the same packed batch (rows of
two-view examples with predictor blocks and isolated copies, dense block-sparse bool mask, packed
position ids). One step = forward, backward, torch's fused AdamW step, zero_grad.
  ours: HybridObjective (fused linear cross-entropy NTP + JEPA term), its CPU attention (BlockDiagonal);
  ours_compiled: the same with train.compile (compiled decoder blocks and JEPA loss; --no-compile skips).
  hf:   LlamaForCausalLM, attn_implementation="sdpa", the same 4D mask, its standard loss (labels).
Presets: the model presets at --vocab, and 3.65m: the NL-RX comparison model (tiny with 4 KV heads, its
1900-token vocabulary: 3.65M parameters). --dtype bf16: forward and loss under torch.autocast(bf16) for
both variants (what the transformers Trainer does for bf16 on CPU); keys get a `_bf16` suffix.
Time: steps alternate ours/hf in one process; tokens/s = real tokens per step / median step time
(`*_best`: / fastest step, the one least disturbed by other load on a shared machine).
Peak memory: each variant alone in a fresh subprocess, after one warm-up step: the peak of a step above
the steady state (weights and AdamW state), i.e. activations, gradients and loss temporaries. CPU:
VmHWM (reset through /proc/self/clear_refs) minus VmRSS, glibc told to mmap blocks >= 64 KiB so
freed memory leaves the RSS; CUDA: max_memory_allocated minus memory_allocated.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import torch

from megajepa.config import JepaConfig, ModelConfig
from megajepa.data.collate import collate
from megajepa.data.packing import IGNORE, LayoutConfig, Specials, build_unit, place
from megajepa.interop.adapter import to_hf_config, to_hf_state_dict
from megajepa.model.architecture import ModelArchitecture
from megajepa.model.attention import dense_mask
from megajepa.model.transformer import Transformer, resolve_model_config
from megajepa.objective.hybrid import HybridObjective

SPECIALS = Specials(bos=2, eos=3, sep=4, pad=0, predictors=list(range(5, 15)))
VARIANTS = ("ours", "ours_compiled", "hf")
SHAPES = {"3.65m": {"preset": "tiny", "n_kv_heads": 4, "vocab_size": 1900}}  # benchmark-only shapes


def packed_batch(vocab: int, rows: int, seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """`rows` full rows of random two-view examples (views of 8..96 tokens), default JEPA layout."""
    rng = np.random.default_rng(seed)
    units = []
    while sum(u.n_tokens for u in units) < rows * seq_len * 1.2:
        views = [[int(t) for t in rng.integers(16, vocab, size=int(rng.integers(8, 97)))] for _ in range(2)]
        units.append(build_unit(views, SPECIALS, LayoutConfig(predictors=1)))
    packed = sorted(place(units, seq_len, SPECIALS), key=lambda r: -r.n_real)[:rows]
    return collate(packed)


def hf_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF shifts labels itself: position t+1 carries the target our row stores at t."""
    labels = torch.full_like(batch["labels"], IGNORE)
    labels[:, 1:] = batch["labels"][:, :-1]
    return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "labels": labels,
            "attention_mask": dense_mask(batch["seg"], batch["ctx_seg"], batch["ctx_end"])}


def build(variant: str, cfg: ModelArchitecture, weights: dict | None = None, dtype: str = "fp32"):
    """(module, step function) for one variant; `weights` (ours' state dict) makes HF identical."""
    import transformers
    torch.manual_seed(0)
    if variant.startswith("ours"):
        model = HybridObjective(Transformer(cfg), JepaConfig.paper(), compile_losses=variant == "ours_compiled")
        if weights is not None:
            model.model.load_state_dict(weights)
        if variant == "ours_compiled":
            from megajepa.training.compiling import compile_layers
            compile_layers(model.model.layers)
    else:
        model = transformers.AutoModelForCausalLM.from_config(to_hf_config(cfg), attn_implementation="sdpa")
        if weights is not None:
            result = model.load_state_dict(to_hf_state_dict(weights, cfg.tie_embeddings), strict=False)
            assert not result.unexpected_keys and set(result.missing_keys) <= {"lm_head.weight"}, result
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)  # one kernel, both variants

    def step(batch, inputs):
        with torch.autocast(batch["input_ids"].device.type, torch.bfloat16, enabled=dtype == "bf16"):
            if variant != "hf":
                loss, _ = model(batch, (batch["labels"] != IGNORE).sum().clamp_min(1),
                                batch["pair_mask"].sum().clamp_min(1))
            else:
                loss = model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()
    return model, step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def memory_worker(variant: str, cfg: ModelArchitecture, args, out: str) -> None:
    device = torch.device(args.device)
    batch = {k: v.to(device) for k, v in packed_batch(cfg.vocab_size, args.rows, args.seq_len).items()}
    inputs = hf_inputs(batch)
    model, step = build(variant, cfg, dtype=args.dtype)
    model.to(device)
    step(batch, inputs)  # lazy init, AdamW state and any compile happen outside the measured window
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _status_mb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    step(batch, inputs)
    _sync(device)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _status_mb("VmHWM")) - base
    with open(out, "w") as f:
        json.dump({"peak_mb": peak}, f)


def peak_memory(variant: str, preset: str, args, tmp: str, dtype: str) -> float:
    out = os.path.join(tmp, f"{variant}_{preset}_{dtype}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant, "--presets", preset, "--json", out,
           "--rows", str(args.rows), "--seq-len", str(args.seq_len), "--vocab", str(args.vocab),
           "--device", args.device, "--dtype", dtype]
    # Large blocks via mmap, so freed tensors leave the RSS and VmHWM tracks live memory.
    subprocess.run(cmd, check=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    with open(out) as f:
        return json.load(f)["peak_mb"]


def timed(variant_step, batch, inputs, device) -> tuple[float, float]:
    _sync(device)
    t0 = time.perf_counter()
    loss = variant_step(batch, inputs)
    _sync(device)
    return time.perf_counter() - t0, float(loss)


def bench_preset(preset: str, cfg: ModelArchitecture, args, tmp: str, dtype: str) -> dict:
    device = torch.device(args.device)
    batch = {k: v.to(device) for k, v in packed_batch(cfg.vocab_size, args.rows, args.seq_len).items()}
    inputs = hf_inputs(batch)
    tokens = int((batch["seg"] >= 0).sum())
    variants = [v for v in VARIANTS if args.compile or v != "ours_compiled"]
    weights = Transformer(cfg).state_dict()  # one set of weights for every variant
    steps = {v: build(v, cfg, weights, dtype) for v in variants}
    for model, _ in steps.values():
        model.to(device)
    times = {v: [] for v in variants}
    out = {"tokens_per_step": tokens, "rows": args.rows, "seq_len": args.seq_len, "vocab": cfg.vocab_size}
    for i in range(args.warmup + args.steps):  # alternate, so machine load hits every variant alike
        for v in variants:
            seconds, loss = timed(steps[v][1], batch, inputs, device)
            if i == 0:
                out[f"first_loss_{v}"] = loss  # ours: NTP + JEPA; hf: NTP only
            if i >= args.warmup:
                times[v].append(seconds)
    del steps
    tps = {v: tokens / statistics.median(times[v]) for v in variants}
    for v in variants:
        out[f"tokens_per_s_{v}"] = round(tps[v], 1)
        out[f"tokens_per_s_best_{v}"] = round(tokens / min(times[v]), 1)  # least disturbed by other load
        if args.memory:
            out[f"peak_mem_{v}"] = round(peak_memory(v, preset, args, tmp, dtype), 1)
        out[f"step_s_{v}"] = [round(t, 3) for t in times[v]]
    out["load_avg_1min"] = os.getloadavg()[0]  # a loaded machine widens the step-time spread
    out["speedup"] = round(tps["ours"] / tps["hf"], 3)
    out["speedup_best"] = round(min(times["hf"]) / min(times["ours"]), 3)
    if args.compile:
        out["speedup_compiled"] = round(tps["ours_compiled"] / tps["hf"], 3)
        out["speedup_compiled_best"] = round(min(times["hf"]) / min(times["ours_compiled"]), 3)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--presets", default="tiny,125m")
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip ours_compiled")
    ap.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory subprocesses")
    ap.add_argument("--dtype", default="fp32", help="comma-separated: fp32, bf16 (autocast)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    configs = {p: resolve_model_config(ModelConfig(**SHAPES.get(p, {"preset": p, "vocab_size": args.vocab})))
               for p in args.presets.split(",")}
    if args.worker:
        return memory_worker(args.worker, configs[args.presets], args, args.json)

    results = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "compile": args.compile, "load_avg": os.getloadavg()[0], "presets": {}}
    if args.device == "cpu":  # bf16 rows mean little where oneDNN has no bf16 path (docs/speed.md)
        from megajepa.training.engine import cpu_bf16_native
        results["cpu_bf16_onednn"] = cpu_bf16_native()
    with tempfile.TemporaryDirectory() as tmp:
        for preset, cfg in configs.items():
            results["presets"][preset] = {"params": sum(p.numel() for p in Transformer(cfg).parameters())}
            for dtype in args.dtype.split(","):
                suffix = "" if dtype == "fp32" else f"_{dtype}"
                r = bench_preset(preset, cfg, args, tmp, dtype)
                results["presets"][preset].update({k + suffix: v for k, v in r.items()})
                write_json(args.json, results)  # after every preset: a long run keeps what it measured
                mem = {v: f"{r[f'peak_mem_{v}']:.0f}" if f"peak_mem_{v}" in r else "-" for v in VARIANTS}
                compiled = (f"{r['tokens_per_s_ours_compiled']:.0f} | {r['speedup_compiled']:.2f} | "
                            f"{mem['ours_compiled']}" if args.compile else "- | - | -")
                print(f"| {preset} {dtype} | {r['tokens_per_s_ours']:.0f} | {r['tokens_per_s_hf']:.0f} | "
                      f"{r['speedup']:.2f} | {compiled} | {mem['ours']} | {mem['hf']} |", flush=True)


def write_json(path: str, results: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
