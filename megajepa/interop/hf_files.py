"""Transformers checkpoint directories on disk: read one lazily (a tensor at a time, from safetensors)
and write one shard by shard with an index, as `save_pretrained` lays it out."""
from __future__ import annotations

import contextlib
import json
import os

import torch

from megajepa.interop.adapter import ARCHITECTURES, UnsupportedCheckpoint, from_hf_config
from megajepa.training.checkpoint.locate import CheckpointError

SINGLE, INDEX = "model.safetensors", "model.safetensors.index.json"


class HFCheckpoint:
    """A local transformers Llama/Qwen2/Mistral checkpoint, validated up front, tensors read on demand."""

    def __init__(self, path: str):
        self.path = str(path)
        config_file = os.path.join(self.path, "config.json")
        if not os.path.isfile(config_file):
            raise CheckpointError(f"{self.path}: not a transformers checkpoint (no config.json)")
        try:
            with open(config_file) as f:
                raw = json.load(f)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{config_file}: not valid JSON ({e})") from None
        if raw.get("model_type") not in ARCHITECTURES:  # before AutoConfig, which may not know the type
            arch = (raw.get("architectures") or [raw.get("model_type")])[0]
            raise UnsupportedCheckpoint(f"{config_file}: unsupported architecture {arch!r} (model_type "
                                        f"{raw.get('model_type')!r}); supported: {', '.join(ARCHITECTURES.values())}")
        from transformers import AutoConfig
        self.config = AutoConfig.from_pretrained(self.path, local_files_only=True)
        self.model_config = from_hf_config(self.config, where=config_file)
        self.where = self._weight_map()
        self._files = contextlib.ExitStack()
        self._open: dict[str, object] = {}

    def _weight_map(self) -> dict[str, str]:
        index = os.path.join(self.path, INDEX)
        if os.path.isfile(index):
            with open(index) as f:
                weight_map = json.load(f).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index}: no 'weight_map'")
            for shard in sorted(set(weight_map.values())):
                if not os.path.isfile(os.path.join(self.path, shard)):
                    raise CheckpointError(f"{self.path}: shard {shard} listed in {INDEX} is missing")
            return weight_map
        single = os.path.join(self.path, SINGLE)
        if not os.path.isfile(single):
            raise CheckpointError(f"{self.path}: no {SINGLE} or {INDEX} (only safetensors weights are read)")
        from safetensors import safe_open
        with safe_open(single, framework="pt") as f:
            return {name: SINGLE for name in f.keys()}

    def _handle(self, shard: str):
        if shard not in self._open:
            from safetensors import safe_open
            self._open[shard] = self._files.enter_context(
                safe_open(os.path.join(self.path, shard), framework="pt"))
        return self._open[shard]

    def names(self) -> list[str]:
        return list(self.where)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle(self.where[name]).get_slice(name).get_shape())

    def tensor(self, name: str) -> torch.Tensor:
        return self._handle(self.where[name]).get_tensor(name)

    def close(self) -> None:
        self._files.close()
        self._open.clear()


def parse_size(text: str) -> int:
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
    text = text.strip().upper()
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[:-len(unit)]) * factor)
    return int(text)


def write_safetensors(names, shape_of, load, dtype: torch.dtype, out_dir: str, max_shard_bytes: int) -> None:
    """Shards of at most `max_shard_bytes` (a bigger tensor gets its own) plus `model.safetensors.index.json`;
    only one shard's tensors are in memory at a time. `load(name)` returns the tensor."""
    from safetensors.torch import save_file
    itemsize = torch.empty((), dtype=dtype).element_size()
    groups, size = [[]], 0
    for name in names:
        n = itemsize * int(torch.Size(shape_of(name)).numel())
        if groups[-1] and size + n > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += n
    weight_map, total = {}, 0
    for i, group in enumerate(groups, 1):
        shard = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        tensors = {name: load(name).to(dtype).contiguous() for name in group}
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        save_file(tensors, os.path.join(out_dir, shard), metadata={"format": "pt"})
        weight_map.update({name: shard for name in group})
        del tensors
    with open(os.path.join(out_dir, INDEX), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
