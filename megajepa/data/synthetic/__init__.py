"""Synthetic multi-view tasks (regex, sql, arithmetic, paraphrase), deterministic by seed.

Every task module exposes `generate(n, seed) -> list[dict]` and
`split(n_train, n_test, seed) -> (train, test)`; records are `{"views": [...], "task": name}`.
Each task's evaluator: `megajepa.eval.synthetic` (score_task, paraphrase_retrieval).
"""
from __future__ import annotations

import importlib

# name -> module path; imported lazily so one task's import cost is not paid by the others.
TASKS = {
    "regex": "megajepa.data.synthetic.regex",
    "sql": "megajepa.data.synthetic.sql",
    "arithmetic": "megajepa.data.synthetic.arithmetic",
    "paraphrase": "megajepa.data.synthetic.paraphrase",
}
# Tasks whose records point at files (sqlite databases) that must be written next to them.
NEEDS_OUT_DIR = {"sql"}


def task_module(task: str):
    """The module implementing `task`; unknown names list the valid ones."""
    if task not in TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; choose one of {sorted(TASKS)}")
    return importlib.import_module(TASKS[task])


def _kwargs(task: str, out_dir, options: dict) -> dict:
    # Side files only for tasks that have them; task options (paraphrase n_views) pass through.
    return {**options, **({"out_dir": out_dir} if task in NEEDS_OUT_DIR else {})}


def generate(task: str, n: int, seed: int, out_dir=None, **options) -> list[dict]:
    """`n` records of `task`; tasks with side files (sql) write them under `out_dir`."""
    return task_module(task).generate(n, seed, **_kwargs(task, out_dir, options))


def split(task: str, n_train: int, n_test: int, seed: int, out_dir=None, **options):
    """(train, test) of `task` sharing no view (and, for paraphrase, no meaning)."""
    return task_module(task).split(n_train, n_test, seed, **_kwargs(task, out_dir, options))
