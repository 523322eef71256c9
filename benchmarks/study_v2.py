"""Study v2 (docs/results.md): does any JEPA variant beat next-token training from scratch?

    python benchmarks/study_v2.py --out runs/study_v2                        # train + evaluate, then summarize
    python benchmarks/study_v2.py --out runs/study_v2 --summarize --json docs/results/study_v2.json

E1, NL-RX-SYNTH from random init, data-efficiency curve: every arm of configs/study/arms.yaml is trained
on a nested fraction of synth_train.jsonl (the first n of one fixed shuffle, so 1/16 is inside 1/8 ...)
over the base config configs/study/e1_nlrx_synth.yaml, and evaluated on all of synth_test.jsonl: prefix
(the paper's metric here), exact and regex-language equivalence, plus the embedding geometry
(megajepa-analyze) and the collapse scalars logged over training. Two budgets:
  examples   every arm sees the same examples: --epochs passes over the whole train file's worth of
             examples, i.e. --epochs / fraction epochs of its fraction (a fixed training budget over less
             unique data; the steps its own packing needs)
  compute    NTP trained for the model FLOPs (losses.jsonl, megajepa/model/flops.py) that a JEPA arm
             spent at equal examples: the run `ntp_at_<arm>_flops`, NTP getting the extra steps
Statistics per (fraction, budget, arm) against its NTP run of the same seed: per-seed differences, the
paper's paired one-tailed t-test, an exact sign-flip test and McNemar pooled over seeds
(benchmarks/study_stats.py).

Running it: every run lives in OUT/e1/<fraction>/<arm>/seed<N>. A run with result.json is reused; an
interrupted one resumes from its last checkpoint (resume=auto). Start the same command in several
shells to split the work: a run is claimed with a lock file (a dead owner's lock is taken over), and
NTP-at-equal-compute runs wait for the two runs they are sized from. Every run records the code
version (git commit, and whether the tree was dirty) it trained with.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from fractions import Fraction

import yaml
from study_stats import mcnemar_p, paired_t_greater, sign_flip_p  # benchmarks/ is on sys.path as a script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "datasets", "llm-jepa")
BASE_CONFIG = os.path.join(REPO, "configs", "study", "e1_nlrx_synth.yaml")
ARMS_FILE = os.path.join(REPO, "configs", "study", "arms.yaml")
FRACTIONS = ("1/16", "1/8", "1/4", "1/2", "1")
METRICS = ("prefix", "exact", "regex")
COLLAPSE_TAGS = ("collapse/erank_enc", "collapse/erank_pred", "collapse/cos_pred_target", "collapse/cos_pred_other")
EXAMPLES, COMPUTE = "examples", "compute"


@dataclass(frozen=True)
class Run:
    """One training run. `arm` is an arm of arms.yaml; at the compute budget `arm` is ntp and `sized_by`
    the JEPA arm whose FLOPs it matches."""
    fraction: str
    arm: str
    seed: int
    sized_by: str | None = None

    @property
    def budget(self) -> str:
        return COMPUTE if self.sized_by else EXAMPLES

    @property
    def label(self) -> str:
        return f"ntp_at_{self.sized_by}_flops" if self.sized_by else self.arm

    def dir(self, out: str) -> str:
        return os.path.join(out, "e1", "frac_" + self.fraction.replace("/", "_"), self.label, f"seed{self.seed}")

    def deps(self) -> list["Run"]:
        if not self.sized_by:
            return []
        return [Run(self.fraction, "ntp", self.seed), Run(self.fraction, self.sized_by, self.seed)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/study_v2")
    p.add_argument("--json", help="summary JSON (default OUT/study_v2.json)")
    p.add_argument("--summarize", action="store_true", help="only summarize the finished runs")
    p.add_argument("--no-summary", action="store_true", help="only train and evaluate")
    p.add_argument("--train", default=os.path.join(SHARED, "synth_train.jsonl"))
    p.add_argument("--test", default=os.path.join(SHARED, "synth_test.jsonl"))
    p.add_argument("--arms", default="ntp,jepa_paper,jepa_sigreg,infonce,stp,stp_jepa")
    p.add_argument("--compute-arms", default="jepa_paper,jepa_sigreg,infonce,stp_jepa",
                   help="JEPA arms that get an NTP run at their FLOPs ('' : none)")
    p.add_argument("--fractions", default=",".join(FRACTIONS))
    p.add_argument("--seeds", default="1-5", help="a range A-B or a list 1,2,3")
    p.add_argument("--epochs", type=int, default=4,
                   help="epochs of the whole train file (the paper fixes 4); a fraction f trains epochs / f epochs")
    p.add_argument("--eval-examples", type=int, default=0, help="first N of the test file (0: all)")
    p.add_argument("--analysis-examples", type=int, default=300, help="must exceed the model width")
    p.add_argument("--threads", type=int, default=1, help="OMP threads per training process")
    p.add_argument("--wait", type=float, default=30.0, help="seconds between looks at runs another process holds")
    p.add_argument("overrides", nargs="*", help="run-config overrides for every run (e.g. model.dim=128)")
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def seeds(text: str) -> list[int]:
    if "-" in text:
        first, last = map(int, text.split("-"))
        return list(range(first, last + 1))
    return [int(s) for s in text.split(",") if s]


def plan(args, arms: dict) -> list[Run]:
    """Seed-major (a study cut short still has every arm at seed 1), then fraction, then arm; compute-
    budget runs after the runs they are sized from."""
    wanted = [a for a in args.arms.split(",") if a]
    compute = [a for a in args.compute_arms.split(",") if a and a in wanted]
    unknown = [a for a in wanted if a not in arms]
    bad_fractions = [f for f in args.fractions.split(",") if f not in FRACTIONS]
    if unknown or bad_fractions or (compute and "ntp" not in wanted):
        raise SystemExit(f"error: unknown arm(s) {unknown} (arms.yaml: {', '.join(arms)}) or fraction(s) "
                         f"{bad_fractions} (choose from {', '.join(FRACTIONS)}); --compute-arms needs the ntp arm")
    runs = []
    for seed in seeds(args.seeds):
        for fraction in args.fractions.split(","):
            runs += [Run(fraction, arm, seed) for arm in wanted]
            runs += [Run(fraction, "ntp", seed, sized_by=arm) for arm in compute]
    return runs


# ---------------------------------------------------------------- data, tokenizer, steps

def fraction_file(args, fraction: str) -> str:
    """The first round(n * fraction) records of one fixed shuffle (seed 0) of the train file."""
    with open(args.train) as f:
        lines = [line for line in f if line.strip()]
    order = list(range(len(lines)))
    random.Random(0).shuffle(order)
    keep = round(len(lines) * Fraction(fraction))
    path = os.path.join(args.out, "data", f"train_frac_{fraction.replace('/', '_')}.jsonl")
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomically(path, "".join(lines[i] for i in order[:keep]))
    return path


def write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # two processes preparing the same file: the last identical copy wins


def tokenizer_file(args) -> str:
    """One sentencepiece model trained on all of the train file, shared by every run (the base config's
    data.vocab_size)."""
    path = os.path.join(args.out, "tokenizer", "tokenizer.model")
    if not os.path.isfile(path):
        from megajepa.config import load_config
        from megajepa.data.corpus import record_texts, train_records
        from megajepa.data.tokenizer.sentencepiece import train_tokenizer
        cfg = load_config(BASE_CONFIG, [f"data.sources=[{args.train}]", *args.overrides])
        tmp = os.path.join(args.out, "tokenizer", f"tmp{os.getpid()}", "tokenizer.model")
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        train_tokenizer(record_texts(train_records(cfg)), tmp, cfg.data.vocab_size)
        os.replace(tmp, path)
    return path


def overrides_of(arm_settings: dict) -> list[str]:
    """An arm's nested settings as dotted key=value overrides (values as YAML)."""
    out = []
    for section, values in arm_settings.items():
        if section == "about":
            continue
        for key, value in values.items():
            out.append(f"{section}.{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
    return out


def run_overrides(args, arms: dict, run: Run, tokenizer: str) -> list[str]:
    return [f"data.sources=[{fraction_file(args, run.fraction)}]", f"data.tokenizer={tokenizer}",
            f"seed={run.seed}", *overrides_of(arms[run.arm]), *args.overrides]


def epochs_of(args, fraction: str) -> int:
    return round(args.epochs / Fraction(fraction))


def steps_for_epochs(overrides: list[str], epochs: int) -> int:
    """Optimizer steps for `epochs` epochs of the run's own packing: the loader drops each epoch's tail a
    whole optimizer step at a time (megajepa/data/loader.py), one process."""
    from megajepa.config import load_config
    from megajepa.training.build import build_data
    cfg = load_config(BASE_CONFIG, overrides)
    _, rows = build_data(cfg, None, 0)
    per_step = cfg.train.micro_batch_size * cfg.train.grad_accum
    return sum(rows.num_rows(epoch) // per_step for epoch in range(epochs))


def trained_flops(run_dir: str) -> tuple[int, float]:
    """(steps, model FLOPs) of a finished run, from its losses.jsonl (the last line of a redone step wins)."""
    from megajepa.training.logs import step_log
    steps = step_log.read(os.path.join(run_dir, "losses.jsonl"))
    return len(steps), sum(r["flops"] for r in steps.values())


def steps_for(args, arms: dict, run: Run, overrides: list[str]) -> int:
    if not run.sized_by:
        return steps_for_epochs(overrides, epochs_of(args, run.fraction))
    ntp_steps, ntp_flops = trained_flops(run.deps()[0].dir(args.out))
    _, arm_flops = trained_flops(run.deps()[1].dir(args.out))
    return round(arm_flops / (ntp_flops / ntp_steps))


# ---------------------------------------------------------------- one run

def code_version() -> dict:
    def git(*a):
        return subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def claim(run_dir: str) -> bool:
    """Take the run's lock (a lock whose process is gone on this host is taken over)."""
    os.makedirs(run_dir, exist_ok=True)
    lock = os.path.join(run_dir, "study.lock")
    me = f"{socket.gethostname()} {os.getpid()}"
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
            f.write(me)
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


def train(args, run: Run, overrides: list[str], steps: int) -> float:
    """Train (or resume) the run to `steps`; the wall seconds of this attempt."""
    run_dir = run.dir(args.out)
    cmd = [sys.executable, os.path.join(REPO, "megajepa", "train.py"), "--config", BASE_CONFIG,
           f"output_dir={run_dir}", *overrides, f"train.max_steps={steps}", "resume=auto"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    with open(os.path.join(run_dir, "study_run.json"), "w") as f:
        json.dump({"command": cmd, "config": os.path.relpath(BASE_CONFIG, REPO), "arms_file": os.path.relpath(ARMS_FILE, REPO),
                   "arm": run.arm, "sized_by": run.sized_by, "steps": steps, "code": code_version()}, f, indent=2)
    t0 = time.time()
    with open(os.path.join(run_dir, "train.log"), "a") as logf:
        proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if proc.returncode:
        raise RuntimeError(f"training {run_dir} failed (exit {proc.returncode}); see {run_dir}/train.log")
    return time.time() - t0


def evaluate(args, run_dir: str) -> float:
    from megajepa.cli.analyze import main as analyze
    from megajepa.eval.generate import main as generate
    t0 = time.time()
    if generate(["--model", run_dir, "--input", args.test, "--output", os.path.join(run_dir, "predictions.jsonl"),
                 "--json", os.path.join(run_dir, "metrics.json"), "--metric", ",".join(METRICS),
                 "--max-examples", str(args.eval_examples)]):
        raise RuntimeError(f"evaluation of {run_dir} failed")
    if analyze(["--model", run_dir, "--input", args.test, "--out", os.path.join(run_dir, "analysis"),
                "--max-examples", str(args.analysis_examples), "--predictors", "1"]):
        raise RuntimeError(f"embedding analysis of {run_dir} failed")
    return time.time() - t0


def collapse_series(run_dir: str) -> dict[str, list]:
    from megajepa.training.logs.report import tensorboard_scalars
    tb = tensorboard_scalars(run_dir)
    return {tag: [[s, round(v, 5)] for s, v in zip(*tb[tag])] for tag in COLLAPSE_TAGS if tag in tb}


def do_run(args, arms: dict, run: Run, tokenizer: str) -> None:
    run_dir = run.dir(args.out)
    overrides = run_overrides(args, arms, run, tokenizer)
    steps = steps_for(args, arms, run, overrides)
    log(f"{run_dir}: {steps} steps")
    train_s = train(args, run, overrides, steps)
    eval_s = evaluate(args, run_dir)
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = {m: 100 * v["accuracy"] for m, v in json.load(f)["metrics"].items()}
    with open(os.path.join(run_dir, "analysis", "analysis.json")) as f:
        a = json.load(f)
    trained_steps, flops = trained_flops(run_dir)
    with open(os.path.join(run_dir, "study_run.json")) as f:
        record = json.load(f)
    record.update(fraction=run.fraction, label=run.label, budget=run.budget, seed=run.seed,
                  trained_steps=trained_steps, flops=flops, train_seconds_last_attempt=round(train_s, 1),
                  epochs=epochs_of(args, run.fraction), eval_seconds=round(eval_s, 1), metrics=metrics,
                  geometry={"erank_enc_code": a["effective_rank"]["enc_code"], "erank_pred": a["effective_rank"]["pred"],
                            "cos_pred_own_code": a["cos_pred_code"], "cos_pred_other_code": a["cos_pred_other_code"],
                            "lstsq_text_to_code": a["text_to_code"]["lstsq_error"],
                            "lstsq_relative": a["text_to_code"]["lstsq_relative"]},
                  collapse_over_training=collapse_series(run_dir), overrides=overrides)
    write_atomically(os.path.join(run_dir, "result.json"), json.dumps(record, indent=2))


def done(args, run: Run) -> bool:
    return os.path.isfile(os.path.join(run.dir(args.out), "result.json"))


def run_all(args, arms: dict, runs: list[Run]) -> list[str]:
    """Every run done here or by another process; the failures' messages."""
    tokenizer = tokenizer_file(args)
    pending, failed = list(runs), {}
    while pending:
        progress = False
        for run in list(pending):
            if done(args, run) or run in failed:
                pending.remove(run)
                continue
            if any(not done(args, d) for d in run.deps()):
                if any(d in failed for d in run.deps()):
                    failed[run] = f"{run.dir(args.out)}: a run it is sized from failed"
                    pending.remove(run)
                continue
            if not claim(run.dir(args.out)):
                continue
            try:
                t0 = time.time()
                do_run(args, arms, run, tokenizer)
                log(f"{run.dir(args.out)}: done in {time.time() - t0:.0f}s")
            except RuntimeError as e:
                failed[run] = str(e)
            finally:
                os.remove(os.path.join(run.dir(args.out), "study.lock"))
            pending.remove(run)
            progress = True
        if pending and not progress:
            time.sleep(args.wait)  # the rest are held by other processes or wait for runs they hold
    return list(failed.values())


# ---------------------------------------------------------------- summary

def load_results(args, runs: list[Run]) -> dict[Run, dict]:
    out = {}
    for run in runs:
        path = os.path.join(run.dir(args.out), "result.json")
        if os.path.isfile(path):
            with open(path) as f:
                out[run] = json.load(f)
    return out


def correct_per_example(run_dir: str, metric: str) -> list[bool]:
    from megajepa.eval.metrics import score
    with open(os.path.join(run_dir, "predictions.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [e["correct"] for e in score(metric, rows)["per_example"]]


def compare(args, results: dict, arm_runs: list[Run], base_runs: list[Run]) -> dict:
    """arm vs its baseline over the seeds both finished: per metric the paired tests."""
    base_by_seed = {r.seed: r for r in base_runs if r in results}
    pairs = [(r, base_by_seed[r.seed]) for r in arm_runs if r in results and r.seed in base_by_seed]
    out = {"seeds": [a.seed for a, _ in pairs]}
    for m in METRICS:
        diffs = [results[a]["metrics"][m] - results[b]["metrics"][m] for a, b in pairs]
        mine = sum((correct_per_example(a.dir(args.out), m) for a, _ in pairs), [])
        theirs = sum((correct_per_example(b.dir(args.out), m) for _, b in pairs), [])
        only_arm, only_base, p = mcnemar_p(mine, theirs)
        out[m] = {"seed_diffs": diffs, "mean_diff": statistics.mean(diffs) if diffs else None,
                  "t_test_greater": paired_t_greater(diffs), "sign_flip_p": sign_flip_p(diffs) if diffs else None,
                  "mcnemar": {"only_arm": only_arm, "only_baseline": only_base, "p": p}}
    return out


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "per_seed": values}


def summarize(args, arms: dict, runs: list[Run]) -> dict:
    results = load_results(args, runs)
    groups, tests = [], []
    keys = sorted({(r.fraction, r.label) for r in runs}, key=lambda k: (FRACTIONS.index(k[0]), k[1]))
    for fraction, label in keys:
        members = [r for r in runs if (r.fraction, r.label) == (fraction, label) and r in results]
        if not members:
            continue
        res = [results[r] for r in members]
        groups.append({"fraction": fraction, "label": label, "budget": members[0].budget,
                       "arm": members[0].arm, "sized_by": members[0].sized_by,
                       "seeds": [r.seed for r in members], "steps": [x["trained_steps"] for x in res],
                       "flops": [x["flops"] for x in res],
                       **{m: mean_std([x["metrics"][m] for x in res]) for m in METRICS},
                       "geometry": {k: statistics.mean(x["geometry"][k] for x in res) for k in res[0]["geometry"]}})
        if label == "ntp":
            continue
        if members[0].sized_by:  # the arm vs NTP at the arm's FLOPs: reported as arm - NTP, as the others
            arm_runs, base_runs = [Run(fraction, members[0].sized_by, r.seed) for r in members], members
            name, budget = members[0].sized_by, COMPUTE
        else:
            arm_runs, base_runs = members, [Run(fraction, "ntp", r.seed) for r in members]
            name, budget = label, EXAMPLES
        tests.append({"fraction": fraction, "arm": name, "budget": budget,
                      "baseline": base_runs[0].label, **compare(args, results, arm_runs, base_runs)})
    return {"experiment": "E1: NL-RX-SYNTH from random init (data-efficiency curve)",
            "base_config": os.path.relpath(BASE_CONFIG, REPO), "arms_file": os.path.relpath(ARMS_FILE, REPO),
            "arms": {a: arms[a].get("about", "") for a in arms}, "epochs_of_the_whole_file": args.epochs,
            "train_file": args.train, "test_file": args.test,
            "eval_examples": args.eval_examples or "all", "overrides": args.overrides,
            "planned_runs": len(runs), "finished_runs": len(results),
            "groups": groups, "tests": tests,
            "runs": [{"dir": os.path.relpath(r.dir(args.out), args.out), **results[r]} for r in runs if r in results]}


def plot(summary: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, budget in zip(axes, (EXAMPLES, COMPUTE)):
        labels = sorted({g["label"] for g in summary["groups"] if g["budget"] == budget or g["label"] == "ntp"})
        for i, label in enumerate(labels):
            gs = [g for g in summary["groups"] if g["label"] == label]
            xs = [float(Fraction(g["fraction"])) for g in gs]
            ax.errorbar(xs, [g["prefix"]["mean"] for g in gs], yerr=[g["prefix"]["std"] for g in gs], capsize=3,
                        marker="o", label=f"{label} (n={min(len(g['seeds']) for g in gs)})", color=f"C{i}")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="fraction of synth_train", title=f"equal {budget}")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("prefix accuracy on synth_test (%)")
    fig.suptitle("E1: NL-RX-SYNTH from scratch, mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(summary: dict) -> str:
    lines = ["| fraction | arm | seeds | steps | " + " | ".join(f"{m} %" for m in METRICS)
             + " | erank Enc(Code) | cos Pred own / other | lstsq Text→Code |", "|---" * (len(METRICS) + 7) + "|"]
    for g in summary["groups"]:
        geo = g["geometry"]
        lines.append(f"| {g['fraction']} | {g['label']} | {len(g['seeds'])} | {statistics.mean(g['steps']):.0f} | "
                     + " | ".join(f"{g[m]['mean']:.2f} ± {g[m]['std']:.2f}" for m in METRICS)
                     + f" | {geo['erank_enc_code']:.1f} | {geo['cos_pred_own_code']:.3f} / {geo['cos_pred_other_code']:.3f}"
                     f" | {geo['lstsq_text_to_code']:.3g} |")
    lines += ["", "| fraction | arm − baseline | budget | seeds | prefix: per-seed diff | mean | t-test p (one-tailed) "
              "| sign-flip p | McNemar arm/base, p |", "|---" * 9 + "|"]
    for t in summary["tests"]:
        pf = t["prefix"]
        tp = pf["t_test_greater"]["p"]
        lines.append(f"| {t['fraction']} | {t['arm']} − {t['baseline']} | {t['budget']} | {len(t['seeds'])} | "
                     f"{', '.join(f'{d:+.2f}' for d in pf['seed_diffs'])} | {pf['mean_diff']:+.2f} | "
                     f"{'—' if tp is None else f'{tp:.3g}'} | {pf['sign_flip_p']:.3g} | "
                     f"{pf['mcnemar']['only_arm']}/{pf['mcnemar']['only_baseline']}, {pf['mcnemar']['p']:.2g} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    for path in (args.train, args.test):
        if not os.path.isfile(path):
            print(f"error: {path} not found: the LLM-JEPA release's datasets/ files (README, 'Data')", file=sys.stderr)
            return 2
    with open(ARMS_FILE) as f:
        arms = yaml.safe_load(f)
    runs = plan(args, arms)
    os.makedirs(args.out, exist_ok=True)
    failed = [] if args.summarize else run_all(args, arms, runs)
    for message in failed:
        log(f"FAILED {message}")
    if args.no_summary:
        return 1 if failed else 0
    summary = summarize(args, arms, runs)
    summary["command"] = " ".join(["python", os.path.relpath(os.path.abspath(__file__), REPO)] + (argv or sys.argv[1:]))
    path = args.json or os.path.join(args.out, "study_v2.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomically(path, json.dumps(summary, indent=1))
    if summary["groups"]:
        plot(summary, os.path.join(args.out, "study_v2_e1.png"))
    table = markdown(summary)
    write_atomically(os.path.join(args.out, "study_v2.md"), table)
    print(table)
    log(f"{summary['finished_runs']} of {summary['planned_runs']} planned runs finished; summary {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
