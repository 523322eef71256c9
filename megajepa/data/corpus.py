"""Which records a run trains on: the weighted mixture of `data.sources`, or the embedded synthetic task."""
from __future__ import annotations

from megajepa.data.mixture import mixture


def synthetic_split(task: str, n_train: int, n_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    from megajepa.data.synthetic import task_module
    return task_module(task).split(n_train, n_test, seed)


def record_stream(cfg):
    """(source, record) pairs, one pass, constant memory for file sources. Unparsable lines come as
    records.Malformed, so tokenize_records reports them with every other bad record."""
    if cfg.data.sources:
        yield from mixture(cfg.data.sources, cfg.seed, cfg.data.mixture_stop)
        return
    train, _ = synthetic_split(cfg.data.task, cfg.data.num_train, cfg.data.num_test, cfg.seed)
    yield from ((f"synthetic:{i}", record) for i, record in enumerate(train, 1))


def train_records(cfg, report=None) -> list:
    """Every record of the run's training corpus, in memory (`report`: kept for older callers)."""
    return list(record_stream(cfg))


def record_texts(records, extra_fields=()) -> list[str]:
    """Every view string, for training a tokenizer."""
    from megajepa.data.records import BadRecord, record_views
    texts = []
    for item in records:
        record = item[1] if isinstance(item, tuple) else item
        try:
            texts += record_views(record, extra_fields)
        except BadRecord:
            continue
    return texts
