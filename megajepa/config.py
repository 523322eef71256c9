"""One typed config tree: what a run is. YAML/JSON file + dotted `key=value` overrides + validation.

Adding a key: give its dataclass a typed field with a default (and a comment saying what it means).
A key with a fixed set of values: name a `Literal` below and annotate the field with it; coercion then
rejects any other value naming the key and the options, and code that branches on it imports the
Literal (or `typing.get_args` of it) instead of re-listing the strings. Ranges go in `validate`.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from megajepa.data.synthetic import TASKS
from megajepa.eval.metrics import METRICS
from megajepa.model.presets import PRESETS, SIZED, check_heads, preset_value

# Every choice a run config offers, in one place.
Distance = Literal["cosine", "l2", "mse", "infonce"]
PredPosition = Literal["end", "front"]  # predictor tokens after the view | before it
Pairs = Literal["chain", "all"]  # N views: i -> i+1 | every ordered pair
EmbedAt = Literal["end", "last"]  # a view's end marker (sep/eos) | its last content token
MixtureStop = Literal["first_exhausted", "all_exhausted"]  # no repeats | oversample until all are read
OnBadRecord = Literal["skip", "error"]
SourceFormat = Literal["jsonl", "json", "parquet"]
DropoutWeighting = Literal["renormalize", "paper"]  # per example, mean over kept pairs | per micro-batch, no renormalising
TrainAllViews = Literal["all", "first"]  # train_all: every view an NTP stream | only the first (reference --plain --train_all)
Role = Literal["user", "assistant", "system"]  # the turn a data.views entry takes from a message list
StpMode = Literal["random_span", "triples", "e2e"]  # objective/stp.py: which displacements are compared
LengthWeighting = Literal["none", "cosine_like", "jaccard_like"]  # random_span: weight by span vs rest length


class ConfigError(ValueError):
    """A config problem, raised before any compute starts."""


@dataclass
class ModelConfig:
    preset: str = "tiny"  # a name in megajepa/model/presets.py; the sizes below (None: the preset's) override it
    vocab_size: int | None = None  # None: the tokenizer's size rounded up to a multiple of 64
    dim: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None  # grouped-query attention
    ffn_dim: int | None = None
    rope_theta: float | None = None
    rope_scaling: dict | None = None  # {"rope_type": "llama3", factor, low/high_freq_factor, original_max_position_embeddings}
    norm_eps: float = 1e-5
    tie_embeddings: bool | None = None
    qkv_bias: bool = False  # Qwen2-style checkpoints
    sliding_window: int | None = None  # Mistral-style checkpoints (interop only)
    max_seq_len: int | None = None
    init_std: float = 0.02
    init_from_hf: str | None = None  # continue from a local transformers checkpoint


@dataclass
class JepaConfig:
    """The defaults are megajepa's default objective, chosen by measurement (README, "The default objective"):
    the paper's cosine term at lambda 0.1 on a quarter of the examples (dropout 0.75), kept from collapsing by
    SIGReg at weight 0.1. `JepaConfig.paper()` is the paper's bare objective (lambda 1, every example, no
    regulariser), which collapses from random init."""
    # `lambda` is a Python keyword: the file/CLI key is `jepa.lambda`, the attribute `lam`.
    lam: float = 0.1
    gamma: float = 1.0
    predictors: int = 1  # k predictor tokens appended after Text (0: Enc(Text) predicts directly)
    distance: Distance = "cosine"
    temperature: float = 0.07  # infonce only
    pred_position: PredPosition = "end"
    reverse: bool = False  # Code predicts Text
    dropout: float = 0.75  # probability alpha that the JEPA term is dropped (per example or micro-batch: dropout_weighting)
    # renormalize: each example packed without views with probability alpha, JEPA the mean over kept pairs;
    # paper: a whole micro-batch drops the term with probability alpha (seeded by run seed, step, micro-step),
    # not renormalised, so its expected weight is lambda * (1 - alpha): the reference's --jepa_ratio = 1 - alpha
    dropout_weighting: DropoutWeighting = "renormalize"
    pairs: Pairs = "chain"
    embed_at: EmbedAt = "end"
    # Linear warm-up of lambda from lambda_min at step 0 to lambda at lambda_warmup_steps (0: off); the
    # reference's --lbd_warmup ramps over the whole run: lambda_warmup_steps = train.max_steps - 1.
    lambda_warmup_steps: int = 0
    lambda_min: float = 0.0
    collapse_warn_fraction: float = 0.05  # warn when effective rank < this x embedding width
    collapse_cos_margin: float = 0.05  # after warm-up, warn when cos(Pred, own) - cos(Pred, others) < this (0: off)
    # Anti-collapse term R on the pair embeddings (objective/regularizers.py), weighted by reg_weight.
    regularizer: Literal["none", "sigreg", "vicreg"] = "sigreg"
    reg_weight: float = 0.1
    reg_warmup_steps: int = 0  # the same linear warm-up for reg_weight, from reg_min (0: off)
    reg_min: float = 0.0
    reg_on: Literal["both", "target", "pred"] = "both"  # which embeddings form Z: Enc and Pred, or one of them
    sigreg_directions: int = 256  # M random unit directions, fresh each step (LeJEPA: 256 or 1024)
    sigreg_knots: int = 17  # trapezoid knots on t in [0, sigreg_t_max]
    sigreg_t_max: float = 3.0

    @classmethod
    def paper(cls, **overrides) -> "JepaConfig":
        """The LLM-JEPA paper's objective: gamma * NTP + lambda * (1 - cos), lambda 1, on every example, no
        regulariser (`overrides` change any field)."""
        return cls(**{"lam": 1.0, "dropout": 0.0, "regularizer": "none", "reg_weight": 0.0, **overrides})

    @property
    def example_dropout(self) -> float:
        """The per-example dropout the packer draws: alpha under renormalize, none under paper (the objective
        drops whole micro-batches instead, objective/schedules.py)."""
        return self.dropout if self.dropout_weighting == "renormalize" else 0.0


@dataclass
class StpConfig:
    """Semantic Tube Prediction (arXiv 2602.22617): a cosine term on the NTP stream's own hidden-state
    trajectory, no extra tokens (data/stp.py samples, objective/stp.py computes)."""
    lam: float = 0.0  # `stp.lambda`: weight of the STP term; 0: off (no samples drawn)
    mode: StpMode = "random_span"
    samples_per_document: int = 1  # spans / triples drawn per document each time its row is read
    length_weighting: LengthWeighting = "none"  # random_span only, as the reference's --length_adjustment
    lambda_warmup_steps: int = 0  # linear warm-up of stp.lambda from stp.lambda_min (0: off), as jepa.lambda's
    lambda_min: float = 0.0


@dataclass
class DataConfig:
    task: str = "regex"  # embedded synthetic corpus (megajepa/data/synthetic TASKS) used when `sources` is empty
    num_train: int = 20000
    num_test: int = 500
    # Weighted mixture: [{path (file|folder|glob), weight, format (jsonl|json|parquet), streaming}] or paths.
    sources: list = field(default_factory=list)
    mixture_stop: MixtureStop = "first_exhausted"
    extra_view_fields: list = field(default_factory=list)  # messages records: fields of alternative message lists
    # JEPA views apart from the NTP stream, per view {field, role} (role: a message-list field's turn), e.g.
    # [{field: text, role: user}, {field: code, role: assistant}]; empty: the stream's own views pair.
    views: list = field(default_factory=list)
    shards: str | None = None  # tools/preprocess_data.py output: train from memory-mapped rows, no tokenizing
    seq_len: int = 512  # packed row length
    train_all: bool = False  # pretraining: every view its own NTP stream (labelled everywhere) and its own Enc
    train_all_views: TrainAllViews = "all"  # with train_all: first = only `bos Text eos` is an NTP stream, other views copies
    label_prompt: bool = False  # NTP on every token of the stream (system, Text, Code), as the reference code trained
    system_prompt: bool = False  # render a messages record's system turn before Text (Text then gets a copy)
    on_bad_record: OnBadRecord = "skip"
    max_skip_fraction: float = 0.25  # more records skipped than this stops the run before compute
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
    warmup_steps: int = 30  # linear warm-up from 0, then cosine decay; 0: cosine from the first step
    grad_clip: float = 1.0  # global gradient-norm clip; 0: off
    log_interval: int = 10
    save_interval: int = 100
    keep_last: int = 3
    max_nonfinite_steps: int = 5  # skipped (non-finite) updates in a row before the run stops
    dist_timeout_minutes: float = 10.0  # a collective waiting longer (dead or hung rank) fails the run
    activation_checkpointing: bool = False  # recompute decoder layers in backward instead of keeping activations
    activation_checkpointing_every: int = 1  # with it on: checkpoint every n-th layer (1: all; 2: half)
    compile: bool = False  # torch.compile each decoder block and the JEPA gather + distance
    bf16: bool | Literal["auto"] = "auto"  # auto (on when CUDA supports bf16) | true | false: the DeepSpeed config's bf16.enabled


@dataclass
class EvalConfig:
    file: str | None = None
    interval: int = 0  # 0: never during training
    max_examples: int = 200
    metric: str = "exact"  # names in megajepa/eval/metrics.py METRICS, comma-separated
    max_new_tokens: int = 64


@dataclass
class LoggingConfig:
    wandb: bool = False  # W&B beside TensorBoard, rank 0 (WANDB_MODE=offline works with no network)
    project: str = "megajepa"
    name: str | None = None  # None: output_dir's last folder
    tags: list = field(default_factory=list)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    jepa: JepaConfig = field(default_factory=JepaConfig)
    stp: StpConfig = field(default_factory=StpConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    output_dir: str = "runs/default"
    seed: int = 1234
    resume: str = "none"  # none | auto | path to a checkpoint tag directory
    deepspeed_config: str | None = None  # None: ds_configs/zero3.json
    nvme_path: str | None = None  # local NVMe folder: fills "nvme_path": "auto" (ds_configs/zero3_nvme.json)

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
    if origin is Literal:
        options = typing.get_args(hint)
        if value not in options:
            raise ConfigError(f"config key '{key}' must be one of {'|'.join(options)}, got {value!r}")
        return value
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
    if hint is float and not isinstance(value, bool) and isinstance(value, (int, float, str)):
        try:
            number = float(value)  # ints widen; YAML 1.1 reads "3e-4" as a string
        except ValueError:
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        return number
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if origin is Literal and value not in typing.get_args(hint):
        raise ConfigError(f"config key '{key}' must be one of {'|'.join(map(str, typing.get_args(hint)))}, "
                          f"got {value!r}")
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


def validate(cfg: RunConfig) -> None:
    """Range and choice checks that need no data; data-dependent checks live in the packer."""
    j, t, d = cfg.jepa, cfg.train, cfg.data
    if j.lam < 0:
        raise ConfigError(f"jepa.lambda must be >= 0, got {j.lam}")
    if j.gamma < 0:
        raise ConfigError(f"jepa.gamma must be >= 0, got {j.gamma}")
    if j.lam == 0 and j.gamma == 0 and cfg.stp.lam == 0:
        raise ConfigError("jepa.lambda, jepa.gamma and stp.lambda are all 0: nothing to train")
    if not 0 <= j.predictors <= MAX_PREDICTORS:
        raise ConfigError(f"jepa.predictors must be in 0..{MAX_PREDICTORS} (the tokenizer has "
                          f"{MAX_PREDICTORS} predictor tokens), got {j.predictors}")
    if not 0.0 <= j.dropout <= 1.0:
        raise ConfigError(f"jepa.dropout must be in [0, 1], got {j.dropout}")
    for key, value in (("jepa.reg_weight", j.reg_weight), ("jepa.lambda_min", j.lambda_min),
                       ("jepa.reg_min", j.reg_min), ("jepa.lambda_warmup_steps", j.lambda_warmup_steps),
                       ("jepa.reg_warmup_steps", j.reg_warmup_steps)):
        if value < 0:
            raise ConfigError(f"config key '{key}' must be >= 0, got {value}")
    if not 0.0 <= j.collapse_cos_margin <= 2.0:
        raise ConfigError(f"jepa.collapse_cos_margin must be in [0, 2], got {j.collapse_cos_margin}")
    if d.train_all_views != "all" and not d.train_all:
        raise ConfigError(f"data.train_all_views={d.train_all_views} chooses among train_all's streams; set "
                          "data.train_all=true")
    if j.sigreg_directions < 1 or j.sigreg_knots < 2 or j.sigreg_t_max <= 0:
        raise ConfigError("jepa.sigreg_directions must be >= 1, jepa.sigreg_knots >= 2 and jepa.sigreg_t_max > 0, "
                          f"got {j.sigreg_directions}, {j.sigreg_knots}, {j.sigreg_t_max}")
    for key, value in (("stp.lambda", cfg.stp.lam), ("stp.lambda_min", cfg.stp.lambda_min),
                       ("stp.lambda_warmup_steps", cfg.stp.lambda_warmup_steps)):
        if value < 0:
            raise ConfigError(f"config key '{key}' must be >= 0, got {value}")
    if cfg.stp.samples_per_document < 1:
        raise ConfigError(f"config key 'stp.samples_per_document' must be >= 1, got {cfg.stp.samples_per_document}")
    if j.temperature <= 0:
        raise ConfigError(f"jepa.temperature must be > 0, got {j.temperature}")
    if d.task not in TASKS:
        raise ConfigError(f"config key 'data.task' must be one of {'|'.join(TASKS)}, got {d.task!r}")
    if not 0.0 <= d.max_skip_fraction <= 1.0:
        raise ConfigError(f"data.max_skip_fraction must be in [0, 1], got {d.max_skip_fraction}")
    _check_sources(d.sources)
    _check_views(d.views)
    _check_model(cfg.model)
    _check_eval(cfg.eval, d.sources)
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
                            ("data.num_train", d.num_train, 1),
                            ("data.num_workers", d.num_workers, 0)):
        if value < low:
            raise ConfigError(f"config key '{key}' must be >= {low}, got {value}")
    if not 0 <= t.warmup_steps < t.max_steps:
        raise ConfigError(f"config key 'train.warmup_steps' must be in [0, train.max_steps={t.max_steps}), "
                          f"got {t.warmup_steps}")
    if cfg.logging.wandb and importlib.util.find_spec("wandb") is None:
        raise ConfigError("logging.wandb is true but wandb is not installed: pip install 'megajepa[wandb]'")
    if t.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {t.lr}")
    for key, value in (("train.weight_decay", t.weight_decay), ("train.grad_clip", t.grad_clip)):
        if value < 0:
            raise ConfigError(f"config key '{key}' must be >= 0, got {value}")
    if t.dist_timeout_minutes <= 0:
        raise ConfigError(f"train.dist_timeout_minutes must be > 0, got {t.dist_timeout_minutes}")


def _check_model(m: ModelConfig) -> None:
    """The preset exists, explicit sizes are positive, and the heads fit the (preset-filled) width."""
    if m.preset not in PRESETS:
        raise ConfigError(f"config key 'model.preset' must be one of {'|'.join(PRESETS)}, got {m.preset!r}")
    for name in (*SIZED, "vocab_size"):
        if getattr(m, name) is not None and getattr(m, name) <= 0:
            raise ConfigError(f"config key 'model.{name}' must be > 0 (or unset: the preset's), got {getattr(m, name)}")
    if m.norm_eps <= 0 or m.init_std <= 0:
        raise ConfigError(f"config keys 'model.norm_eps' and 'model.init_std' must be > 0, got {m.norm_eps}, {m.init_std}")
    if m.init_from_hf is not None:
        return  # the checkpoint's config.json sets the shape (load_hf.model_config_for checks explicit sizes)
    size = {name: getattr(m, name) or preset_value(m.preset, name) for name in ("dim", "n_heads", "n_kv_heads")}
    try:
        check_heads(**size)
    except ValueError as e:
        raise ConfigError(f"config keys 'model.dim/n_heads/n_kv_heads' (preset {m.preset}): {e}") from None


def _check_eval(e: EvalConfig, sources: list) -> None:
    names = [m.strip() for m in e.metric.split(",") if m.strip()]  # a comma-separated list, as the CLI's --metric
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise ConfigError(f"config key 'eval.metric': unknown {bad or e.metric!r}; a comma-separated list of "
                          f"{'|'.join(METRICS)}")
    for key, value, low in (("eval.interval", e.interval, 0), ("eval.max_examples", e.max_examples, 1),
                            ("eval.max_new_tokens", e.max_new_tokens, 1)):
        if value < low:
            raise ConfigError(f"config key '{key}' must be >= {low}, got {value}")
    if e.file is not None and not os.path.isfile(e.file):
        raise ConfigError(f"config key 'eval.file': eval.file: {e.file} does not exist")
    if e.interval > 0 and e.file is None and sources:  # the synthetic corpus evaluates on its held-out split
        raise ConfigError(f"config key 'eval.file': eval.interval={e.interval} with data.sources needs a file")


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
        if spec.get("format") is not None:
            _coerce(spec["format"], SourceFormat, f"{key}.format")


def _check_views(views: list) -> None:
    """data.views: empty, or two or more {field: str, role?: user|assistant|system} entries."""
    if views and len(views) < 2:
        raise ConfigError(f"data.views needs at least 2 views for the JEPA term (or none), got {views!r}")
    for i, spec in enumerate(views):
        key = f"data.views[{i}]"
        if not isinstance(spec, dict) or not isinstance(spec.get("field"), str) or not spec["field"]:
            raise ConfigError(f"{key} must be a mapping with a 'field' name, got {spec!r}")
        unknown = set(spec) - {"field", "role"}
        if unknown:
            raise ConfigError(f"unknown config key '{key}.{sorted(unknown)[0]}' (known: field, role)")
        if spec.get("role") is not None:
            _coerce(spec["role"], Role, f"{key}.role")
