"""Synthetic multi-view tasks (regex, sql, arithmetic, paraphrase), deterministic by seed.

Every task module exposes `generate(n, seed) -> list[dict]` and
`split(n_train, n_test, seed) -> (train, test)`; records are `{"views": [...], "task": name}`.
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


def generate(task: str, n: int, seed: int, out_dir=None) -> list[dict]:
    """`n` records of `task`; tasks with side files (sql) write them under `out_dir`."""
    mod = task_module(task)
    if task in NEEDS_OUT_DIR:
        return mod.generate(n, seed, out_dir=out_dir)
    return mod.generate(n, seed)
