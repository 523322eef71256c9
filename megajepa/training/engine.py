"""DeepSpeed wiring: resolve the JSON config against the run config, build the model under
`deepspeed.zero.Init`, and create the engine (optimizer and LR schedule are DeepSpeed's own)."""
from __future__ import annotations

import inspect
import json
import logging
import os

import deepspeed
import torch
from deepspeed.runtime.lr_schedules import WarmupCosineLR

from megajepa.config import ConfigError, RunConfig
from megajepa.model.transformer import Transformer, init_parameter
from megajepa.objective.hybrid import HybridObjective
from megajepa.training.lazy_compile import import_deepspeed_muon

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # megajepa/training/..
DEFAULT_DS_CONFIG = os.path.join(REPO_ROOT, "ds_configs", "zero3.json")
log = logging.getLogger(__name__)


def _accelerator_has_gpu() -> bool:
    from deepspeed.accelerator import get_accelerator
    return get_accelerator().device_name() != "cpu"


def bf16_available() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def cpu_bf16_native() -> bool:
    """Whether torch runs this CPU's bf16 matmuls through oneDNN (AVX512, AMX or AVX2-VNNI-2: its own check).
    Without it they fall back to a scalar loop, ~100x slower than float32 (docs/speed.md)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN's op: unknown, so no warning
        return True


def _fill(node: dict, key: str, value, where: str) -> None:
    """Replace an "auto" value; a concrete value that disagrees with the run config is an error."""
    if key not in node:
        return
    current = node[key]
    if current == "auto":
        node[key] = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and current != value:
        raise ConfigError(f"{where}: '{key}' is {current!r} but the run config says {value!r}; set it to "
                          f"\"auto\" or make them agree")


def resolve_ds_config(cfg: RunConfig, world_size: int) -> dict:
    path = cfg.deepspeed_config or DEFAULT_DS_CONFIG
    if not os.path.isfile(path):
        raise ConfigError(f"DeepSpeed config not found: {path}")
    try:
        with open(path) as f:
            ds = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"DeepSpeed config {path} is not valid JSON: {e}") from None
    if not isinstance(ds, dict):
        raise ConfigError(f"DeepSpeed config {path} must be a JSON object, got a {type(ds).__name__}")
    t = cfg.train
    _fill(ds, "train_micro_batch_size_per_gpu", t.micro_batch_size, path)
    _fill(ds, "gradient_accumulation_steps", t.grad_accum, path)
    _fill(ds, "train_batch_size", t.micro_batch_size * t.grad_accum * world_size, path)
    _fill(ds, "gradient_clipping", t.grad_clip, path)
    if t.bf16 is True:
        ds.setdefault("bf16", {}).setdefault("enabled", "auto")
    if "bf16" in ds:
        bf16 = bf16_available() if t.bf16 == "auto" else t.bf16
        if ds["bf16"].get("enabled") == "auto":
            ds["bf16"]["enabled"] = bf16
        elif t.bf16 != "auto" and ds["bf16"].get("enabled") != bf16:
            raise ConfigError(f"{path}: 'bf16.enabled' is {ds['bf16'].get('enabled')!r} but train.bf16 is "
                              f"{t.bf16}; set it to \"auto\" or make them agree")
        if ds["bf16"].get("enabled") is True and not _accelerator_has_gpu() and not cpu_bf16_native():
            log.warning("bf16 on a CPU that oneDNN cannot run bf16 matmuls on (no AVX512 or AMX): torch's "
                        "fallback is ~100x slower than float32 there; train.bf16=false trains faster")
    if "optimizer" in ds:
        params = ds["optimizer"].setdefault("params", {})
        _fill(params, "lr", t.lr, f"{path} optimizer.params")
        _fill(params, "weight_decay", t.weight_decay, f"{path} optimizer.params")
        if ds["optimizer"].get("type", "").lower() in ("adam", "adamw") and not _accelerator_has_gpu():
            # DeepSpeed's CPU FusedAdam is a JIT-built C++ op (~50 s on a fresh machine); torch's
            # fused AdamW is the same update, shipped compiled
            params.setdefault("torch_adam", True)
            if params["torch_adam"]:
                params.setdefault("fused", True)
    if "scheduler" in ds:
        params = ds["scheduler"].setdefault("params", {})
        _fill(params, "total_num_steps", max(t.max_steps, 1), f"{path} scheduler.params")
        _fill(params, "warmup_num_steps", t.warmup_steps, f"{path} scheduler.params")
        _fill(params, "warmup_max_lr", t.lr, f"{path} scheduler.params")
    _fill_nvme(ds, cfg.nvme_path, path)
    leftover = _find_auto(ds)
    if leftover:
        raise ConfigError(f"{path}: no run-config value fills \"auto\" at {leftover}")
    return ds


def _fill_nvme(ds: dict, nvme_path: str | None, where: str) -> None:
    """NVMe offload: the folder comes from the run config; DeepSpeed's async_io op must be buildable."""
    zero = ds.get("zero_optimization", {})
    sections = [s for s in ("offload_optimizer", "offload_param") if zero.get(s, {}).get("device") == "nvme"]
    if not sections:
        return
    if any(zero[s].get("nvme_path") == "auto" for s in sections):
        if nvme_path is None:
            raise ConfigError(f"{where}: offload to NVMe needs a local folder: set nvme_path=/local/nvme/dir")
        if not os.path.isdir(nvme_path):
            raise ConfigError(f"nvme_path: {nvme_path!r} is not a directory")
        for s in sections:
            _fill(zero[s], "nvme_path", nvme_path, where)
    from deepspeed.ops.op_builder import AsyncIOBuilder
    if not AsyncIOBuilder().is_compatible(verbose=False):
        raise ConfigError(f"{where}: offload to NVMe needs DeepSpeed's async_io op, which cannot build here "
                          "(install libaio-dev; `ds_report` shows async_io)")


