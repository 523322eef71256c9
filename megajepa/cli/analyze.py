"""Embedding geometry of a checkpoint on a two-view dataset (the paper's Table 14 and SVD figure).

    megajepa-analyze --model RUN_OR_CKPT_OR_HF_DIR --input test.jsonl --out DIR \
        [--max-examples 1000] [--predictors K] [--embed-at end|last]

Writes DIR/analysis.json (spectrum of Enc(Text) - Enc(Code), least-squares error of the best linear map
Text -> Code and Pred -> Code, effective ranks, Pred/Code cosines), DIR/spectrum.png and
DIR/projection.png (PCA of Enc(Text), Enc(Code), Pred coloured by view). k and embed_at default to the
run's own jepa settings (1 and end for a transformers directory). Exit 2 on bad input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from megajepa.eval.embeddings import analyze, embed_pairs
from megajepa.eval.generate import InputError, read_items
from megajepa.eval.load import load_model
from megajepa.training.checkpoint.locate import CheckpointError


def plot(emb: dict, result: dict, out_dir: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import torch

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogy(result["svd_text_minus_code"], marker=".", lw=1)
    ax.set(xlabel="index", ylabel="singular value", title=f"SVD of Enc(Text) - Enc(Code)\n{title}")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "spectrum.png"), dpi=120)
    plt.close(fig)

    names = ("enc_text", "enc_code", "pred")
    stacked = torch.cat([emb[n] for n in names]).double()
    centered = stacked - stacked.mean(0)
    _, _, v = torch.linalg.svd(centered, full_matrices=False)
    xy = (centered @ v[:2].T).numpy()
    n = emb["enc_text"].shape[0]
    fig, ax = plt.subplots(figsize=(5, 4))
    for i, (name, label) in enumerate(zip(names, ("Enc(Text)", "Enc(Code)", "Pred(Enc(Text))"))):
        ax.scatter(xy[i * n:(i + 1) * n, 0], xy[i * n:(i + 1) * n, 1], s=6, alpha=0.6, label=label)
    ax.set(xlabel="PC 1", ylabel="PC 2", title=f"PCA of the embeddings\n{title}")
    ax.legend(markerscale=3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "projection.png"), dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True, help="JSON lines of views or messages records")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-examples", type=int, default=1000)
    p.add_argument("--predictors", type=int, help="k predictor tokens (default: the run's jepa.predictors)")
    p.add_argument("--embed-at", choices=("end", "last"), help="default: the run's jepa.embed_at")
    p.add_argument("--tokenizer", help="override the tokenizer")
    args = p.parse_args(argv)
    try:
        items = read_items(args.input)
        loaded = load_model(args.model, args.tokenizer)
    except (InputError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    jepa = (loaded.run_config or {}).get("jepa") or {}
    k = args.predictors if args.predictors is not None else jepa.get("predictors", 1)
    embed_at = args.embed_at or jepa.get("embed_at", "end")
    given, items = len(items), items[:args.max_examples]
    emb = embed_pairs(loaded.model, loaded.tokenizer, [(i.text, i.reference) for i in items], k, embed_at)
    try:
        result = analyze(emb)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result.update(model=loaded.source, input=os.path.abspath(args.input), records_in_input=given, predictors=k,
                  embed_at=embed_at)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "analysis.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(emb, result, args.out, os.path.basename(os.path.normpath(loaded.source)))
    t2c = result["text_to_code"]
    print(f"n={result['n']} dim={result['dim']} lstsq Text->Code {t2c['lstsq_error']:.4g} "
          f"(relative {t2c['lstsq_relative']:.4g}); effective rank "
          + ", ".join(f"{k}={v:.1f}" for k, v in result["effective_rank"].items()))
    if len(items) < given:
        print(f"used the first {len(items)} of {given} records in {args.input} (--max-examples {args.max_examples})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
