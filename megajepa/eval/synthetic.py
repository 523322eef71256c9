"""Each synthetic task's evaluator, for the evaluation code: generated Code views are scored against the
records' own with megajepa.eval.metrics; paraphrase groups (no Code view) are scored by retrieval.

  regex       language equality of the regex DSL (views[1])
  sql         execution result over the record's sqlite database (db_path, relative to base_dir)
  arithmetic  the final answer after `####`
  paraphrase  top-1 retrieval: each view's nearest other view (cosine of its embedding) is of its group
"""
from __future__ import annotations

import numpy as np

from megajepa.eval.metrics import score

METRIC = {"regex": "regex", "sql": "sql", "arithmetic": "numeric"}


def score_task(task: str, records: list[dict], predictions: list[str], base_dir: str = ".", **opts) -> dict:
    """metrics.score over (prediction, the record's Code view); `records` as the generator wrote them."""
    if task not in METRIC:
        raise ValueError(f"task {task!r} has no generation metric ({', '.join(METRIC)}); paraphrase groups are "
                         "scored with paraphrase_retrieval")
    if len(records) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(records)} records")
    rows = [{"prediction": p, "reference": r["views"][1], **({"db_path": r["db_path"]} if task == "sql" else {})}
            for r, p in zip(records, predictions)]
    return score(METRIC[task], rows, **({"base_dir": base_dir} if task == "sql" else {}), **opts)


def paraphrase_retrieval(embeddings: list) -> dict:
    """`embeddings[g]`: [n_views_g, D] of group g. Accuracy of each view's nearest neighbour (cosine, itself
    excluded) being in its own group; chance is about (mean group size - 1) / (all views - 1)."""
    groups = np.concatenate([np.full(len(e), g) for g, e in enumerate(embeddings)])
    x = np.concatenate([np.asarray(e, dtype=np.float64) for e in embeddings])
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    hits = groups[sim.argmax(axis=1)] == groups
    sizes = np.bincount(groups)
    return {"metric": "paraphrase_retrieval", "n": int(len(groups)), "correct": int(hits.sum()),
            "accuracy": float(hits.mean()), "chance": float(((sizes[groups] - 1) / (len(groups) - 1)).mean())}
