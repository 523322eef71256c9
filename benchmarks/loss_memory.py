"""Peak memory and time of the NTP loss (forward+backward): fused vs materialised logits.

    python benchmarks/loss_memory.py --json runs/bench/loss_memory.json

fused:        F.linear_cross_entropy(h, W, y, options=megajepa.objective.losses.chunk_options(h, V)): the training
              path's chunks (torch's heuristic on GPUs, a 128 MB logits budget on CPU);
              --batch-chunk-size N forces N-token chunks, 0 torch's own heuristic
materialised: F.cross_entropy(h @ W.T, y)                                           ([N, V] logits)

Each variant runs in a fresh subprocess, so one run's allocator state cannot hide the other's
peak. CPU: peak = ru_maxrss after backward minus ru_maxrss once the inputs exist (the growth of
the process high-water mark, which counts every allocator, torch's included). CUDA:
torch.cuda.max_memory_allocated minus the allocation after the inputs. Both include the grads
dh and dW (same size in both variants). The loss and grads of the two are compared.
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

import torch
import torch.nn.functional as F

from megajepa.objective.losses import chunk_options

VARIANTS = ("fused", "materialised")


def fused_options(h, vocab: int, batch_chunk_size: int | None) -> torch.nn.LinearCrossEntropyOptions:
    """The training path's chunking unless a chunk size (tokens per chunk; 0: torch's heuristic) is forced."""
    if batch_chunk_size is None:
        return chunk_options(h, vocab)
    if batch_chunk_size == 0:
        return torch.nn.LinearCrossEntropyOptions()
    return torch.nn.LinearCrossEntropyOptions(chunking_method=None, batch_chunk_size=batch_chunk_size)


def ntp_loss(variant: str, h, w, y, batch_chunk_size: int | None = None) -> torch.Tensor:
    if variant == "fused":
        return F.linear_cross_entropy(h, w, y, options=fused_options(h, w.shape[0], batch_chunk_size))
    return F.cross_entropy(h @ w.T, y)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker(variant: str, tokens: int, dim: int, vocab: int, device: str, out: str,
           batch_chunk_size: int | None = None) -> None:
    """One measurement in this (fresh) process; writes {peak_mb, time_s} and loss/grads to `out`."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(tokens, dim, generator=g).to(device).requires_grad_()
    w = (torch.randn(vocab, dim, generator=g) * dim**-0.5).to(device).requires_grad_()
    y = torch.randint(0, vocab, (tokens,), generator=g).to(device)
    # One-time initialisation (the chunked path's first call costs seconds) outside the timed call.
    small = torch.randn(16, dim, device=device, requires_grad=True)
    ntp_loss(variant, small, torch.randn(64, dim, device=device), y[:16] % 64, batch_chunk_size).backward()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mb()
    t0 = time.perf_counter()
    loss = ntp_loss(variant, h, w, y, batch_chunk_size)
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mb()) - base
    torch.save({"peak_mb": peak, "time_s": elapsed, "loss": loss.detach().cpu(),
                "dh": h.grad.cpu(), "dw": w.grad.cpu()}, out)


def run_variant(variant: str, args, vocab: int, tmp: str) -> dict:
    out = os.path.join(tmp, f"{variant}_{vocab}.pt")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant, "--tokens", str(args.tokens),
           "--dim", str(args.dim), "--vocabs", str(vocab), "--device", args.device, "--json", out]
    if args.batch_chunk_size is not None:
        cmd += ["--batch-chunk-size", str(args.batch_chunk_size)]
    subprocess.run(cmd, check=True)
    res = torch.load(out)
    os.unlink(out)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="where to write the results")
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--vocabs", default="32768,131072")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-chunk-size", type=int, default=None,
                    help="force the fused path's tokens per chunk (0: torch's heuristic; default: megajepa's)")
    ap.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    vocabs = [int(v) for v in args.vocabs.split(",")]
    if args.worker:
        return worker(args.worker, args.tokens, args.dim, vocabs[0], args.device, args.json,
                      args.batch_chunk_size)

    results = {"tokens": args.tokens, "dim": args.dim, "device": args.device,
               "torch": torch.__version__, "threads": torch.get_num_threads(),
               "fused_options": {v: repr(fused_options(torch.empty(args.tokens, 1, device=args.device), v,
                                                       args.batch_chunk_size)) for v in vocabs},
               "loadavg_before": os.getloadavg()[0], "vocabs": {}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for v in vocabs:
            f, m = (run_variant(k, args, v, tmp) for k in VARIANTS)
            r = {
                "peak_mem_fused_mb": round(f["peak_mb"], 1),
                "peak_mem_materialised_mb": round(m["peak_mb"], 1),
                "mem_ratio": round(f["peak_mb"] / m["peak_mb"], 4),
                "time_fused_s": round(f["time_s"], 3),
                "time_materialised_s": round(m["time_s"], 3),
                "max_abs_diff_loss": (f["loss"] - m["loss"]).abs().item(),
                "max_abs_diff_grad": max((f["dh"] - m["dh"]).abs().max().item(),
                                         (f["dw"] - m["dw"]).abs().max().item()),
                "grads_allclose": torch.allclose(f["dh"], m["dh"], rtol=1e-4, atol=1e-6)
                and torch.allclose(f["dw"], m["dw"], rtol=1e-4, atol=1e-6),
            }
            results["vocabs"][str(v)] = r
            rows.append((v, r))
            del f, m
    head = ("vocab", "fused MB", "materialised MB", "ratio", "fused s", "mat. s", "|dloss|", "|dgrad|")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for v, r in rows:
        print(f"| {v} | {r['peak_mem_fused_mb']:.0f} | {r['peak_mem_materialised_mb']:.0f} | "
              f"{r['mem_ratio']:.3f} | {r['time_fused_s']:.2f} | {r['time_materialised_s']:.2f} | "
              f"{r['max_abs_diff_loss']:.1e} | {r['max_abs_diff_grad']:.1e} |")
    results["loadavg_after"] = os.getloadavg()[0]  # other work on the machine slows both variants
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
