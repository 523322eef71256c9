"""Build, then run: one function turns a RunConfig into tokenizer, data, model, objective and engine.

Nothing is patched onto an object after it is constructed; the order of the steps is the order in
which the run consumes randomness (seed, data, eval set, model init), so it is part of the numerics.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from megajepa import distributed
from megajepa.config import ConfigError, RunConfig
from megajepa.data import corpus, preprocess
from megajepa.data.examples import BadRecordReport, tokenize_records
from megajepa.data.records import view_specs
from megajepa.data.loader import DistributedRowLoader, PackedEpochs
from megajepa.data.packing import LayoutConfig, Specials
from megajepa.data.stp import StpSampling
from megajepa.data.tokenizer import Tokenizer, load_tokenizer
from megajepa.data.tokenizer.sentencepiece import (MODEL_FILE, corpus_fingerprint, load_or_train, machine_cached_model,
                                                   recorded_fingerprint)
from megajepa.eval.periodic import PeriodicEval
from megajepa.interop.hf_files import HFCheckpoint
from megajepa.interop.load_hf import load_hf_weights, model_config_for, run_tokenizer
from megajepa.model.architecture import ModelArchitecture
from megajepa.model.transformer import describe, resolve_model_config
from megajepa.objective.hybrid import HybridObjective
from megajepa.objective.losses import gather_across_ranks
from megajepa.objective.regularizers import autograd_all_reduce
from megajepa.training.checkpoint import locate, store, universal
from megajepa.training.compiling import compile_layers, use_flex_attention
from megajepa.training.engine import build_engine, build_model, resolve_ds_config

log = logging.getLogger("megajepa")


@dataclass
class Built:
    """Everything a Trainer runs, built from one RunConfig."""
    cfg: RunConfig
    rank: int
    world: int
    device: torch.device
    tokenizer: object  # data.tokenizer: sentencepiece or HF
    loader: DistributedRowLoader
    model_cfg: ModelArchitecture  # the resolved architecture (what checkpoints store)
    objective: HybridObjective
    engine: object  # deepspeed.DeepSpeedEngine wrapping the objective
    evaluator: PeriodicEval | None
    resume_from: tuple[str, str] | None  # (checkpoint root, tag), None for a fresh start


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resume_target(cfg: RunConfig) -> tuple[str, str] | None:
    """(checkpoint root, tag) this run resumes from, or None for a fresh start; a bad resume=PATH (not a
    checkpoint, incomplete, corrupt) is a ConfigError saying which, before the model is built."""
    try:
        target = locate.resume_target(cfg.resume, cfg.output_dir)
    except locate.CheckpointError as e:
        raise ConfigError(f"resume={cfg.resume}: {e}") from None
    if target is not None and cfg.resume != "auto":
        store.check_intact(os.path.join(*target))
    return target


def build(cfg: RunConfig, dist_info: distributed.DistInfo) -> Built:
    rank, world = dist_info.rank, dist_info.world_size
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    seed_everything(cfg.seed)  # same on every rank: identical init whatever the world size
    ds = resolve_ds_config(cfg, world)  # config errors before any data or model work
    resume_from = resume_target(cfg)
    if resume_from and universal.needs_universal(os.path.join(*resume_from), world):
        universal.enable_in(ds)  # written by another rank count: DeepSpeed re-partitions it on load

    hf = HFCheckpoint(cfg.model.init_from_hf) if cfg.model.init_from_hf else None
    tokenizer, rows = build_data(cfg, hf, rank)
    # the eval set and eval.* are checked before the model is built
    evaluator = PeriodicEval(cfg, tokenizer, rank, world) if cfg.eval.interval else None
    loader = DistributedRowLoader(rows, cfg.train.micro_batch_size, rank, world, cfg.train.grad_accum)

    if hf is not None:  # the checkpoint's architecture, vocabulary grown for the added tokens
        model_cfg = model_config_for(hf, tokenizer, cfg.model)
    else:
        model_cfg = resolve_model_config(cfg.model, tokenizer.vocab_size)
    if rank == 0:
        log.info(describe(model_cfg))
    resuming = resume_from is not None
    t = cfg.train
    model = build_model(model_cfg, ds, initialise=not (hf or resuming),
                        checkpoint_every=t.activation_checkpointing_every if t.activation_checkpointing else 0)
    if hf is not None and not resuming:  # a resumed run loads its own checkpoint instead
        load_hf_weights(model, hf, tokenizer.added_ids(), rank)
    if t.compile:
        compile_layers(model.layers)
    infonce_across_ranks = world > 1 and cfg.jepa.distance == "infonce"  # negatives from every rank
    objective = HybridObjective(model, cfg.jepa, use_flex=use_flex_attention(device),
                                gather_targets=gather_across_ranks if infonce_across_ranks else None,
                                compile_losses=t.compile, seed=cfg.seed,
                                reduce=autograd_all_reduce if world > 1 else None, stp=cfg.stp)
    engine = build_engine(objective, ds, t.weight_decay)
    return Built(cfg, rank, world, device, tokenizer, loader, model_cfg, objective, engine, evaluator, resume_from)


@contextlib.contextmanager
def cyclic_gc_paused():
    """Python's cyclic collector off while a corpus becomes examples, units and rows: its passes over a
    heap of long-lived, acyclic lists that only grows cost as much as the building (docs/benchmarks.md).
    On the way out everything built is frozen (gc.freeze): it lives for the whole run, and the collections
    after it would otherwise rescan it (~2 s of CPU before the first step of the default run)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def build_data(cfg: RunConfig, hf: HFCheckpoint | None, rank: int):
    """(tokenizer, row source): preprocessed shards (data.shards), else the corpus tokenized and packed
    here. Every bad record is reported (or raised, data.on_bad_record=error) before the model is built."""
    with cyclic_gc_paused():
        return _build_data(cfg, hf, rank)


