"""Per-rank memory of `model.init_from_hf` loading under ZeRO-3 versus one full copy of the model.

    python benchmarks/hf_load_memory.py --json runs/bench/hf_load_memory.json [--ranks 2] [--dim 1024]

Writes a random Llama checkpoint (safetensors) of the given shape, then launches `--ranks` CPU ranks
with the deepspeed launcher; each builds the model partitioned (`engine.build_model` under
`deepspeed.zero.Init`) and runs `load_hf_weights`, while a thread samples the process's anonymous
resident memory (RssAnon in /proc/self/status, every 2 ms: real allocations, not the page cache of
the memory-mapped safetensors file). Reported per rank: peak growth during loading, next to the full
fp32 model size and the largest single parameter. The target: growth ~ a few parameters (the
gathered one and its broadcast, plus rank 0's copy read from disk), independent of depth, far below
the full model. The probes run with MALLOC_MMAP_THRESHOLD_=65536 so glibc returns freed tensors to the
OS and RssAnon shows live memory; `--keep-allocator` measures with glibc's default (freed heap chunks
stay resident, so growth then also includes allocator retention).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_anon_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakSampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = rss_anon_bytes(), True

    def run(self):
        while self.running:
            self.peak = max(self.peak, rss_anon_bytes())
            time.sleep(0.002)


def make_checkpoint(path: str, dim: int, layers: int, vocab: int) -> dict:
    import torch
    import transformers
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=dim, intermediate_size=int(dim * 2.75) // 64 * 64,
                                   num_hidden_layers=layers, num_attention_heads=dim // 64,
                                   num_key_value_heads=dim // 64, tie_word_embeddings=False)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(cfg)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model.save_pretrained(path, max_shard_size="200MB")
    sizes = [p.numel() * 4 for p in model.parameters()]
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=_word_tokenizer(vocab), bos_token="<s>",
                                               eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(path)
    return {"params": sum(sizes) // 4, "full_fp32_bytes": sum(sizes), "largest_param_bytes": max(sizes)}


def _word_tokenizer(vocab: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    words = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(vocab - 3)])}
    tk = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return tk


def probe(hf_dir: str, out: str) -> None:
    """One rank: partitioned build, then the loading under measurement."""
    from megajepa import distributed
    from megajepa.config import load_config
    from megajepa.data.tokenizer.hf import HFTokenizer
    from megajepa.interop.hf_files import HFCheckpoint
    from megajepa.interop.load_hf import load_hf_weights, model_config_for
    from megajepa.training.engine import build_model, resolve_ds_config

    info = distributed.init_distributed()
    cfg = load_config(None, [f"model.init_from_hf={hf_dir}"])
    ckpt, tok = HFCheckpoint(hf_dir), HFTokenizer(hf_dir)
    model = build_model(model_config_for(ckpt, tok, cfg.model), resolve_ds_config(cfg, info.world_size))
    distributed.barrier()
    sampler = PeakSampler()
    base = rss_anon_bytes()
    sampler.start()
    t0 = time.perf_counter()
    load_hf_weights(model, ckpt, tok.added_ids(), info.rank)
    seconds = time.perf_counter() - t0
    sampler.running = False
    sampler.join()
    with open(f"{out}.rank{info.rank}", "w") as f:
        json.dump({"rank": info.rank, "peak_growth_bytes": sampler.peak - base, "load_s": seconds}, f)
    distributed.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--keep-allocator", action="store_true", help="glibc's default malloc thresholds")
    ap.add_argument("--probe", nargs=2, metavar=("HF_DIR", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        probe(*args.probe)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir, out = os.path.join(tmp, "hf"), os.path.join(tmp, "result")
        result = make_checkpoint(hf_dir, args.dim, args.layers, args.vocab)
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
        if not args.keep_allocator:
            env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        launcher = os.path.join(os.path.dirname(sys.executable), "deepspeed")
        subprocess.run([launcher, "--num_gpus", str(args.ranks), "--master_port", "29613", __file__,
                        "--json", args.json, "--probe", hf_dir, out], check=True, env=env, cwd=ROOT)
        ranks = [json.load(open(f"{out}.rank{r}")) for r in range(args.ranks)]
    result.update(ranks=ranks, shape={"dim": args.dim, "layers": args.layers, "vocab": args.vocab},
                  glibc_default_allocator=args.keep_allocator,
                  worst_growth_over_largest=max(r["peak_growth_bytes"] for r in ranks) / result["largest_param_bytes"],
                  worst_growth_over_full=max(r["peak_growth_bytes"] for r in ranks) / result["full_fp32_bytes"])
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
