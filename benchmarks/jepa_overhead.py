"""What the JEPA term costs: megajepa's packed hybrid vs NTP-only and vs the reference's schemes.

    python benchmarks/jepa_overhead.py --json runs/bench/jepa_overhead.json

Same megajepa Transformer, same examples, CPU, one process, forward+backward (no optimizer step),
seconds per 1000 examples and tokens processed (every position fed to the model, padding included):
  ntp_packed       megajepa with lambda=0: streams packed into rows of --seq-len
  hybrid_packed    megajepa hybrid (k predictors, Code copy) packed into the same rows
  ref_a            reference scheme A: 3 passes per example (full sequence, Text+predictors, Code),
                   each padded to --max-length (512)
  ref_b            reference scheme B: 2 passes (full sequence; [Text+predictors | Code] under an
                   additive block mask), each padded to --max-length
  ref_b_dynamic    scheme B padded to the longest sequence of each batch
  sigreg_hybrid    hybrid_packed + SIGReg on Pred and Enc (jepa.regularizer=sigreg): sigreg_time_ratio
  stp_ntp_packed   ntp_packed + STP (stp.lambda=0.02, random_span, one span per example, no views):
                   stp_time_ratio vs ntp_packed; the host-side span sampling (done in the loader's thread
                   in training) is timed apart, stp_sampling_s_per_1000_examples
References run on the same model through SDPA with a float additive mask (0 / -inf), as transformers
does with `attention_mask` padding; megajepa rows use the dense boolean mask (the CPU path).
Also the paraphrase-style pretraining case (N views, data.train_all, pairs=chain): NTP-only vs hybrid
packed, and a reference-style count (one padded pass per view plus one per predictor sequence).
Data: ../shared/datasets/llm-jepa/synth_train.jsonl (messages: Text = user, Code = assistant) when
present, else the embedded synthetic regex generator; the output says which.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from megajepa.config import JepaConfig, ModelConfig, StpConfig
from megajepa.data.collate import collate
from megajepa.data.examples import BadRecordReport, tokenize_records
from megajepa.data.loader import PackedEpochs
from megajepa.data.packing import IGNORE, LayoutConfig, Specials, view_pairs
from megajepa.data.stp import StpSampling, add_stp_samples
from megajepa.data.synthetic import task_module
from megajepa.data.tokenizer.sentencepiece import train_tokenizer
from megajepa.model.transformer import Transformer, describe, resolve_model_config
from megajepa.objective.hybrid import HybridObjective
from megajepa.objective.losses import ntp_loss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_FILE = os.path.join(REPO, "..", "shared", "datasets", "llm-jepa", "synth_train.jsonl")


# ------------------------------------------------------------------ data
def load_records(n: int, seed: int) -> tuple[list, str]:
    if os.path.isfile(SHARED_FILE):
        with open(SHARED_FILE) as f:
            records = [(f"{SHARED_FILE}:{i}", json.loads(line)) for i, line in enumerate(f, 1) if line.strip()]
        return records[:n], f"NL-RX-SYNTH {os.path.normpath(SHARED_FILE)} (first {n} records)"
    return task_module("regex").generate(n, seed), f"synthetic regex generator ({n} records, seed {seed})"


def texts_of(records) -> list[str]:
    from megajepa.data.records import record_views
    return [v for r in records for v in record_views(r[1] if isinstance(r, tuple) else r)]


# ------------------------------------------------------------------ the reference schemes
def additive_mask(block: torch.Tensor) -> torch.Tensor:
    """Float [B, 1, T, T] from block ids [B, T] (each padding position its own block): 0 where a query
    may attend (causal inside its block), -inf elsewhere, as transformers' additive masks."""
    t = block.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    allowed = (block[:, :, None] == block[:, None, :]) & causal
    return torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))[:, None]