def _build_data(cfg: RunConfig, hf: HFCheckpoint | None, rank: int):
    if cfg.data.shards:  # continued pretraining: the checkpoint's tokenizer, checked against the shards'
        tokenizer = run_tokenizer(cfg.model.init_from_hf, cfg.output_dir, rank) if hf else \
            load_tokenizer(preprocess.shard_tokenizer_path(cfg))
        return tokenizer, preprocess.open_checked(cfg, tokenizer)
    records = corpus.train_records(cfg)
    texts = corpus.prepare_corpus(cfg, records)[1]  # every record validated before a tokenizer is trained
    tokenizer, origin = (run_tokenizer(cfg.model.init_from_hf, cfg.output_dir, rank), "of model.init_from_hf") if hf \
        else corpus_tokenizer(cfg, texts, rank)
    report = BadRecordReport()
    # One view is a plain NTP document (any record format); two or more also get the JEPA term.
    examples = tokenize_records(records, tokenizer, cfg.data.on_bad_record, report,
                                with_prompt=cfg.data.system_prompt, extra_fields=cfg.data.extra_view_fields,
                                view_specs=view_specs(cfg.data.views))
    if not examples:
        corpus.check_kept(cfg, len(records), report, 0)
    epochs = PackedEpochs(examples, Specials.from_tokenizer(tokenizer), LayoutConfig.from_run(cfg),
                          cfg.data.seq_len, cfg.seed, cfg.jepa.example_dropout, cfg.jepa.lam > 0, cfg.data.on_bad_record,
                          report, stp=StpSampling.from_run(cfg))
    if report.total:
        log.warning("skipped %d bad record(s) %s; first: %s", report.total, report.counts, report.first[:5])
    rows = epochs.rows(0)
    corpus.check_kept(cfg, len(records), report, len(rows))
    if rank == 0:
        log.info(corpus.summary_line(len(records), report, len(rows), sum(r.n_real for r in rows), cfg.data.seq_len,
                                     corpus.records_by_file(records), origin))
    return tokenizer, epochs


def corpus_tokenizer(cfg: RunConfig, texts: list[str], rank: int) -> tuple[Tokenizer, str]:
    """(tokenizer, where it comes from): data.tokenizer, else a sentencepiece model trained on the corpus
    next to the run (by rank 0)."""
    if cfg.data.tokenizer:
        return load_tokenizer(cfg.data.tokenizer), f"from data.tokenizer={cfg.data.tokenizer}"
    cache = locate.sentencepiece_dir(cfg.output_dir)
    fingerprint = corpus_fingerprint(texts, cfg.data.vocab_size, seed=cfg.seed)
    reused = recorded_fingerprint(cache) == fingerprint and os.path.exists(os.path.join(cache, MODEL_FILE))
    copied = None if reused else machine_cached_model(fingerprint, seed=cfg.seed)
    if rank == 0:  # one rank trains, the others read the file it wrote
        os.makedirs(cache, exist_ok=True)
        load_or_train(cache, lambda: texts, cfg.data.vocab_size, fingerprint, seed=cfg.seed)
    distributed.barrier()
    origin = (f"reused from {cache}" if reused else f"copied from {copied} into {cache}" if copied
              else f"trained now, in {cache}")
    return load_tokenizer(os.path.join(cache, MODEL_FILE)), origin
