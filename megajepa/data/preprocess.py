"""Tokenize and pack a run's corpus once into memory-mapped shards (tools/preprocess_data.py).

Records stream from the mixture in chunks; a process pool turns each chunk into packed rows with the
same `tokenize_records`, unit builder and `place` as the in-memory path (loss dropout by the same rule,
results in chunk order, so the output does not depend on the number of workers); the main process
reads records and appends the rows to shards. Rows are packed in stream order; training permutes
them per epoch.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import time

from megajepa.data import corpus
from megajepa.data.examples import BadRecordReport, RecordError
from megajepa.data.packing import LayoutConfig, Specials
from megajepa.data.records import view_specs
from megajepa.data.row_pool import RowPool, chunks
from megajepa.data.shards import ShardWriter, check_manifest, field_dtypes, read_manifest, write_manifest
from megajepa.data.tokenizer import load_tokenizer
from megajepa.data.tokenizer.sentencepiece import MODEL_FILE, corpus_fingerprint, load_or_train

CHUNK = 4096  # records per worker task; each chunk is packed on its own
HF_DIR = "tokenizer_hf"  # a transformers tokenizer stored with the shards
TOKENIZER_SAMPLE = 200_000  # records read to train a tokenizer when the run names none


def packing_signature(cfg) -> dict:
    """Everything that changes the rows: shards are usable only by runs with the same signature."""
    return {"seq_len": cfg.data.seq_len, **dataclasses.asdict(LayoutConfig.from_run(cfg)),
            "use_jepa": cfg.jepa.lam > 0, "jepa_dropout": cfg.jepa.example_dropout,
            "system_prompt": bool(getattr(cfg.data, "system_prompt", False)),
            "extra_view_fields": list(cfg.data.extra_view_fields),
            **({"views": list(cfg.data.views)} if cfg.data.views else {})}  # unset: older shard sets still match


def open_checked(cfg, tokenizer):
    """The run's shards (data.shards) after refusing any mismatch with its tokenizer or packing."""
    from megajepa.data.shards import ShardRows
    from megajepa.data.stp import StpSampling
    manifest = read_manifest(cfg.data.shards)
    # a layout key newer than the shards did not exist when they were packed: they were packed at its default
    manifest["packing"] = {**dataclasses.asdict(LayoutConfig()), **manifest["packing"]}
    check_manifest(manifest, cfg.data.shards, tokenizer.sha256(), packing_signature(cfg))
    skipped = manifest["counts"]["records_skipped"]
    if skipped and cfg.data.on_bad_record == "error":  # the run's policy holds for records skipped earlier too
        raise RecordError(f"data.on_bad_record=error, but the shards in {cfg.data.shards} were written skipping "
                          f"{skipped} bad record(s); first: {manifest['counts']['first_skipped'][0]}")
    return ShardRows(cfg.data.shards, cfg.seed, StpSampling.from_run(cfg))


def shard_tokenizer_path(cfg) -> str:
    """The tokenizer a shard-reading run uses: data.tokenizer, else the copy stored with the shards."""
    hf_copy = os.path.join(cfg.data.shards, HF_DIR)
    return cfg.data.tokenizer or (hf_copy if os.path.isdir(hf_copy) else os.path.join(cfg.data.shards, MODEL_FILE))


def _tokenizer(cfg, out_dir: str) -> str:
    """The run's tokenizer, copied next to the shards: the HF checkpoint's with our tokens added
    (model.init_from_hf), data.tokenizer (a sentencepiece file or a transformers directory), else a
    sentencepiece model trained on the first records of the mixture."""
    if cfg.model.init_from_hf or (cfg.data.tokenizer and os.path.isdir(cfg.data.tokenizer)):
        from megajepa.data.tokenizer.hf import HFTokenizer
        HFTokenizer(cfg.model.init_from_hf or cfg.data.tokenizer).save(os.path.join(out_dir, HF_DIR))
        return os.path.join(out_dir, HF_DIR)
    target = os.path.join(out_dir, MODEL_FILE)
    if cfg.data.tokenizer:
        if os.path.abspath(cfg.data.tokenizer) != os.path.abspath(target):
            shutil.copyfile(cfg.data.tokenizer, target)
        return target
    sample = list(itertools.islice(corpus.record_stream(cfg), TOKENIZER_SAMPLE))
    texts = corpus.prepare_corpus(cfg, sample)[1]  # validated before a tokenizer is trained on them
    load_or_train(out_dir, lambda: texts, cfg.data.vocab_size, corpus_fingerprint(texts, cfg.data.vocab_size,
                                                                                seed=cfg.seed), seed=cfg.seed)
    return target