def padded_pass(model, seqs: list[list[tuple[list[int], list[int]]]], length: int | None, pad: int):
    """One forward over a batch: each item is a list of (tokens, positions) blocks placed side by side.
    Returns hidden [B, T, D], the padded ids, and each item's (start, end) per block."""
    lengths = [sum(len(t) for t, _ in item) for item in seqs]
    t = length or max(lengths)
    if max(lengths) > t:  # the reference would truncate; refuse rather than time a different objective
        raise ValueError(f"a reference sequence of {max(lengths)} tokens exceeds --max-length {t}")
    ids = torch.full((len(seqs), t), pad)
    pos = torch.zeros((len(seqs), t), dtype=torch.long)
    block = -1 - torch.arange(t).repeat(len(seqs), 1)  # padding: a block of its own
    spans = []
    for b, item in enumerate(seqs):
        cursor, item_spans = 0, []
        for tokens, positions in item:
            ids[b, cursor:cursor + len(tokens)] = torch.tensor(tokens)
            pos[b, cursor:cursor + len(tokens)] = torch.tensor(positions)
            block[b, cursor:cursor + len(tokens)] = len(item_spans)
            item_spans.append((cursor, cursor + len(tokens)))
            cursor += len(tokens)
        spans.append(item_spans)
    return model(ids, pos, additive_mask(block)), ids, spans


def reference_step(model, batch: list[dict], sp: Specials, k: int, scheme: str, max_length: int,
                   lam: float) -> tuple[torch.Tensor, float, float, int]:
    """Scheme A or B (B dynamic: scheme='b_dynamic') on a batch of examples; returns (loss, ntp sum,
    jepa sum, tokens processed)."""
    length = None if scheme == "b_dynamic" else max_length
    full = [[(ex["stream"], list(range(len(ex["stream"]))))] for ex in batch]
    hidden, ids, _ = padded_pass(model, full, length, sp.pad)
    labels = torch.full_like(ids, IGNORE)
    for b, ex in enumerate(batch):
        s = ex["answer_start"]
        labels[b, s - 1:len(ex["stream"]) - 1] = torch.tensor(ex["stream"][s:])
    ntp = model.lm_head(hidden, ntp_loss(labels))
    tokens = ids.numel()
    pred_items = [(ex["pred_seq"], list(range(len(ex["pred_seq"])))) for ex in batch]
    enc_items = [(ex["enc_seq"], list(range(len(ex["enc_seq"])))) for ex in batch]
    if scheme == "a":
        h_pred, ids_p, spans_p = padded_pass(model, [[x] for x in pred_items], length, sp.pad)
        h_enc, ids_e, spans_e = padded_pass(model, [[x] for x in enc_items], length, sp.pad)
        pred = torch.stack([h_pred[b, s[0][1] - 1] for b, s in enumerate(spans_p)])
        enc = torch.stack([h_enc[b, s[0][1] - 1] for b, s in enumerate(spans_e)])
        tokens += ids_p.numel() + ids_e.numel()
    else:
        h, ids_2, spans_2 = padded_pass(model, [[p, e] for p, e in zip(pred_items, enc_items)], length, sp.pad)
        pred = torch.stack([h[b, s[0][1] - 1] for b, s in enumerate(spans_2)])
        enc = torch.stack([h[b, s[1][1] - 1] for b, s in enumerate(spans_2)])
        tokens += ids_2.numel()
    jepa = (1 - F.cosine_similarity(pred, enc, dim=-1)).sum()
    n_labels = sum(len(ex["stream"]) - ex["answer_start"] for ex in batch)
    loss = ntp / n_labels + lam * jepa / len(batch)
    return loss, ntp.item(), jepa.item(), tokens


def reference_examples(examples, sp: Specials, k: int) -> list[dict]:
    """The reference's sequences for two-view examples (default layout, embed_at=end)."""
    out = []
    for ex in examples:
        text, code = ex.views[:2]
        stream = [sp.bos] + text + [sp.sep] + code + [sp.eos]
        out.append({"stream": stream, "answer_start": len(text) + 2,
                    "pred_seq": [sp.bos] + text + [sp.sep] + sp.predictors[:k], "enc_seq": [sp.bos] + code + [sp.eos]})
    return out


# ------------------------------------------------------------------ timing
def run_once(step, batches) -> tuple[float, dict]:
    """Forward+backward over every batch; returns (seconds, totals)."""
    totals = {"ntp_sum": 0.0, "jepa_sum": 0.0, "tokens": 0}
    start = time.perf_counter()
    for batch in batches:
        loss, ntp, jepa, tokens = step(batch)
        loss.backward()
        totals["ntp_sum"] += ntp
        totals["jepa_sum"] += jepa
        totals["tokens"] += tokens
    return time.perf_counter() - start, totals


