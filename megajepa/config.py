"""One typed config tree: what a run is. YAML/JSON file + dotted `key=value` overrides + validation."""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config problem, raised before any compute starts."""


@dataclass
class ModelConfig:
    preset: str = "tiny"  # tiny | 125m | 350m | 1b | 3b | 7b; explicit fields below override it
    vocab_size: int = 0  # 0: the tokenizer's size rounded up to a multiple of 64
    dim: int = 0
    n_layers: int = 0
    n_heads: int = 0
    n_kv_heads: int = 0  # grouped-query attention; 0: the preset's
    ffn_dim: int = 0
    rope_theta: float = 0.0
    rope_scaling: dict | None = None  # {"rope_type": "llama3", factor, low/high_freq_factor, original_max_position_embeddings}
    norm_eps: float = 1e-5
    tie_embeddings: bool | None = None
    qkv_bias: bool = False  # Qwen2-style checkpoints
    sliding_window: int | None = None  # Mistral-style checkpoints (interop only)
    max_seq_len: int = 0
    init_std: float = 0.02
    init_from_hf: str | None = None  # continue from a local transformers checkpoint


@dataclass
class JepaConfig:
    # `lambda` is a Python keyword: the file/CLI key is `jepa.lambda`, the attribute `lam`.
    lam: float = 1.0
    gamma: float = 1.0
    predictors: int = 1  # k predictor tokens appended after Text (0: Enc(Text) predicts directly)
    distance: str = "cosine"  # cosine | l2 | mse | infonce
    temperature: float = 0.07  # infonce only
    pred_position: str = "end"  # end | front
    reverse: bool = False  # Code predicts Text
    dropout: float = 0.0  # fraction of examples packed without JEPA views
    pairs: str = "chain"  # N views: chain (i -> i+1) | all
    embed_at: str = "end"  # end: a view's end marker (sep/eos) | last: its last content token
    collapse_warn_fraction: float = 0.05  # warn when effective rank < this x embedding width


@dataclass
class DataConfig:
    task: str = "regex"  # embedded synthetic corpus used when `sources` is empty
    num_train: int = 20000
    num_test: int = 500
    # Weighted mixture: [{path (file|folder|glob), weight, format (jsonl|json|parquet), streaming}] or paths.
    sources: list = field(default_factory=list)
    mixture_stop: str = "first_exhausted"  # first_exhausted (no repeats) | all_exhausted (oversample)
    extra_view_fields: list = field(default_factory=list)  # messages records: fields of alternative message lists
    shards: str | None = None  # tools/preprocess_data.py output: train from memory-mapped rows, no tokenizing
    seq_len: int = 512  # packed row length
    train_all: bool = False  # pretraining: every view its own NTP stream (labelled everywhere) and its own Enc
    system_prompt: bool = False  # render a messages record's system turn before Text (Text then gets a copy)
    on_bad_record: str = "skip"  # skip | error
    tokenizer: str | None = None  # path to a sentencepiece model; None: train one next to the run
    vocab_size: int = 1024  # for a tokenizer trained here
    num_workers: int = 0  # tools/preprocess_data.py worker processes (0: one per CPU; --workers overrides)


@dataclass
class TrainConfig:
    max_steps: int = 300
    micro_batch_size: int = 4  # packed rows per rank per micro-step
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 30
    grad_clip: float = 1.0
    log_interval: int = 10
    save_interval: int = 100
    keep_last: int = 3
    max_nonfinite_steps: int = 5  # skipped (non-finite) updates in a row before the run stops
    dist_timeout_minutes: float = 10.0  # a collective waiting longer (dead or hung rank) fails the run
    activation_checkpointing: bool = False  # recompute decoder layers in backward instead of keeping activations
    activation_checkpointing_every: int = 1  # with it on: checkpoint every n-th layer (1: all; 2: half)
    compile: bool = False  # torch.compile each decoder block and the JEPA gather + distance
    bf16: bool | str = "auto"  # auto (on when CUDA supports bf16) | true | false: the DeepSpeed config's bf16.enabled


@dataclass
class EvalConfig:
    file: str | None = None
    interval: int = 0  # 0: never during training
    max_examples: int = 200
    metric: str = "exact"
    max_new_tokens: int = 64


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    jepa: JepaConfig = field(default_factory=JepaConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "runs/default"
    seed: int = 1234
    resume: str = "none"  # none | auto | path to a checkpoint tag directory
    deepspeed_config: str | None = None  # None: ds_configs/zero3.json

    def to_dict(self) -> dict:
        return _to_dict(self)


_ALIASES = {"lambda": "lam"}  # file/CLI spelling -> attribute
_SPELLING = {v: k for k, v in _ALIASES.items()}


def _to_dict(obj) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = _SPELLING.get(f.name, f.name)
        out[key] = _to_dict(value) if dataclasses.is_dataclass(value) else value
    return out


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check a value against a field's type; ints widen to floats, nothing else converts."""
    hint = annotation
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}") from None
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if hint in (float, str, list, dict) and not isinstance(value, hint):
        raise ConfigError(f"config key '{key}': expected {hint.__name__}, got {value!r}")
    return value


