"""Where a megajepa checkpoint is and what it holds: run dir, tag, client state, weights, tokenizer.

The one locator used by resume (training/build.py), evaluation (eval/load.py) and export
(interop/export.py), so they accept the same paths and fail with the same messages. It imports no
training loop, no checkpoint writer and (until the weights are read) no DeepSpeed, so evaluation can
use it alone.

On disk a run directory holds `checkpoints/<tag>/` (DeepSpeed's files, rank 0's carrying our client
state) and `checkpoints/latest`; a tag counts only once the writer has put its COMPLETE marker in it.
"""
from __future__ import annotations

import glob
import logging
import os
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)
COMPLETE = "COMPLETE"
LATEST = "latest"
_TAG = re.compile(r"step_(\d+)$")
# the engine wraps HybridObjective, whose `model` is the Transformer: DeepSpeed's names carry this prefix
OBJECTIVE_PREFIX = "model."
# one ZeRO optimizer shard per data-parallel rank; DeepSpeed prefixes a bf16 run's with `bf16_`
_OPTIMIZER_SHARD = re.compile(r"(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_00_optim_states\.pt$")


class CheckpointError(ValueError):
    """A checkpoint path that is missing, incomplete or inconsistent; the message names the path."""


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def hf_tokenizer_dir(output_dir: str) -> str:
    """Where a continued-pretraining run keeps the checkpoint's tokenizer with our tokens added."""
    return os.path.join(output_dir, "tokenizer_hf")


def sentencepiece_dir(output_dir: str) -> str:
    """Where a run trains its own sentencepiece model (`tokenizer.model`)."""
    return os.path.join(output_dir, "tokenizer")


def is_complete(root: str, tag: str) -> bool:
    return os.path.isfile(os.path.join(root, tag, COMPLETE))


def step_tags(root: str) -> list[str]:
    """Every `step_N` tag directory under root, complete or not, oldest first."""
    if not os.path.isdir(root):
        return []
    return sorted((t for t in os.listdir(root) if _TAG.match(t)), key=lambda t: int(_TAG.match(t).group(1)))


def complete_tags(root: str) -> list[str]:
    """Complete `step_N` tags under root, oldest first."""
    return [t for t in step_tags(root) if is_complete(root, t)]


def latest_tag(root: str) -> str | None:
    """The tag `root/latest` names when it is complete, else the newest complete tag, else None."""
    path = os.path.join(root, LATEST)
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


def optimizer_shards(tag_dir: str) -> dict[int, str]:
    """data-parallel rank -> the file name of its ZeRO optimizer shard in a tag directory."""
    names = os.listdir(tag_dir) if os.path.isdir(tag_dir) else []
    return {int(m.group(1)): name for name in names if (m := _OPTIMIZER_SHARD.fullmatch(name))}


def _has_model_states(path: str) -> bool:
    return bool(glob.glob(os.path.join(path, "*_model_states.pt")))