def measure(schemes: dict, repeats: dict) -> dict:
    """Interleaved rounds over the schemes (shared CPUs drift); the fastest round of each counts.
    `repeats[name]`: rounds for that scheme. One untimed warm-up batch per scheme first."""
    for step, batches, _ in schemes.values():
        step(batches[0])[0].backward()
    best = {}
    for round_ in range(max(repeats.values())):
        for name, (step, batches, extra) in schemes.items():
            if round_ >= repeats[name]:
                continue
            seconds, totals = run_once(step, batches)
            print(f"  round {round_ + 1}/{repeats[name]} {name}: {seconds:.1f} s", file=sys.stderr, flush=True)
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, {**totals, **extra})
    return best


def packed_scheme(model, examples, sp, layout, seq_len, rows_per_batch, jepa: JepaConfig, use_jepa: bool,
                  stp: StpConfig | None = None):
    """(step, batches, extra totals) for megajepa's packed rows through the training objective; `stp`: with
    the STP term (its samples drawn while the batches are built, timed apart as `stp_sampling_seconds`)."""
    epochs = PackedEpochs(examples, sp, layout, seq_len, seed=0, use_jepa=use_jepa)
    rows = epochs.rows(0)
    batches = [collate(rows[i:i + rows_per_batch]) for i in range(0, len(rows), rows_per_batch)]
    extra = {"real_tokens": sum(r.n_real for r in rows), "rows": len(rows)}
    if stp is not None:
        sampling, start = StpSampling(stp.mode, stp.samples_per_document, stp.length_weighting, 0), time.perf_counter()
        for i, batch in enumerate(batches):
            add_stp_samples(batch, [r.docs for r in rows[i * rows_per_batch:(i + 1) * rows_per_batch]], 0,
                            i * rows_per_batch, sampling)
        extra["stp_sampling_seconds"] = time.perf_counter() - start
    objective = HybridObjective(model, jepa, stp=stp)
    n_labels = torch.tensor(float(sum(int((b["labels"] != IGNORE).sum()) for b in batches)))
    n_pairs = torch.tensor(float(max(sum(int(b["pair_mask"].sum()) for b in batches), 1)))
    n_stp = torch.tensor(float(max(sum(float(b["stp_weight"].sum()) for b in batches if "stp_weight" in b), 1)))

    def step(batch):
        loss, stats = objective(batch, n_labels, n_pairs, stp_denominator=n_stp)
        return loss, stats["ntp_sum"].item(), stats["jepa_sum"].item(), batch["input_ids"].numel()

    return step, batches, extra


def same_objective_check(model, examples, sp, layout, args, ref_a: dict) -> dict:
    """Packed hybrid sums over the reference's examples vs scheme A's: the same objective, to rounding."""
    step, batches, _ = packed_scheme(model, examples, sp, layout, args.seq_len, args.rows_per_batch,
                                     JepaConfig.paper(lam=1.0, predictors=args.predictors), True)
    _, totals = run_once(step, batches)
    return {"jepa_sum_rel_diff_vs_ref_a": abs(totals["jepa_sum"] - ref_a["jepa_sum"]) / max(ref_a["jepa_sum"], 1e-9),
            "ntp_sum_rel_diff_vs_ref_a": abs(totals["ntp_sum"] - ref_a["ntp_sum"]) / ref_a["ntp_sum"]}


def result(name, seconds, totals, n_examples) -> dict:
    return {"scheme": name, "seconds": seconds, "s_per_1000_examples": seconds * 1000 / n_examples,
            "tokens": totals["tokens"], "tokens_per_example": totals["tokens"] / n_examples, **
            {k: v for k, v in totals.items() if k != "tokens"}}