def _apply(obj, updates: dict, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for raw_key, value in updates.items():
        name = _ALIASES.get(raw_key, raw_key)
        dotted = f"{prefix}{raw_key}"
        if name not in names:
            known = ", ".join(sorted(_SPELLING.get(n, n) for n in names))
            raise ConfigError(f"unknown config key '{dotted}' (known under '{prefix or '<root>'}': {known})")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{dotted}' is a section; give '{dotted}.<field>=...'")
            _apply(current, value, dotted + ".")
        else:
            setattr(obj, name, _coerce(value, hints[name], dotted))


def parse_override(text: str) -> dict:
    """`a.b.c=value` -> {"a": {"b": {"c": value}}}; the value is parsed as YAML (1e-3, true, [1,2])."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key")
    value = yaml.safe_load(raw) if raw != "" else ""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def read_config_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        text = f.read()
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"config file {path} does not parse: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping")
    return data


def load_config(path: str | None = None, overrides: list[str] | tuple = ()) -> RunConfig:
    cfg = RunConfig()
    if path:
        try:
            _apply(cfg, read_config_file(path))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    for text in overrides:
        _apply(cfg, parse_override(text))
    validate(cfg)
    return cfg


MAX_PREDICTORS = 10  # the tokenizer defines <|predictor_1..10|>


def _choice(key: str, value: str, options: tuple) -> None:
    if value not in options:
        raise ConfigError(f"config key '{key}' must be one of {'|'.join(options)}, got {value!r}")


def validate(cfg: RunConfig) -> None:
    """Range and choice checks that need no data; data-dependent checks live in the packer."""
    j, t, d = cfg.jepa, cfg.train, cfg.data
    if j.lam < 0:
        raise ConfigError(f"jepa.lambda must be >= 0, got {j.lam}")
    if j.gamma < 0:
        raise ConfigError(f"jepa.gamma must be >= 0, got {j.gamma}")
    if j.lam == 0 and j.gamma == 0:
        raise ConfigError("jepa.lambda and jepa.gamma are both 0: nothing to train")
    if not 0 <= j.predictors <= MAX_PREDICTORS:
        raise ConfigError(f"jepa.predictors must be in 0..{MAX_PREDICTORS} (the tokenizer has "
                          f"{MAX_PREDICTORS} predictor tokens), got {j.predictors}")
    if not 0.0 <= j.dropout <= 1.0:
        raise ConfigError(f"jepa.dropout must be in [0, 1], got {j.dropout}")
    if j.temperature <= 0:
        raise ConfigError(f"jepa.temperature must be > 0, got {j.temperature}")
    _choice("jepa.distance", j.distance, ("cosine", "l2", "mse", "infonce"))
    _choice("jepa.pred_position", j.pred_position, ("end", "front"))
    _choice("jepa.pairs", j.pairs, ("chain", "all"))
    _choice("jepa.embed_at", j.embed_at, ("end", "last"))
    _choice("data.on_bad_record", d.on_bad_record, ("skip", "error"))
    _choice("data.mixture_stop", d.mixture_stop, ("first_exhausted", "all_exhausted"))
    _check_sources(d.sources)
    if d.shards is not None and not os.path.isdir(d.shards):
        raise ConfigError(f"data.shards: {d.shards!r} is not a directory (write it with tools/preprocess_data.py)")
    if cfg.model.init_from_hf is not None and not os.path.isfile(os.path.join(cfg.model.init_from_hf, "config.json")):
        raise ConfigError(f"model.init_from_hf: {cfg.model.init_from_hf!r} is not a transformers checkpoint "
                          "directory (no config.json)")
    if cfg.model.init_from_hf and d.tokenizer:  # continued pretraining keeps the checkpoint's ids
        raise ConfigError("model.init_from_hf uses the checkpoint's tokenizer; leave data.tokenizer unset")
    if cfg.resume not in ("none", "auto") and not os.path.isdir(cfg.resume):
        raise ConfigError(f"resume must be none, auto or an existing checkpoint directory, got {cfg.resume!r}")
    for key, value, low in (("data.seq_len", d.seq_len, 8), ("train.max_steps", t.max_steps, 0),
                            ("train.micro_batch_size", t.micro_batch_size, 1),
                            ("train.grad_accum", t.grad_accum, 1), ("train.log_interval", t.log_interval, 1),
                            ("train.activation_checkpointing_every", t.activation_checkpointing_every, 1),
                            ("train.save_interval", t.save_interval, 1), ("train.keep_last", t.keep_last, 1),
                            ("train.max_nonfinite_steps", t.max_nonfinite_steps, 1),
                            ("train.warmup_steps", t.warmup_steps, 0), ("data.num_train", d.num_train, 1),
                            ("data.num_workers", d.num_workers, 0)):
        if value < low:
            raise ConfigError(f"config key '{key}' must be >= {low}, got {value}")
    if t.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {t.lr}")
    if t.dist_timeout_minutes <= 0:
        raise ConfigError(f"train.dist_timeout_minutes must be > 0, got {t.dist_timeout_minutes}")
    if not isinstance(t.bf16, bool):
        _choice("train.bf16", t.bf16, ("auto",))


_SOURCE_KEYS = {"path": str, "weight": (int, float), "format": (str, type(None)), "streaming": bool}


def _check_sources(sources: list) -> None:
    """Each data.sources entry: a path string or {path, weight > 0, format, streaming}."""
    for i, spec in enumerate(sources):
        key = f"data.sources[{i}]"
        if isinstance(spec, str):
            continue
        if not isinstance(spec, dict) or "path" not in spec:
            raise ConfigError(f"{key} must be a path or a mapping with 'path', got {spec!r}")
        for name, value in spec.items():
            if name not in _SOURCE_KEYS:
                raise ConfigError(f"unknown config key '{key}.{name}' (known: {', '.join(_SOURCE_KEYS)})")
            if not isinstance(value, _SOURCE_KEYS[name]) or (name == "weight" and isinstance(value, bool)):
                raise ConfigError(f"config key '{key}.{name}' has the wrong type: {value!r}")
        if spec.get("weight", 1.0) <= 0:
            raise ConfigError(f"config key '{key}.weight' must be > 0, got {spec['weight']}")
        if spec.get("format") not in (None, "jsonl", "json", "parquet"):
            raise ConfigError(f"config key '{key}.format' must be jsonl|json|parquet, got {spec['format']!r}")
