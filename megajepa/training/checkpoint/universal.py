"""Resume on another rank count through DeepSpeed's universal checkpoint.

ZeRO-3 shards the fp32 weights and Adam moments per data-parallel rank, so a checkpoint written by N
ranks cannot be loaded as is by M != N. DeepSpeed's `ds_to_universal` rewrites it once as one file per
parameter and state (fp32, exp_avg, exp_avg_sq) that any rank count re-partitions on load
(`"checkpoint": {"load_universal": true}`). The conversion goes into `<tag>/universal/`, beside the
original, and is reused by later resumes. The data order continues on any rank count on its own
(`data.loader`); each rank's RNG state exists only for the old ranks, so new ranks start fresh.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil

from megajepa import distributed
from megajepa.training.checkpoint.locate import optimizer_shards

log = logging.getLogger(__name__)
UNIVERSAL = "universal"
_DONE = "CONVERTED"


def saved_world_size(tag_dir: str) -> int | None:
    """Data-parallel ranks that wrote this ZeRO checkpoint (one optimizer shard each)."""
    return len(optimizer_shards(tag_dir)) or None  # None: checkpoint.load names the missing checkpoint


def needs_universal(tag_dir: str, world_size: int) -> bool:
    saved = saved_world_size(tag_dir)
    return saved is not None and saved != world_size


def enable_in(ds_config: dict) -> None:
    """DeepSpeed reads the switch from its config, so it is set before the engine is built."""
    ds_config.setdefault("checkpoint", {})["load_universal"] = True


def convert(tag_dir: str, rank: int) -> str:
    """Rank 0 writes `<tag_dir>/universal` (atomically: a temporary folder renamed when done); every rank
    waits for it and gets its path. An existing complete conversion is reused."""
    out = os.path.join(tag_dir, UNIVERSAL)
    if rank == 0 and not os.path.isfile(os.path.join(out, _DONE)):
        from deepspeed.checkpoint import ds_to_universal

        log.info("%s was written by %d ranks: converting it to a universal checkpoint for this run's rank count",
                 tag_dir, saved_world_size(tag_dir))
        tmp = out + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        ds_to_universal.main(argparse.Namespace(
            input_folder=tag_dir, output_folder=tmp, num_extract_workers=1, num_merge_workers=1,
            keep_temp_folder=False, strict=True, inject_missing_state=False))
        open(os.path.join(tmp, _DONE), "w").close()
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
        stray = os.path.join(tag_dir, "latest_universal")  # ds_to_universal names the tmp folder there
        if os.path.isfile(stray):
            os.remove(stray)
    distributed.barrier()
    return out
