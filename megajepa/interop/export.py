"""A megajepa (DeepSpeed ZeRO) checkpoint -> a transformers model directory.

Consolidation is DeepSpeed's own (`get_fp32_state_dict_from_zero_checkpoint`, lazy: tensors are merged
from the memory-mapped rank files one shard at a time). Everything is validated before anything is
written, and the output is assembled in a temporary sibling directory renamed into place at the end,
so a failure never leaves a half-written `--output`.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import torch

from megajepa.data import layout
from megajepa.data.tokenizer import export_tokenizer, load_tokenizer
from megajepa.data.tokenizer.hf import HFTokenizer
from megajepa.interop.adapter import architecture_for, to_hf_config, to_hf_state_dict
from megajepa.interop.hf_files import parse_size, write_safetensors
from megajepa.model.architecture import ModelArchitecture
from megajepa.training.checkpoint.locate import CheckpointError, open_checkpoint

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def expected_shapes(cfg: ModelArchitecture) -> dict[str, tuple]:
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
    from transformers import GenerationConfig

    if dtype not in DTYPES:
        raise CheckpointError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    _output_ready(os.path.abspath(output), overwrite)  # fail before the expensive part
    saved = open_checkpoint(checkpoint, tag)
    cfg = saved.model_config()
    tok = load_tokenizer(saved.tokenizer(tokenizer))
    if tok.vocab_size > cfg.vocab_size:
        raise CheckpointError(f"tokenizer {tok.path} has {tok.vocab_size} ids but the model's embedding has "
                              f"{cfg.vocab_size} rows: this tokenizer is not the one the run trained with")
    if chat_template is None and not isinstance(tok, HFTokenizer):  # an HF tokenizer keeps its own template
        chat_template = layout.chat_template(bool((saved.run_config() or {}).get("data", {}).get("system_prompt")))
    ours = saved.weights(lazy=True)
    shapes = expected_shapes(cfg)
    missing, unexpected = sorted(set(shapes) - set(ours)), sorted(set(ours) - set(shapes))
    if missing or unexpected:
        raise CheckpointError(f"{saved.path}: parameters do not match its model_config; missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]}")
    for name, t in ours.items():
        if tuple(t.shape) != shapes[name]:
            raise CheckpointError(f"{saved.path}: {name} has shape {tuple(t.shape)}, model_config "
                                  f"says {shapes[name]}")
    hf = to_hf_state_dict(ours, cfg.tie_embeddings)  # lazy tensors, read one shard at a time below
    hf_config = to_hf_config(cfg, bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id)
    hf_config.dtype = DTYPES[dtype]
    with staged_output(output, overwrite) as tmp:
        hf_config.save_pretrained(tmp)
        GenerationConfig.from_model_config(hf_config).save_pretrained(tmp)
        write_safetensors(list(hf), lambda n: hf[n].shape, lambda n: hf[n].contiguous(), DTYPES[dtype], tmp,
                          parse_size(max_shard_size))
        export_tokenizer(tok, tmp, chat_template)
    return {"architecture": architecture_for(cfg), "checkpoint": saved.path, "output": output,
            "dtype": dtype, "vocab_size": cfg.vocab_size, "tokenizer_size": tok.vocab_size}