# ------------------------------------------------------------------ main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--paraphrase-examples", type=int, default=64)
    parser.add_argument("--predictors", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=512, help="megajepa packed row length")
    parser.add_argument("--max-length", type=int, default=512, help="reference padding length")
    parser.add_argument("--rows-per-batch", type=int, default=4)
    parser.add_argument("--ref-batch", type=int, default=4, help="examples per reference forward")
    parser.add_argument("--ref-examples", type=int, default=32,
                        help="reference schemes time the first N of the same examples (0: all)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--dim", type=int, default=128, help="0: the preset's")
    parser.add_argument("--layers", type=int, default=2, help="0: the preset's")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds of the reference schemes; the fastest counts")
    parser.add_argument("--packed-repeats", type=int, default=8, help="timing rounds of the (cheap) packed schemes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    records, data_note = load_records(args.examples, args.seed)
    para_records = task_module("paraphrase").generate(args.paraphrase_examples, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_tokenizer(texts_of(records) + texts_of(para_records), os.path.join(tmp, "tok.model"),
                              args.vocab_size, seed=args.seed)
    sp = Specials.from_tokenizer(tok)
    report = BadRecordReport()
    examples = tokenize_records(records, tok, "skip", report)
    para = tokenize_records(para_records, tok, "skip", report)
    model_cfg = resolve_model_config(ModelConfig(preset=args.preset, dim=args.dim, n_layers=args.layers),
                                     tok.vocab_size)
    model = Transformer(model_cfg).train()
    n = len(examples)
    print(f"data: {data_note}; {n} examples used ({report.total} skipped); reference schemes on the first "
          f"{min(args.ref_examples or n, n)}; paraphrase case: {len(para)} synthetic paraphrase groups")
    print(f"{describe(model_cfg)}; k={args.predictors}; torch threads {torch.get_num_threads()}")

    jepa = JepaConfig.paper(lam=1.0, predictors=args.predictors)
    sigreg_cfg = JepaConfig.paper(lam=1.0, predictors=args.predictors, regularizer="sigreg", reg_weight=0.1)
    ntp_cfg = JepaConfig.paper(lam=0.0, predictors=args.predictors)
    stp_cfg = StpConfig(lam=0.02, mode="random_span")  # the reference's NL-RX setting
    layout = LayoutConfig(predictors=args.predictors)
    p_layout = LayoutConfig(predictors=args.predictors, train_all=True, pairs="chain")
    # padded schemes cost the same per example whatever the sample, so they time the first --ref-examples
    n_ref = min(args.ref_examples or n, n)
    refs = reference_examples(examples[:n_ref], sp, args.predictors)
    ref_batches = [refs[i:i + args.ref_batch] for i in range(0, n_ref, args.ref_batch)]

    def reference(scheme):
        return (lambda b: reference_step(model, b, sp, args.predictors, scheme, args.max_length, jepa.lam),
                ref_batches, {})

    schemes = {
        "ntp_packed": packed_scheme(model, examples, sp, layout, args.seq_len, args.rows_per_batch, ntp_cfg, False),
        "hybrid_packed": packed_scheme(model, examples, sp, layout, args.seq_len, args.rows_per_batch, jepa, True),
        "sigreg_hybrid": packed_scheme(model, examples, sp, layout, args.seq_len, args.rows_per_batch, sigreg_cfg,
                                       True),
        "stp_ntp_packed": packed_scheme(model, examples, sp, layout, args.seq_len, args.rows_per_batch, ntp_cfg,
                                        False, stp_cfg),
        "ref_a": reference("a"), "ref_b": reference("b"), "ref_b_dynamic": reference("b_dynamic"),
        # paraphrase-style pretraining: every view its own stream, chain pairs
        "para_ntp_packed": packed_scheme(model, para, sp, p_layout, args.seq_len, args.rows_per_batch, ntp_cfg, False),
        "para_hybrid_packed": packed_scheme(model, para, sp, p_layout, args.seq_len, args.rows_per_batch, jepa, True),
    }
    load_before = os.getloadavg()
    best = measure(schemes, {name: args.repeats if name.startswith("ref_") else args.packed_repeats
                             for name in schemes})
    pn = len(para)
    runs = {name: result(name, *best[name], n_ref if name.startswith("ref_") else n)
            for name in schemes if not name.startswith(("para_", "sigreg_", "stp_"))}
    para_runs = {name[5:]: result(name, *best[name], pn) for name in schemes if name.startswith("para_")}
    sources = [len({s for s, _ in view_pairs(len(ex.views), "chain")}) for ex in para]
    ref_passes = sum(len(ex.views) for ex in para) + (sum(sources) if args.predictors else 0)
    para_summary = {"examples": pn, "views_per_example": sum(len(ex.views) for ex in para) / pn,
                    "token_ratio": para_runs["hybrid_packed"]["tokens"] / para_runs["ntp_packed"]["tokens"],
                    "real_token_ratio": para_runs["hybrid_packed"]["real_tokens"] / para_runs["ntp_packed"]["real_tokens"],
                    "time_ratio": para_runs["hybrid_packed"]["seconds"] / para_runs["ntp_packed"]["seconds"],
                    "reference_style_tokens_per_example": ref_passes * args.max_length / pn,
                    "runs": para_runs}

    ntp, hyb = runs["ntp_packed"], runs["hybrid_packed"]
    out = {"data": data_note, "examples": n, "reference_examples": n_ref, "repeats": args.repeats, "packed_repeats": args.packed_repeats, "torch_threads": torch.get_num_threads(),
           "load_average_before_after": [load_before[0], os.getloadavg()[0]], "model": dataclasses.asdict(model_cfg) | {"preset": args.preset},
           "predictors": args.predictors, "seq_len": args.seq_len, "max_length": args.max_length,
           "token_ratio": hyb["tokens"] / ntp["tokens"], "time_ratio": hyb["seconds"] / ntp["seconds"],
           "real_token_ratio": hyb["real_tokens"] / ntp["real_tokens"],
           "sigreg_time_ratio": best["sigreg_hybrid"][0] / hyb["seconds"],
           "stp_time_ratio": best["stp_ntp_packed"][0] / ntp["seconds"],
           "stp_sampling_s_per_1000_examples": best["stp_ntp_packed"][1]["stp_sampling_seconds"] * 1000 / n,
           "speedup_vs_ref_a": runs["ref_a"]["s_per_1000_examples"] / hyb["s_per_1000_examples"],
           "speedup_vs_ref_b": runs["ref_b"]["s_per_1000_examples"] / hyb["s_per_1000_examples"],
           "speedup_vs_ref_b_dynamic": runs["ref_b_dynamic"]["s_per_1000_examples"] / hyb["s_per_1000_examples"],
           # the same objective: packed sums must match the reference's separate passes
           **same_objective_check(model, examples[:n_ref], sp, layout, args, runs["ref_a"]),
           **{f"{t}_sum_rel_diff_{r}_vs_ref_a": abs(runs[r][f"{t}_sum"] - runs["ref_a"][f"{t}_sum"]) / runs["ref_a"][f"{t}_sum"]
              for r in ("ref_b", "ref_b_dynamic") for t in ("ntp", "jepa")},
           "runs": runs, "paraphrase_train_all": para_summary}
    print_table(out)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


def print_table(out: dict) -> None:
    print("\n| scheme | s / 1000 examples | tokens / example | time per example vs hybrid |")
    print("| --- | ---: | ---: | ---: |")
    hyb = out["runs"]["hybrid_packed"]["s_per_1000_examples"]
    for run in out["runs"].values():
        print(f"| {run['scheme']} | {run['s_per_1000_examples']:.2f} | {run['tokens_per_example']:.1f} | "
              f"{run['s_per_1000_examples'] / hyb:.2f}x |")
    print(f"\ntoken_ratio {out['token_ratio']:.3f} (real tokens {out['real_token_ratio']:.3f}), time_ratio "
          f"{out['time_ratio']:.3f} (target <= 1.15 x token_ratio = {1.15 * out['token_ratio']:.3f})")
    print(f"sigreg_time_ratio {out['sigreg_time_ratio']:.3f} (target <= 1.05)")
    print(f"stp_time_ratio {out['stp_time_ratio']:.3f} (target <= 1.05); host-side STP sampling "
          f"{out['stp_sampling_s_per_1000_examples']:.3f} s / 1000 examples (the loader's thread in training)")
    print(f"speedup vs ref A {out['speedup_vs_ref_a']:.2f}x (target >= 5), vs ref B {out['speedup_vs_ref_b']:.2f}x, "
          f"vs ref B dynamic {out['speedup_vs_ref_b_dynamic']:.2f}x (target > 1)")
    print(f"load average {out['load_average_before_after'][0]:.1f} -> {out['load_average_before_after'][1]:.1f}")
    print(f"same objective: jepa sum rel diff {out['jepa_sum_rel_diff_vs_ref_a']:.2e}, ntp sum rel diff "
          f"{out['ntp_sum_rel_diff_vs_ref_a']:.2e}")
    p = out["paraphrase_train_all"]
    print(f"paraphrase train_all ({p['views_per_example']:.2f} views/example): token_ratio {p['token_ratio']:.3f} (real tokens "
          f"{p['real_token_ratio']:.3f}), "
          f"time_ratio {p['time_ratio']:.3f}; s/1000: ntp {p['runs']['ntp_packed']['s_per_1000_examples']:.2f}, "
          f"hybrid {p['runs']['hybrid_packed']['s_per_1000_examples']:.2f}; reference-style padded tokens/example "
          f"{p['reference_style_tokens_per_example']:.0f} vs hybrid {p['runs']['hybrid_packed']['tokens_per_example']:.1f}")


if __name__ == "__main__":
    sys.exit(main())