def find_checkpoint(path: str, tag: str | None = None) -> tuple[str, str]:
    """(checkpoints root, tag) from a run directory, its checkpoints directory, one tag directory or the
    `latest` file; `tag` picks one, the default is the newest complete one. The tag must be complete."""
    path = os.path.abspath(path)
    if os.path.basename(path) == LATEST and os.path.isfile(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if _has_model_states(path):  # a tag directory
        root, found = os.path.split(path)
        if tag and tag != found:
            raise CheckpointError(f"{path} is checkpoint {found!r}, but tag {tag!r} was asked for")
        tag = found
    else:
        is_root = os.path.isfile(os.path.join(path, LATEST)) or glob.glob(os.path.join(path, "*", "*_model_states.pt"))
        root = path if is_root else checkpoint_dir(path)
        tag = tag or latest_tag(root)
        if tag is None:
            raise CheckpointError(f"{path} is not a checkpoint (no complete checkpoint under "
                                  f"{os.path.basename(root)}/, no *_model_states.pt)")
        if not _has_model_states(os.path.join(root, tag)):
            raise CheckpointError(f"{os.path.join(root, tag)}: no such checkpoint (available tags: "
                                  f"{step_tags(root) or 'none'})")
    if not is_complete(root, tag):  # its write was interrupted: some rank's files may be stale
        raise CheckpointError(f"{os.path.join(root, tag)} is incomplete (no {COMPLETE} marker); its write was "
                              f"interrupted. Complete checkpoints: {complete_tags(root) or 'none'}")
    return root, tag


def resume_target(resume: str, output_dir: str) -> tuple[str, str] | None:
    """(checkpoints root, tag) a run resumes from: `none` -> None; `auto` -> the newest complete checkpoint
    in output_dir (None when there is none yet); else any path find_checkpoint takes."""
    if resume == "none":
        return None
    if resume == "auto":
        tag = latest_tag(checkpoint_dir(output_dir))
        return None if tag is None else (checkpoint_dir(output_dir), tag)
    return find_checkpoint(resume)


@dataclass
class SavedCheckpoint:
    """One complete tag: where it is and rank 0's model-state file (DeepSpeed's bookkeeping plus the
    trainer's client state: model_config, tokenizer, config)."""
    root: str
    tag: str
    file: str
    state: dict

    @property
    def path(self) -> str:
        return os.path.join(self.root, self.tag)

    def model_config(self):
        """The ModelArchitecture it was trained with (strictly read: model/architecture.py)."""
        from megajepa.model.architecture import ModelArchitecture

        try:
            return ModelArchitecture.from_saved(dict(self.state["model_config"]), self.file)
        except (TypeError, ValueError) as e:  # TypeError: a size missing
            raise CheckpointError(str(e)) from None

    def run_config(self) -> dict | None:
        """The training run's config as it was saved (None when the writer stored none)."""
        return self.state.get("config")

    def tokenizer(self, override: str | None = None) -> str:
        """The run's tokenizer path: `override`, else the path recorded in the checkpoint, else the run
        directory's own copy (a moved run): `tokenizer_hf/` (continued pretraining) or `tokenizer/`."""
        run_dir = os.path.dirname(self.root)
        candidates = [override] if override else [self.state.get("tokenizer"), hf_tokenizer_dir(run_dir),
                                                  os.path.join(sentencepiece_dir(run_dir), "tokenizer.model")]
        for path in candidates:
            if path and os.path.exists(path):
                return path
        raise CheckpointError(f"tokenizer not found (tried {', '.join(str(c) for c in candidates if c)}); "
                              "pass --tokenizer PATH")

    def weights(self, lazy: bool = False) -> dict:
        """The Transformer's fp32 state dict, merged from every rank's ZeRO shard by DeepSpeed (`lazy`:
        each tensor is read from the memory-mapped rank files when it is used)."""
        from deepspeed.utils.zero_to_fp32 import (
            get_fp32_state_dict_from_zero_checkpoint,
        )

        try:
            merged = get_fp32_state_dict_from_zero_checkpoint(self.root, tag=self.tag, lazy_mode=lazy)
        except (ValueError, FileNotFoundError, KeyError) as e:
            raise CheckpointError(f"{self.path}: DeepSpeed cannot consolidate it ({e})") from None
        return {name.removeprefix(OBJECTIVE_PREFIX): t for name, t in merged.items()}


def open_checkpoint(path: str, tag: str | None = None) -> SavedCheckpoint:
    """find_checkpoint, then rank 0's model-state file, after checking every rank's optimizer shard is there."""
    import torch

    root, tag = find_checkpoint(path, tag)
    tag_dir = os.path.join(root, tag)
    files = sorted(glob.glob(os.path.join(tag_dir, "*mp_rank_00_model_states.pt")))
    if not files:
        raise CheckpointError(f"{tag_dir}: no *mp_rank_00_model_states.pt")
    try:
        state = torch.load(files[0], map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(f"{files[0]}: cannot be read ({e})") from None
    if "model_config" not in state:
        raise CheckpointError(f"{files[0]}: no 'model_config' in the client state (not written by megajepa)")
    world = int(state.get("dp_world_size", 1))
    shards = optimizer_shards(tag_dir)
    missing = [str(r) for r in range(world) if r not in shards]
    if missing:
        raise CheckpointError(f"{tag_dir}: written by {world} ranks but the optimizer shard(s) of rank(s) "
                              f"{', '.join(missing)} are missing (*zero_pp_rank_<rank>_mp_rank_00_optim_states.pt)")
    return SavedCheckpoint(root, tag, files[0], state)
