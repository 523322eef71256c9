"""A megajepa (DeepSpeed ZeRO) checkpoint -> a transformers model directory.

Consolidation is DeepSpeed's own (`get_fp32_state_dict_from_zero_checkpoint`, lazy: tensors are merged
from the memory-mapped rank files one shard at a time). Everything is validated before anything is
written, and the output is assembled in a temporary sibling directory renamed into place at the end,
so a failure never leaves a half-written `--output`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import shutil
import tempfile

import torch

from megajepa.config import ModelConfig
from megajepa.data import layout
from megajepa.data.tokenizer.hf import HFTokenizer, export_tokenizer, load_tokenizer
from megajepa.interop.adapter import HEAD, architecture_for, to_hf_config
from megajepa.interop.hf_files import CheckpointError, parse_size, write_safetensors
from megajepa.training.checkpoint import store as checkpoint

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PREFIX = "model."  # the engine wraps HybridObjective, whose `model` is the Transformer


def find_checkpoint(path: str, tag: str | None = None) -> tuple[str, str]:
    """(checkpoints root, tag) from a run directory, its `checkpoints/` directory, a tag directory or the
    `latest` file; `tag` picks one, the default is the latest complete one."""
    path = os.path.abspath(path)
    if os.path.basename(path) == "latest" and os.path.isfile(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if glob.glob(os.path.join(path, "*_model_states.pt")):  # a tag directory
        root, found = os.path.split(path)
        if tag and tag != found:
            raise CheckpointError(f"{path} is checkpoint {found!r}, but --tag {tag!r} was asked for")
        _check_complete(root, found)
        return root, found
    is_root = os.path.isfile(os.path.join(path, "latest")) or glob.glob(os.path.join(path, "*", "*_model_states.pt"))
    root = path if is_root else os.path.join(path, "checkpoints")
    if tag is None:
        tag = checkpoint.latest_tag(os.path.dirname(root)) if os.path.basename(root) == "checkpoints" else None
        if tag is None and os.path.isfile(os.path.join(root, "latest")):
            with open(os.path.join(root, "latest")) as f:
                tag = f.read().strip()
        if tag is None:
            raise CheckpointError(f"{path}: not a megajepa checkpoint (no complete checkpoint under checkpoints/, "
                                  "no latest file, no *_model_states.pt)")
    if not glob.glob(os.path.join(root, tag, "*_model_states.pt")):
        found = glob.glob(os.path.join(root, "*", "*_model_states.pt"))
        tags = sorted({os.path.basename(os.path.dirname(p)) for p in found})
        raise CheckpointError(f"{os.path.join(root, tag)}: no such checkpoint (available tags: {tags or 'none'})")
    _check_complete(root, tag)
    return root, tag


def _check_complete(root: str, tag: str) -> None:
    if not checkpoint.is_complete(root, tag):  # its write was interrupted: some rank's files may be stale
        raise CheckpointError(f"{os.path.join(root, tag)} is incomplete (no {checkpoint.COMPLETE} marker); complete "
                              f"checkpoints: {checkpoint.complete_tags(root) or 'none'}")


def read_client_state(tag_dir: str) -> dict:
    """Rank 0's model-state file: DeepSpeed's bookkeeping plus our client state (model_config, tokenizer)."""
    files = sorted(glob.glob(os.path.join(tag_dir, "*mp_rank_00_model_states.pt")))
    try:
        state = torch.load(files[0], map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(f"{files[0]}: cannot be read ({e})") from None
    if "model_config" not in state:
        raise CheckpointError(f"{files[0]}: no 'model_config' in the client state (not written by megajepa)")
    world = int(state.get("dp_world_size", 1))
    missing = [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(world)
               if not os.path.isfile(os.path.join(tag_dir, f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt"))]
    if missing:
        raise CheckpointError(f"{tag_dir}: written by {world} ranks but shard(s) {', '.join(missing)} are missing")
    return state


def resolve_tokenizer(state: dict, root: str, override: str | None):
    """The run's tokenizer: --tokenizer, else the path in the checkpoint, else the run directory's copy."""
    candidates = [override] if override else [state.get("tokenizer"),
                                              os.path.join(os.path.dirname(root), "tokenizer_hf"),
                                              os.path.join(os.path.dirname(root), "tokenizer", "tokenizer.model")]
    for path in candidates:
        if path and os.path.exists(path):
            return load_tokenizer(path)
    raise CheckpointError(f"tokenizer not found (tried {', '.join(str(c) for c in candidates if c)}); "
                          "pass --tokenizer PATH")


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple]:
    from megajepa.model.transformer import Transformer
    with torch.device("meta"):
        model = Transformer(cfg)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def _output_ready(output: str, overwrite: bool) -> None:
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)) and not overwrite:
        raise CheckpointError(f"{output} already exists and is not empty; pass --overwrite to replace it")


@contextlib.contextmanager
def staged_output(output: str, overwrite: bool):
    """Yield a temporary directory next to `output`; on success it replaces `output`, on failure it goes."""
    output = os.path.abspath(output)
    _output_ready(output, overwrite)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.tmp-", dir=os.path.dirname(output))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    umask = os.umask(0)
    os.umask(umask)
    for path in [tmp] + [os.path.join(tmp, f) for f in os.listdir(tmp)]:  # mkdtemp makes them private
        os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)
    if os.path.isdir(output):
        shutil.rmtree(output)
    elif os.path.exists(output):
        os.unlink(output)
    os.replace(tmp, output)


def convert_to_hf(checkpoint: str, output: str, tag: str | None = None, dtype: str = "fp32",
                  tokenizer: str | None = None, chat_template: str | None = None, overwrite: bool = False,
                  max_shard_size: str = "5GB") -> dict:
    """Write `output` as a transformers model directory; returns a summary (architecture, tag, ...)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import GenerationConfig

    if dtype not in DTYPES:
        raise CheckpointError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    _output_ready(os.path.abspath(output), overwrite)  # fail before the expensive part
    root, tag = find_checkpoint(checkpoint, tag)
    state = read_client_state(os.path.join(root, tag))
    known = {f.name for f in dataclasses.fields(ModelConfig)}  # a checkpoint from an older/newer megajepa
    cfg = ModelConfig(**{k: v for k, v in state["model_config"].items() if k in known})
    tok = resolve_tokenizer(state, root, tokenizer)
    if tok.vocab_size > cfg.vocab_size:
        raise CheckpointError(f"tokenizer {tok.path} has {tok.vocab_size} ids but the model's embedding has "
                              f"{cfg.vocab_size} rows: this tokenizer is not the one the run trained with")
    if chat_template is None and not isinstance(tok, HFTokenizer):  # an HF tokenizer keeps its own template
        chat_template = layout.chat_template(bool((state.get("config") or {}).get("data", {}).get("system_prompt")))
    try:
        lazy = get_fp32_state_dict_from_zero_checkpoint(root, tag=tag, lazy_mode=True)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise CheckpointError(f"{os.path.join(root, tag)}: DeepSpeed cannot consolidate it ({e})") from None
    ours = {name[len(PREFIX):] if name.startswith(PREFIX) else name: t for name, t in lazy.items()}
    shapes = expected_shapes(cfg)
    missing, unexpected = sorted(set(shapes) - set(ours)), sorted(set(ours) - set(shapes))
    if missing or unexpected:
        raise CheckpointError(f"{os.path.join(root, tag)}: parameters do not match model_config; missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]}")
    for name, t in ours.items():
        if tuple(t.shape) != shapes[name]:
            raise CheckpointError(f"{os.path.join(root, tag)}: {name} has shape {tuple(t.shape)}, model_config "
                                  f"says {shapes[name]}")
    hf_names = {(name if name == HEAD else "model." + name): name for name in shapes}
    hf_config = to_hf_config(cfg, bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id)
    hf_config.dtype = DTYPES[dtype]
    with staged_output(output, overwrite) as tmp:
        hf_config.save_pretrained(tmp)
        GenerationConfig.from_model_config(hf_config).save_pretrained(tmp)
        write_safetensors(list(hf_names), lambda n: ours[hf_names[n]].shape,
                          lambda n: ours[hf_names[n]].contiguous(), DTYPES[dtype], tmp, parse_size(max_shard_size))
        export_tokenizer(tok, tmp, chat_template)
    return {"architecture": architecture_for(cfg), "checkpoint": os.path.join(root, tag), "output": output,
            "dtype": dtype, "vocab_size": cfg.vocab_size, "tokenizer_size": tok.vocab_size}