def preprocess(cfg, out_dir: str, workers: int = 1, rows_per_shard: int = 8192, progress: bool = True,
               chunk_records: int = CHUNK) -> dict:
    """Writes shards + manifest to `out_dir`; returns the manifest (whose `counts` is the summary)."""
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, "manifest.json")):
        os.remove(os.path.join(out_dir, "manifest.json"))  # a half-rewritten set is never taken as whole
    tokenizer_path = _tokenizer(cfg, out_dir)
    tokenizer = load_tokenizer(tokenizer_path)
    start, main_cpu = time.perf_counter(), time.process_time()  # reading, tokenizing, packing, writing
    specials, signature = Specials.from_tokenizer(tokenizer), packing_signature(cfg)
    options = {"policy": cfg.data.on_bad_record, "system_prompt": signature["system_prompt"],
               "extra_fields": list(cfg.data.extra_view_fields), "view_specs": view_specs(cfg.data.views),
               "seed": cfg.seed, "dropout": cfg.jepa.example_dropout,
               "specials": specials, "layout": LayoutConfig.from_run(cfg), "use_jepa": signature["use_jepa"],
               "seq_len": cfg.data.seq_len, "chunk_records": chunk_records}
    report, counts, by_file = BadRecordReport(), {"records": 0, "examples": 0, "jepa_examples": 0}, {}
    writer = ShardWriter(out_dir, cfg.data.seq_len, rows_per_shard, field_dtypes(tokenizer.vocab_size, cfg.data.seq_len))
    with RowPool(workers, tokenizer_path, options) as packed:  # before the bar: no thread is forked
        bar = _progress(progress)
        for arrays, chunk_report, chunk_counts in packed(chunks(_counted(corpus.record_stream(cfg), by_file),
                                                                chunk_records)):
            for key, n in chunk_counts.items():
                counts[key] += n
            for reason, n in chunk_report.counts.items():
                report.counts[reason] = report.counts.get(reason, 0) + n
            report.first += chunk_report.first[:20 - len(report.first)]
            if arrays is not None:
                writer.add_arrays(arrays)
            if bar is not None:
                bar.update(0 if arrays is None else len(arrays["pair_counts"]))
                bar.set_postfix(records=counts["records"], refresh=False)
    if bar is not None:
        bar.close()
    shards = writer.close()
    try:
        corpus.check_kept(cfg, counts["records"], report, sum(s["rows"] for s in shards))
    except RecordError:
        writer.discard()
        raise
    elapsed, main_cpu = time.perf_counter() - start, time.process_time() - main_cpu
    rows, tokens = sum(s["rows"] for s in shards), sum(s["tokens"] for s in shards)
    summary = {"records_read": counts["records"], "records_by_file": by_file, "records_skipped": report.total, "skipped_by_reason": report.counts,
               "first_skipped": report.first, "examples": counts["examples"], "jepa_examples": counts["jepa_examples"],
               "rows": rows, "tokens": tokens, "labelled_tokens": sum(s["labelled_tokens"] for s in shards),
               "jepa_pairs": sum(s["pairs"] for s in shards),
               "fill": tokens / max(rows * cfg.data.seq_len, 1), "seconds": elapsed, "main_process_cpu_s": main_cpu,
               "tokens_per_s": tokens / max(elapsed, 1e-9), "workers": workers, "chunk_records": chunk_records}
    manifest = {"tokenizer": {"file": os.path.basename(tokenizer_path), "sha256": tokenizer.sha256(),
                              "vocab_size": tokenizer.vocab_size},
                "packing": signature, "seed": cfg.seed, "sources": cfg.data.sources or [f"synthetic:{cfg.data.task}"],
                "counts": summary, "shards": shards, "dtypes": writer.dtypes}
    write_manifest(out_dir, manifest)
    return manifest


def _counted(records, by_file: dict):
    """Pass (source, record) pairs through, counting them per file: the mixture as it was drawn."""
    for source, record in records:
        name = source.rsplit(":", 1)[0]  # "path:12" (line) or "path:row 12"
        by_file[name] = by_file.get(name, 0) + 1
        yield source, record


def _progress(enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(unit=" rows", desc="packing", dynamic_ncols=True, mininterval=1.0)
