"""Checkpoints: DeepSpeed's engine state (model, optimizer, LR schedule) plus our client state (step,
data order, config) and every rank's RNG state, so a resumed run reproduces the uninterrupted one.

Crash safety: a tag directory counts only once it holds a COMPLETE marker, written by rank 0 after
every rank has written and flushed its files; only then is `latest` replaced (os.replace, atomic) and
are checkpoints beyond the newest `keep_last` deleted. A kill at any moment therefore leaves `latest`
naming a complete checkpoint, and resume ignores a partial one.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import time
import zipfile

import numpy as np
import torch

from megajepa import distributed
from megajepa.training.checkpoint import universal

log = logging.getLogger(__name__)
COMPLETE = "COMPLETE"
_TAG = re.compile(r"step_(\d+)$")


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def is_complete(root: str, tag: str) -> bool:
    return os.path.isfile(os.path.join(root, tag, COMPLETE))


def complete_tags(root: str) -> list[str]:
    """Complete `step_N` tags under root, oldest first."""
    if not os.path.isdir(root):
        return []
    tags = [t for t in os.listdir(root) if _TAG.match(t) and is_complete(root, t)]
    return sorted(tags, key=lambda t: int(_TAG.match(t).group(1)))


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # readers see the old file or the new one, never half of either


def _fsync_share(tag_dir: str, rank: int, world: int) -> None:
    """Flush this rank's share of the tag's files to disk (close() alone survives a process kill, not a
    node crash)."""
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(tag_dir) for f in fs)
    for path in files[rank::world]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(engine, output_dir: str, step: int, client_state: dict, rank: int, keep_last: int | None = None) -> str:
    """Every rank calls this (ZeRO-3 shards are per rank); returns the tag directory once it is complete."""
    engine_io = getattr(engine, "checkpoint_engine", None)
    if engine_io is not None and engine_io.is_decoupled():  # its files land after save_checkpoint returns
        raise RuntimeError("an asynchronous (decoupled) DeepSpeed checkpoint engine is not supported: the COMPLETE "
                           "marker would precede the data; remove the checkpoint engine options from the DeepSpeed "
                           "config")
    root = checkpoint_dir(output_dir)
    tag = tag_for(step)
    tag_dir = os.path.join(root, tag)
    world = distributed.get_world_size()
    if rank == 0:
        os.makedirs(root, exist_ok=True)
        if os.path.isdir(tag_dir):  # a partial write of this step (or a re-save): start it clean
            shutil.rmtree(tag_dir)
    distributed.barrier()
    os.makedirs(tag_dir, exist_ok=True)
    torch.save(rng_state(), os.path.join(tag_dir, f"rng_state_rank{rank}.pt"))
    engine.save_checkpoint(root, tag=tag, client_state=client_state, save_latest=False)  # `latest` is ours
    _fsync_share(tag_dir, rank, world)
    distributed.barrier()  # every rank's files are on disk
    if rank == 0:
        _write_atomic(os.path.join(tag_dir, COMPLETE),
                      json.dumps({"step": step, "world_size": world, "time": time.time()}) + "\n")
        _write_atomic(os.path.join(root, "latest"), tag)
        _fsync_dir(root)
        if keep_last:
            prune(root, keep_last)
    distributed.barrier()  # nobody returns (or exits) before `latest` names the new checkpoint
    return tag_dir


def prune(root: str, keep_last: int) -> list[str]:
    """Delete complete checkpoints older than the newest `keep_last`, and partial ones older than the
    newest complete one (leftovers of a killed write). Returns the deleted tags."""
    complete = complete_tags(root)
    if not complete:
        return []
    newest = int(_TAG.match(complete[-1]).group(1))
    partial = [t for t in os.listdir(root) if _TAG.match(t) and not is_complete(root, t)
               and int(_TAG.match(t).group(1)) < newest]
    doomed = complete[:-keep_last] + partial
    for t in doomed:
        # the marker goes first: a kill mid-delete leaves a partial dir, never a "complete" broken one
        marker = os.path.join(root, t, COMPLETE)
        if os.path.exists(marker):
            os.remove(marker)
        shutil.rmtree(os.path.join(root, t), ignore_errors=True)
    if doomed:
        log.info("deleted old checkpoints %s (train.keep_last=%d)", doomed, keep_last)
    return doomed


def latest_tag(output_dir: str) -> str | None:
    """The tag `latest` names when it is complete, else the newest complete tag, else None."""
    root = checkpoint_dir(output_dir)
    path = os.path.join(root, "latest")
    named = None
    if os.path.isfile(path):
        with open(path) as f:
            named = f.read().strip() or None
    if named and is_complete(root, named):
        return named
    complete = complete_tags(root)
    if named:
        log.warning("%s names %r, which is not a complete checkpoint (no %s marker); using %s", path, named,
                    COMPLETE, complete[-1] if complete else "none")
    return complete[-1] if complete else None


def check_resumable(tag_dir: str) -> None:
    """Refuse resume=PATH before the model is built when PATH is not a checkpoint, an incomplete one or a
    corrupt one, saying which (ConfigError: exit 2)."""
    from megajepa.config import ConfigError
    files = os.listdir(tag_dir)
    if COMPLETE not in files and not any(f.endswith("_model_states.pt") for f in files):
        raise ConfigError(f"resume={tag_dir} is not a checkpoint (no {COMPLETE} marker, no DeepSpeed model "
                          "states): name a tag directory, e.g. OUTPUT_DIR/checkpoints/step_00000100")
    if COMPLETE not in files:
        raise ConfigError(f"resume={tag_dir} is an incomplete checkpoint (no {COMPLETE} marker: its write was "
                          f"interrupted); complete ones beside it: {complete_tags(os.path.dirname(tag_dir))}")
    try:
        with open(os.path.join(tag_dir, COMPLETE)) as f:
            world = json.load(f)["world_size"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"resume={tag_dir} is a corrupt checkpoint: unreadable {COMPLETE} marker ({e})") from None
    saved = universal.saved_world_size(tag_dir) or 0
    if saved != world:
        raise ConfigError(f"resume={tag_dir} is a corrupt checkpoint: written by {world} rank(s), holds {saved} "
                          "optimizer shard(s)")
    for name in sorted(f for f in files if f.endswith(".pt")):
        try:  # torch.save writes a zip: a truncated file has no readable central directory
            zipfile.ZipFile(os.path.join(tag_dir, name)).close()
        except (zipfile.BadZipFile, OSError) as e:
            raise ConfigError(f"resume={tag_dir} is a corrupt checkpoint: {name} is unreadable ({e})") from None


def load(engine, root: str, tag: str, rank: int) -> dict:
    if not is_complete(root, tag):
        raise FileNotFoundError(f"checkpoint {os.path.join(root, tag)} is incomplete (no {COMPLETE} marker: its "
                                f"write was interrupted); resume from a complete one: {complete_tags(root)}")
    tag_dir = os.path.join(root, tag)
    if universal.needs_universal(tag_dir, engine.dp_world_size):  # written by another rank count
        if not engine.load_universal_checkpoint():
            raise ValueError(f"checkpoint {tag_dir} was written by {universal.saved_world_size(tag_dir)} ranks, "
                             f"this run has {engine.dp_world_size}: build the engine with universal.enable_in")
        path, client_state = engine.load_checkpoint(tag_dir, tag=os.path.basename(universal.convert(tag_dir, rank)))
    else:
        path, client_state = engine.load_checkpoint(root, tag=tag)
    if path is None:
        raise FileNotFoundError(f"checkpoint {os.path.join(root, tag)} could not be loaded")
    rng_file = os.path.join(root, tag, f"rng_state_rank{rank}.pt")
    if os.path.isfile(rng_file):
        set_rng_state(torch.load(rng_file, weights_only=False))
    else:
        log.warning("no RNG state for rank %d in %s; continuing with fresh RNG", rank, rng_file)
    return client_state or {}
