"""Which records a run trains on: the embedded synthetic corpus by default, or JSON-lines files."""
from __future__ import annotations

import json

from megajepa.data.examples import RecordError


def synthetic_split(task: str, n_train: int, n_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    from megajepa.data.synthetic import task_module
    return task_module(task).split(n_train, n_test, seed)


def read_jsonl(path: str, policy: str, report) -> list[tuple[str, dict]]:
    """(source, record) pairs; bad JSON is reported with file and line (or raised under `error`)."""
    out = []
    try:
        f = open(path, "rb")
    except OSError as e:
        raise RecordError(f"cannot read data source {path}: {e.strerror}") from None
    with f:
        for line_no, raw in enumerate(f, 1):
            source = f"{path}:{line_no}"
            if not raw.strip():
                continue
            try:
                out.append((source, json.loads(raw.decode("utf-8"))))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                reason = "invalid UTF-8" if isinstance(e, UnicodeDecodeError) else f"bad JSON ({e.msg})"
                if policy == "error":
                    raise RecordError(f"{source}: {reason}") from None
                report.add(source, reason.split(" (")[0])
    return out


def train_records(cfg, report) -> list:
    """Records of the run's training corpus: `data.sources` paths, else the synthetic task."""
    if cfg.data.sources:
        records = []
        for source in cfg.data.sources:
            path = source["path"] if isinstance(source, dict) else source
            records += read_jsonl(path, cfg.data.on_bad_record, report)
        return records
    train, _ = synthetic_split(cfg.data.task, cfg.data.num_train, cfg.data.num_test, cfg.seed)
    return train


def record_texts(records) -> list[str]:
    """Every view string, for training a tokenizer."""
    from megajepa.data.records import BadRecord, record_views
    texts = []
    for item in records:
        record = item[1] if isinstance(item, tuple) else item
        try:
            texts += record_views(record)
        except BadRecord:
            continue
    return texts