def _find_auto(node, prefix="") -> str | None:
    if isinstance(node, dict):
        for k, v in node.items():
            found = _find_auto(v, f"{prefix}{k}.")
            if found:
                return found
    elif node == "auto":
        return prefix.rstrip(".")
    return None


def zero_stage(ds: dict) -> int:
    return int(ds.get("zero_optimization", {}).get("stage", 0))


def build_model(model_cfg, ds: dict, initialise: bool = True, checkpoint_every: int = 0) -> Transformer:
    """The model, partitioned at construction under ZeRO-3 (no full copy per rank). `initialise=False`
    skips the ZeRO-3 init pass when weights are loaded next (HF checkpoint, resume)."""
    with deepspeed.zero.Init(config_dict_or_path=ds, enabled=zero_stage(ds) == 3):
        model = Transformer(model_cfg, checkpoint_every)
    if zero_stage(ds) == 3 and initialise:
        init_partitioned(model)
    if model_cfg.tie_embeddings:  # the head reads the embedding outside the embedding's forward
        deepspeed.zero.register_external_parameter(model.lm_head, model.embed_tokens.weight)
    return model


def init_partitioned(model: Transformer) -> None:
    """zero.Init partitions each module as its constructor returns, before the model's own init runs:
    gather one parameter at a time, let rank 0 draw it, re-partition. Same values for any rank count."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    for name, p in model.named_parameters():
        with deepspeed.zero.GatheredParameters([p], modifier_rank=0):
            if rank == 0:
                init_parameter(name, p, model.config)


def param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on norms and biases (1-D parameters)."""
    def ndim(p):  # ZeRO-3 keeps the real shape in ds_shape once a parameter is partitioned
        return len(getattr(p, "ds_shape", p.shape))
    decay = [p for p in module.parameters() if p.requires_grad and ndim(p) >= 2]
    rest = [p for p in module.parameters() if p.requires_grad and ndim(p) < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def cosine_without_warmup(ds: dict):
    """(ds config, client LR scheduler or None). DeepSpeed's WarmupCosineLR refuses warmup_num_steps=0;
    without warm-up its curve is torch's CosineAnnealingLR: after k steps, min + (max - min) * (1 +
    cos(pi k / total)) / 2 with min = cos_min_ratio * max, the same as WarmupCosineLR after a warm-up."""
    scheduler = ds.get("scheduler", {})
    params = scheduler.get("params", {})
    if scheduler.get("type") != "WarmupCosineLR" or params.get("warmup_num_steps") != 0:
        return ds, None
    ratio = params.get("cos_min_ratio", inspect.signature(WarmupCosineLR).parameters["cos_min_ratio"].default)
    total = params["total_num_steps"]

    def cosine(optimizer):
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=total, eta_min=ratio * optimizer.param_groups[0]["lr"])
    return {k: v for k, v in ds.items() if k != "scheduler"}, cosine


def build_engine(objective: HybridObjective, ds: dict, weight_decay: float):
    """The DeepSpeed engine; its optimizer and LR scheduler are DeepSpeed's own, stepped by engine.step()."""
    ds, lr_scheduler = cosine_without_warmup(ds)
    import_deepspeed_muon()  # before deepspeed.initialize imports it with inductor
    engine, _, _, _ = deepspeed.initialize(
        model=objective, model_parameters=param_groups(objective, weight_decay), config=ds,
        lr_scheduler=lr_scheduler)
    return engine
