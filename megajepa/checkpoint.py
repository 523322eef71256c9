"""Checkpoints: DeepSpeed's engine state (model, optimizer, LR schedule) plus our client state (step,
data order, config) and every rank's RNG state, so a resumed run reproduces the uninterrupted one."""
from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

log = logging.getLogger(__name__)


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


def save(engine, output_dir: str, step: int, client_state: dict, rank: int) -> str:
    """Every rank calls this (ZeRO-3 shards are per rank). DeepSpeed writes `latest` after the tag."""
    root = checkpoint_dir(output_dir)
    tag = tag_for(step)
    os.makedirs(os.path.join(root, tag), exist_ok=True)
    torch.save(rng_state(), os.path.join(root, tag, f"rng_state_rank{rank}.pt"))
    engine.save_checkpoint(root, tag=tag, client_state=client_state)
    return os.path.join(root, tag)


def latest_tag(output_dir: str) -> str | None:
    path = os.path.join(checkpoint_dir(output_dir), "latest")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return f.read().strip() or None


def load(engine, root: str, tag: str, rank: int) -> dict:
    path, client_state = engine.load_checkpoint(root, tag=tag)
    if path is None:
        raise FileNotFoundError(f"checkpoint {os.path.join(root, tag)} could not be loaded")
    rng_file = os.path.join(root, tag, f"rng_state_rank{rank}.pt")
    if os.path.isfile(rng_file):
        set_rng_state(torch.load(rng_file, weights_only=False))
    else:
        log.warning("no RNG state for rank %d in %s; continuing with fresh RNG", rank, rng_file)
    return client_state or {}
