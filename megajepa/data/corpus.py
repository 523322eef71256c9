"""Which records a run trains on: the weighted mixture of `data.sources`, or the embedded synthetic task."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from megajepa.data import machine_cache
from megajepa.data.examples import BadRecordReport, RecordError
from megajepa.data.mixture import mixture
from megajepa.data.records import BadRecord, example_views, record_views, view_specs


def synthetic_split(task: str, n_train: int, n_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    """The embedded task's (train, test); generated once per machine, then read from its cache (the
    default run's 20000 records take ~0.5 s to draw and ~0.03 s to read)."""
    from megajepa.data.synthetic import task_module
    name = synthetic_cache_name(task, n_train, n_test, seed)
    cached = machine_cache.read("synthetic", name)
    if cached is not None:
        train, test = json.loads(cached)
        return train, test
    train, test = task_module(task).split(n_train, n_test, seed)
    data = json.dumps([train, test])
    if json.loads(data) == [train, test]:  # cache only what JSON gives back unchanged
        machine_cache.write("synthetic", name, data.encode())
    return train, test


def synthetic_cache_name(task: str, n_train: int, n_test: int, seed: int) -> str:
    """The arguments and the source of every generator module: an edited generator never reads old records."""
    from megajepa.data import synthetic
    h = hashlib.sha256(json.dumps([task, n_train, n_test, seed]).encode())
    for source in sorted(Path(synthetic.__file__).parent.glob("*.py")):
        h.update(source.name.encode() + b"\0" + source.read_bytes())
    return h.hexdigest() + ".json"


def record_stream(cfg):
    """(source, record) pairs, one pass, constant memory for file sources. Unparsable lines come as
    records.Malformed, so tokenize_records reports them with every other bad record."""
    if cfg.data.sources:
        yield from mixture(cfg.data.sources, cfg.seed, cfg.data.mixture_stop)
        return
    train, _ = synthetic_split(cfg.data.task, cfg.data.num_train, cfg.data.num_test, cfg.seed)
    yield from ((f"synthetic:{i}", record) for i, record in enumerate(train, 1))


def record_texts(records, extra_fields=()) -> list[str]:
    """Every view string of records known to be good (the synthetic corpus), for training a tokenizer."""
    return [view for item in records for view in record_views(item[1] if isinstance(item, tuple) else item,
                                                               extra_fields)]


def train_records(cfg, report=None) -> list:
    """Every record of the run's training corpus, in memory (`report`: kept for older callers)."""
    return list(record_stream(cfg))


def prepare_corpus(cfg, records) -> tuple[BadRecordReport, list[str]]:
    """Validate (source, record) pairs before a tokenizer is trained on them: (the bad records' report, every
    view string of the usable ones). data.on_bad_record=error stops at the first bad record; a corpus with no
    usable record stops here, naming the first bad ones and the counts by reason."""
    report, texts = BadRecordReport(), []
    for source, record in records:
        try:
            stream, jepa = example_views(record, cfg.data.extra_view_fields, view_specs(cfg.data.views))
            texts += stream + jepa
        except BadRecord as e:
            if cfg.data.on_bad_record == "error":
                raise RecordError(f"{source}: {e}") from None
            report.add(source, str(e))
    if not texts:
        raise RecordError(no_usable_record(cfg, report))
    return report, texts


def no_usable_record(cfg, report: BadRecordReport) -> str:
    """Why a corpus gives nothing to train on: no records at all, or every one skipped (first few, by reason)."""
    where = ", ".join(str(s) for s in cfg.data.sources) or f"synthetic:{cfg.data.task}"
    if not report.total:
        return f"no records in data.sources ({where})"
    return (f"no usable record in data.sources ({where}): all {report.total} skipped; by reason: "
            f"{json.dumps(report.counts)}; first: {'; '.join(report.first[:5])}")


def check_kept(cfg, records_read: int, report: BadRecordReport, rows: int) -> None:
    """Refuse, before compute, a corpus that packs to no row or loses more than data.max_skip_fraction."""
    if not rows:
        raise RecordError(no_usable_record(cfg, report) + f"; raise data.seq_len={cfg.data.seq_len} if they are "
                          "too long")
    if report.total > cfg.data.max_skip_fraction * max(records_read, 1):
        raise RecordError(f"{report.total} of {records_read} records skipped, more than data.max_skip_fraction="
                          f"{cfg.data.max_skip_fraction:g}; by reason: {json.dumps(report.counts)}; first: "
                          f"{'; '.join(report.first[:5])}. Fix the records, raise data.seq_len="
                          f"{cfg.data.seq_len} if they are too long, or raise data.max_skip_fraction")


def summary_line(records_read: int, report: BadRecordReport, rows: int, tokens: int, seq_len: int,
                 by_file: dict, tokenizer_origin: str) -> str:
    """The one data-summary line every run logs at start."""
    return (f"data summary: records read {records_read}, kept {records_read - report.total}, skipped "
            f"{report.total} {json.dumps(report.counts)}; rows {rows}, tokens {tokens}, row fill "
            f"{tokens / max(rows * seq_len, 1):.1%}; per source: "
            f"{', '.join(f'{path} {n}' for path, n in by_file.items())}; tokenizer {tokenizer_origin}")


def records_by_file(records) -> dict[str, int]:
    """(source, record) pairs counted per file: "path:12" (line) or "path:row 12"."""
    counts: dict[str, int] = {}
    for source, _ in records:
        name = source.rsplit(":", 1)[0]
        counts[name] = counts.get(name, 0) + 1
    return counts
