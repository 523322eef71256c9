"""The run report: `RUN_DIR/report.png` and `report.html` from losses.jsonl (every step) and the
TensorBoard events (logged intervals: throughput, collapse scalars, eval scores); and the end-of-run
summary. Plots need matplotlib (`pip install 'megajepa[plots]'`)."""
from __future__ import annotations

import argparse
import base64
import html
import importlib.util
import logging
import math
import os
import sys

from megajepa.training.logs import step_log

log = logging.getLogger("megajepa")


def tensorboard_scalars(run_dir: str) -> dict[str, tuple[list[int], list[float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    path = os.path.join(run_dir, "tensorboard")
    if not os.path.isdir(path):
        return {}
    acc = EventAccumulator(path, size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        by_step = {e.step: e.value for e in acc.Scalars(tag)}  # a resumed run's redone steps: the last wins
        out[tag] = (sorted(by_step), [by_step[s] for s in sorted(by_step)])
    return out


def _panels(steps: dict[int, dict], tb: dict) -> list[tuple[str, str, bool, dict]]:
    """(title, y label, log scale, {curve label: (x, y)}) for each panel that has data."""
    xs = sorted(steps)
    per_step = {k: (xs, [steps[s][k] for s in xs]) for k in ("loss", "lm", "jepa", "lr", "grad_norm")
                if xs and k in steps[xs[0]]}
    losses = {"total": per_step.get("loss"), "lm (NTP)": per_step.get("lm"), "jepa": per_step.get("jepa")}
    losses.update({tag.split("/", 1)[1]: tb[tag] for tag in tb
                   if tag.startswith("loss/") and tag not in ("loss/total", "loss/lm", "loss/jepa")})
    panels = [("Loss terms (per step)", "loss (nats / distance)", True, losses),
              ("Learning rate", "lr", False, {"lr": per_step.get("lr")}),
              ("Gradient norm (before clipping)", "L2 norm", True, {"grad_norm": per_step.get("grad_norm")}),
              ("Throughput", "tokens / s (all ranks)", False, {"tokens/s": tb.get("throughput/tokens_per_s")}),
              ("Collapse: effective rank", "effective rank", False,
               {"Enc(target)": tb.get("collapse/erank_enc"), "Pred": tb.get("collapse/erank_pred")}),
              ("Collapse: cosine of Pred to", "cosine", False,
               {"own target": tb.get("collapse/cos_pred_target"), "other targets": tb.get("collapse/cos_pred_other")}),
              ("In-training eval", "accuracy", False,
               {tag.split("/", 1)[1]: tb[tag] for tag in tb if tag.startswith("eval/")})]
    return [(t, y, lg, {k: v for k, v in c.items() if v and v[0]}) for t, y, lg, c in panels
            if any(v and v[0] for v in c.values())]


def make_report(run_dir: str) -> tuple[str, str] | None:
    """Write report.png and report.html; None (with a log line) without matplotlib or anything to plot."""
    if importlib.util.find_spec("matplotlib") is None:
        log.info("run report skipped: matplotlib is not installed (pip install 'megajepa[plots]')")
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses_path = os.path.join(run_dir, "losses.jsonl")
    steps = step_log.read(losses_path) if os.path.exists(losses_path) else {}
    panels = _panels(steps, tensorboard_scalars(run_dir))
    if not panels:  # a 0-step run (conversion only) logs nothing
        log.info("run report skipped: %s holds no losses.jsonl steps or TensorBoard scalars", run_dir)
        return None
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3.4 * rows), squeeze=False)
    for ax, (title, ylabel, logy, curves) in zip(axes.flat, panels):
        for label, (x, y) in curves.items():
            ax.plot(x, y, label=label, marker="o" if len(x) < 30 else None, markersize=3)
        if logy and all(v > 0 for _, (_, y) in curves.items() for v in y):
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"megajepa run: {os.path.abspath(run_dir)}")
    fig.tight_layout()
    png = os.path.join(run_dir, "report.png")
    fig.savefig(png, dpi=90)
    plt.close(fig)
    page = os.path.join(run_dir, "report.html")
    last = steps[max(steps)] if steps else {}
    rows_html = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in last.items())
    with open(png, "rb") as f:
        image = base64.b64encode(f.read()).decode()
    with open(page, "w") as f:
        f.write(f"<!doctype html><html><head><meta charset='utf-8'><title>megajepa report</title></head><body>"
                f"<h1>{html.escape(os.path.abspath(run_dir))}</h1><h2>Last step</h2><table border=1>{rows_html}"
                f"</table><h2>Curves</h2><img src='data:image/png;base64,{image}'></body></html>")
    return png, page


def summary(run_dir: str, step: int, last: dict, tokens_per_s: float | None, collapsed: bool,
            checkpoint: str | None, eval_scores: dict[str, float] | None, report: tuple[str, str] | None) -> str:
    """The end-of-run lines: what was trained, how it ended, where it is and what to run next."""
    terms = " ".join(f"{k}={last[k]:.4g}" for k in ("loss", "lm", "jepa") if k in last)
    lines = [f"run finished: {step} steps, final {terms}",
             f"  throughput: {tokens_per_s:.0f} tokens/s (last log interval)" if tokens_per_s else None,
             f"  skipped steps: {last.get('skipped_total', 0)}",
             f"  collapse: {'warning (an effective rank fell below jepa.collapse_warn_fraction, or Pred was as close to the other targets as to its own)' if collapsed else 'ok'}",
             "  eval: " + " ".join(f"{k.split('/', 1)[1]}={v:.3f}" for k, v in eval_scores.items())
             if eval_scores else None,
             f"  checkpoint: {checkpoint}",
             f"  tensorboard: tensorboard --logdir {os.path.join(run_dir, 'tensorboard')}",
             f"  report: {report[0]} {report[1]}" if report else None,
             "next:",
             f"  megajepa-convert-to-hf --checkpoint {run_dir} --output {run_dir}/hf",
             f"  megajepa-evaluate generate --model {run_dir}/hf --input TEST.jsonl --metric exact"]
    return "\n".join(line for line in lines if line is not None)


def main(argv=None) -> int:
    """`megajepa-report RUN_DIR` (and tools/report.py): write the report, print its paths."""
    p = argparse.ArgumentParser(description="Write RUN_DIR/report.png and report.html from losses.jsonl "
                                            "and the TensorBoard events.")
    p.add_argument("run_dir")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not os.path.isdir(args.run_dir):
        print(f"megajepa-report: error: {args.run_dir} is not a directory", file=sys.stderr)
        return 2
    paths = make_report(args.run_dir)
    if paths is None:
        return 1
    print("\n".join(paths))
    return 0
