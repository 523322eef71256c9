"""From-scratch next-token prediction vs LLM-JEPA on NL-RX-SYNTH (docs/results.md).

    python benchmarks/reproduce_nlrx.py --out runs/nlrx --json runs/nlrx/results.json

Arms (every run from random init, the same model, tokenizer, data file, schedule shape and seeds):
  ntp             lambda=0, --steps packed-row steps
  jepa            lambda=1, k=1, cosine (the paper's best SYNTH setting), as many steps as it takes to see
                  the same number of examples as ntp (the paper's "same number of steps": a JEPA example
                  packs more tokens, so more rows); costs more compute
  jepa_eqcompute  the same, --steps steps: the same packed tokens (compute) as ntp, fewer examples
  jepa_infonce    (not run by default) as jepa with the InfoNCE distance: in-batch negatives, which the
                  cosine arms lack and which keeps Enc from collapsing (docs/results.md)
  jepa_last       (not run by default) as jepa with jepa.embed_at=last: Enc at a view's last content token
Each run: tools/evaluate.py generate on the first --eval-examples of the test file (exact, prefix,
regex-language equality) and tools/analyze_embeddings.py (linear-map error Text -> Code). Statistics:
mean and std over seeds, an exact sign-flip test on the per-seed differences, and an exact McNemar test
on per-example correctness pooled over seeds (each pair = same example, same seed).
A finished run (its final checkpoint, predictions, analysis) is reused: rerunning resumes the study.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from study_stats import mcnemar_p, sign_flip_p  # benchmarks/ is on sys.path when run as a script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "datasets", "llm-jepa")
METRICS = ("exact", "prefix", "regex")
DEFAULT_EVAL_EXAMPLES = 200


def eval_files(eval_examples: int) -> tuple[str, str]:
    """(predictions, metrics) file names in a run: another --eval-examples evaluates the same trained
    run again beside the default evaluation instead of reusing it."""
    if eval_examples == DEFAULT_EVAL_EXAMPLES:
        return "predictions.jsonl", "metrics.json"
    tag = "all" if eval_examples == 0 else f"first{eval_examples}"
    return f"predictions_{tag}.jsonl", f"metrics_{tag}.json"
ARMS = ("ntp", "jepa", "jepa_eqcompute", "jepa_infonce", "jepa_last")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/nlrx")
    p.add_argument("--json", help="results JSON (default OUT/results.json)")
    p.add_argument("--train", default=os.path.join(SHARED, "synth_train.jsonl"))
    p.add_argument("--test", default=os.path.join(SHARED, "synth_test.jsonl"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=1, help="seeds first..first+seeds-1 (split a study over processes)")
    p.add_argument("--no-summary", action="store_true", help="train and evaluate only; summarize in a later call")
    p.add_argument("--arms", default=",".join(ARMS[:3]))
    p.add_argument("--steps", type=int, default=300, help="ntp (and jepa_eqcompute) optimizer steps")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=344)
    p.add_argument("--vocab", type=int, default=512, help="sentencepiece vocabulary trained on the train file")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--eval-examples", type=int, default=DEFAULT_EVAL_EXAMPLES,
                   help="first N of the test file (0: all); a non-default N writes its own metrics file")
    p.add_argument("--analysis-examples", type=int, default=300, help="must exceed --dim")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="OMP threads per training process")
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare_data(args) -> tuple[str, str, str]:
    """(train, test, note): the shared NL-RX-SYNTH files, else the embedded generator's regex task."""
    if os.path.isfile(args.train) and os.path.isfile(args.test):
        return args.train, args.test, "NL-RX-SYNTH from the LLM-JEPA release (synth_train/synth_test.jsonl)"
    from megajepa.data.synthetic import split
    data = os.path.join(args.out, "data")
    os.makedirs(data, exist_ok=True)
    train, test = split("regex", 8000, 2000, 0)
    for name, records in (("train", train), ("test", test)):
        with open(os.path.join(data, f"{name}.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    return (os.path.join(data, "train.jsonl"), os.path.join(data, "test.jsonl"),
            "shared NL-RX-SYNTH files absent: the embedded English<->regex generator (8000/2000, seed 0)")


def train_records(train_file: str) -> list:
    """The records exactly as the trainer reads `data.sources=[train_file]`."""
    from megajepa.config import load_config
    from megajepa.data.corpus import train_records as read
    return read(load_config(None, [f"data.sources=[{train_file}]"]))


def prepare_tokenizer(args, train_file: str) -> str:
    from megajepa.data.corpus import record_texts
    from megajepa.data.tokenizer.sentencepiece import train_tokenizer
    path = os.path.join(args.out, "tokenizer", "tokenizer.model")
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        train_tokenizer(record_texts(train_records(train_file)), path, args.vocab)
    return path


def rows_per_epoch(args, train_file: str, tokenizer_path: str) -> dict[str, int]:
    """Packed rows in one epoch with and without the JEPA views (same packer as the trainer)."""
    from megajepa.data.examples import BadRecordReport, tokenize_records
    from megajepa.data.loader import PackedEpochs
    from megajepa.data.packing import LayoutConfig, Specials
    from megajepa.data.tokenizer import load_tokenizer
    tok = load_tokenizer(tokenizer_path)
    examples = tokenize_records(train_records(train_file), tok, "skip", BadRecordReport())
    out = {}
    for name, use_jepa in (("ntp", False), ("jepa", True)):
        epochs = PackedEpochs(examples, Specials.from_tokenizer(tok), LayoutConfig(predictors=1), args.seq_len, 0,
                              use_jepa=use_jepa)
        out[name] = epochs.num_rows(0)
    out["examples"] = len(examples)
    return out


def arm_settings(args, rows: dict) -> dict[str, dict]:
    same_examples = round(args.steps * rows["jepa"] / rows["ntp"])
    return {"ntp": {"lambda": 0.0, "steps": args.steps},
            "jepa": {"lambda": 1.0, "steps": same_examples},
            "jepa_eqcompute": {"lambda": 1.0, "steps": args.steps},
            "jepa_infonce": {"lambda": 1.0, "steps": same_examples, "distance": "infonce"},
            "jepa_last": {"lambda": 1.0, "steps": same_examples, "embed_at": "last"}}


def train(args, arm: str, seed: int, setting: dict, train_file: str, tokenizer: str) -> str:
    run = os.path.join(args.out, "runs", f"{arm}_seed{seed}")
    final = os.path.join(run, "checkpoints", f"step_{setting['steps']:08d}")
    if os.path.isdir(final):
        return run
    cmd = [sys.executable, os.path.join(REPO, "megajepa", "train.py"), f"output_dir={run}", f"seed={seed}",
           f"data.sources=[{train_file}]", f"data.tokenizer={tokenizer}", f"data.seq_len={args.seq_len}",
           f"jepa.lambda={setting['lambda']}", "jepa.predictors=1", f"jepa.distance={setting.get('distance', 'cosine')}",
           f"jepa.embed_at={setting.get('embed_at', 'end')}",
           f"model.dim={args.dim}", f"model.n_layers={args.layers}", f"model.n_heads={args.heads}",
           f"model.n_kv_heads={args.heads}", f"model.ffn_dim={args.ffn}", f"train.max_steps={setting['steps']}",
           f"train.micro_batch_size={args.micro_batch}", f"train.lr={args.lr}", f"train.warmup_steps={args.warmup}",
           "train.save_interval=1000000", "train.log_interval=25", "train.keep_last=1"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    os.makedirs(run, exist_ok=True)
    t0 = time.time()
    with open(os.path.join(run, "train.log"), "w") as logf:
        proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if proc.returncode:
        raise RuntimeError(f"training {arm} seed {seed} failed (exit {proc.returncode}); see {run}/train.log")
    with open(os.path.join(run, "train_seconds.txt"), "w") as f:
        f.write(f"{time.time() - t0:.1f}\n")
    return run


def evaluate(args, run: str, test_file: str) -> None:
    from megajepa.eval.generate import main as generate
    predictions, metrics = eval_files(args.eval_examples)
    if not os.path.isfile(os.path.join(run, metrics)):
        code = generate(["--model", run, "--input", test_file, "--output", os.path.join(run, predictions),
                         "--json", os.path.join(run, metrics), "--metric", ",".join(METRICS),
                         "--max-examples", str(args.eval_examples), "--max-new-tokens", str(args.max_new_tokens)])
        if code:
            raise RuntimeError(f"evaluation of {run} failed")
    if not os.path.isfile(os.path.join(run, "analysis", "analysis.json")):
        from megajepa.cli.analyze import main as analyze
        if analyze(["--model", run, "--input", test_file, "--out", os.path.join(run, "analysis"),
                    "--max-examples", str(args.analysis_examples), "--predictors", "1"]):
            raise RuntimeError(f"embedding analysis of {run} failed")


def per_example(run: str, metric: str, predictions: str) -> list[bool]:
    from megajepa.eval.metrics import score
    with open(os.path.join(run, predictions)) as f:
        rows = [json.loads(line) for line in f]
    return [e["correct"] for e in score(metric, rows)["per_example"]]


def summarize(runs: dict[str, dict[int, str]], settings: dict, eval_examples: int) -> dict:
    predictions, metrics_file = eval_files(eval_examples)
    out = {"arms": {}, "tests": {}}
    for arm, by_seed in runs.items():
        acc = {m: [] for m in METRICS}
        lstsq, rel, seconds = [], [], []
        for seed, run in sorted(by_seed.items()):
            with open(os.path.join(run, metrics_file)) as f:
                metrics = json.load(f)["metrics"]
            for m in METRICS:
                acc[m].append(100 * metrics[m]["accuracy"])
            with open(os.path.join(run, "analysis", "analysis.json")) as f:
                analysis = json.load(f)
            lstsq.append(analysis["text_to_code"]["lstsq_error"])
            rel.append(analysis["text_to_code"]["lstsq_relative"])
            with open(os.path.join(run, "train_seconds.txt")) as f:
                seconds.append(float(f.read()))
        entry = {"steps": settings[arm]["steps"], "lambda": settings[arm]["lambda"], "seeds": sorted(by_seed),
                 "train_seconds": seconds, "lstsq_text_to_code": lstsq, "lstsq_relative": rel}
        for m in METRICS:
            entry[m] = {"per_seed": acc[m], "mean": statistics.mean(acc[m]),
                        "std": statistics.stdev(acc[m]) if len(acc[m]) > 1 else 0.0}
        out["arms"][arm] = entry
    if "ntp" in runs:
        for arm in runs:
            if arm == "ntp":
                continue
            seeds = sorted(set(runs[arm]) & set(runs["ntp"]))
            tests = {}
            for m in METRICS:
                diffs = [out["arms"][arm][m]["per_seed"][sorted(runs[arm]).index(s)]
                         - out["arms"]["ntp"][m]["per_seed"][sorted(runs["ntp"]).index(s)] for s in seeds]
                a = sum((per_example(runs[arm][s], m, predictions) for s in seeds), [])
                b = sum((per_example(runs["ntp"][s], m, predictions) for s in seeds), [])
                only_arm, only_ntp, p = mcnemar_p(a, b)
                tests[m] = {"seed_diffs": diffs, "sign_flip_p": sign_flip_p(diffs),
                            "mcnemar": {"only_" + arm: only_arm, "only_ntp": only_ntp, "p": p}}
            out["tests"][f"{arm}_vs_ntp"] = tests
    return out


def plot(summary: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    arms = list(summary["arms"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        a = summary["arms"][arm]
        xs = [j + i * width for j in range(len(METRICS))]
        ax.bar(xs, [a[m]["mean"] for m in METRICS], width, yerr=[a[m]["std"] for m in METRICS], capsize=3,
               label=f"{arm} ({a['steps']} steps)")
        for j, m in enumerate(METRICS):
            ax.scatter([xs[j]] * len(a[m]["per_seed"]), a[m]["per_seed"], color="k", s=8, zorder=3)
    ax.set_xticks([j + width * (len(arms) - 1) / 2 for j in range(len(METRICS))], METRICS)
    ax.set(ylabel="accuracy (%)", title="NL-RX-SYNTH from scratch: mean, std, seeds")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(arms))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_spectra(runs: dict[str, dict[int, str]], path: str) -> None:
    """Singular values of Enc(Text) - Enc(Code) per arm (each seed a line): the paper's SVD figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for i, (arm, by_seed) in enumerate(runs.items()):
        for j, (seed, run) in enumerate(sorted(by_seed.items())):
            with open(os.path.join(run, "analysis", "analysis.json")) as f:
                values = json.load(f)["svd_text_minus_code"]
            ax.semilogy(values, color=f"C{i}", lw=1, alpha=0.8, label=arm if j == 0 else None)
    ax.set(xlabel="index", ylabel="singular value", title="SVD of Enc(Text) - Enc(Code), test examples")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(summary: dict) -> str:
    lines = ["| arm | steps | " + " | ".join(f"{m} % (mean ± std)" for m in METRICS)
             + " | lstsq Text→Code (mean) | relative |", "|---" * (len(METRICS) + 4) + "|"]
    for arm, a in summary["arms"].items():
        cells = [f"{a[m]['mean']:.2f} ± {a[m]['std']:.2f}" for m in METRICS]
        lines.append(f"| {arm} | {a['steps']} | " + " | ".join(cells)
                     + f" | {statistics.mean(a['lstsq_text_to_code']):.4g} | {statistics.mean(a['lstsq_relative']):.3g} |")
    for name, tests in summary["tests"].items():
        for m, t in tests.items():
            mc = t["mcnemar"]
            lines.append(f"\n{name} {m}: per-seed diffs {[round(d, 2) for d in t['seed_diffs']]}, sign-flip p="
                         f"{t['sign_flip_p']:.3f}; McNemar {mc} ")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    arms = [a for a in args.arms.split(",") if a]
    bad = [a for a in arms if a not in ARMS]
    if bad:
        print(f"error: unknown arm(s) {bad}; choose from {', '.join(ARMS)}", file=sys.stderr)
        return 2
    train_file, test_file, data_note = prepare_data(args)
    tokenizer = prepare_tokenizer(args, train_file)
    rows = rows_per_epoch(args, train_file, tokenizer)
    settings = arm_settings(args, rows)
    log(f"data: {data_note}; rows/epoch {rows}; steps {({a: settings[a]['steps'] for a in arms})}")
    runs: dict[str, dict[int, str]] = {a: {} for a in arms}
    for seed in range(args.first_seed, args.first_seed + args.seeds):  # seed-major: a cut-short study still has every arm at seed 1
        for arm in arms:
            t0 = time.time()
            runs[arm][seed] = train(args, arm, seed, settings[arm], train_file, tokenizer)
            evaluate(args, runs[arm][seed], test_file)
            log(f"{arm} seed {seed}: done in {time.time() - t0:.0f}s")
    if args.no_summary:
        return 0
    summary = summarize(runs, settings, args.eval_examples)
    summary.update(data=data_note, train_file=train_file, test_file=test_file, rows_per_epoch=rows,
                   config=vars(args), command=" ".join([os.path.relpath(__file__, REPO)] + (argv or sys.argv[1:])))
    path = args.json or os.path.join(args.out, "results.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
    plot(summary, os.path.join(args.out, "results.png"))
    plot_spectra(runs, os.path.join(args.out, "spectra.png"))
    table = markdown(summary)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
