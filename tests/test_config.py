"""Bad input stops before any compute, with a message naming the problem."""
import json
import math
import os
import subprocess
import sys

import pytest

from megajepa.config import ConfigError, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.max_steps=7", "train.warmup_steps=2", "jepa.lambda=0.5", "jepa.predictors=3", "model.preset=125m",
                             "output_dir=runs/x", "train.lr=3e-4"])
    assert (cfg.train.max_steps, cfg.jepa.lam, cfg.jepa.predictors) == (7, 0.5, 3)
    assert cfg.model.preset == "125m" and cfg.output_dir == "runs/x" and cfg.train.lr == 3e-4
    assert cfg.to_dict()["jepa"]["lambda"] == 0.5


def test_file_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  max_steps: 11\n  warmup_steps: 2\njepa:\n  lambda: 2.0\n")
    cfg = load_config(str(path), ["train.max_steps=12"])
    assert cfg.train.max_steps == 12 and cfg.jepa.lam == 2.0
    jpath = tmp_path / "run.json"
    jpath.write_text(json.dumps({"data": {"seq_len": 256}}))
    assert load_config(str(jpath)).data.seq_len == 256


@pytest.mark.parametrize("override,needle", [
    ("train.max_stepz=3", "train.max_stepz"),
    ("nonsense=1", "nonsense"),
    ("jepa.lambda=-1", "jepa.lambda"),
    ("jepa.predictors=11", "jepa.predictors"),
    ("jepa.distance=dot", "jepa.distance"),
    ("train.max_steps=abc", "train.max_steps"),
    ("jepa.dropout=1.5", "jepa.dropout"),
])
def test_bad_overrides_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(None, [override])


@pytest.mark.parametrize("override,needle", [
    ("train.lr=nan", "train.lr"), ("train.lr=.inf", "train.lr"), ("jepa.gamma=-.inf", "jepa.gamma"),
    ("jepa.temperature=.nan", "jepa.temperature"), ("model.norm_eps=nan", "model.norm_eps"),
    ("train.weight_decay=-0.1", "train.weight_decay"), ("train.grad_clip=-1", "train.grad_clip"),
    ("train.warmup_steps=-1", "train.warmup_steps"), ("train.warmup_steps=300", "train.warmup_steps"),
    ("jepa.pairs=every", "jepa.pairs"), ("jepa.embed_at=first", "jepa.embed_at"),
    ("jepa.pred_position=middle", "jepa.pred_position"), ("data.on_bad_record=warn", "data.on_bad_record"),
    ("data.mixture_stop=never", "data.mixture_stop"), ("data.sources=[{path: x, format: csv}]", "data.sources[0].format"),
    ("model.preset=13b", "model.preset"), ("model.dim=100", "model.dim"), ("model.n_kv_heads=3", "model.dim/n_heads/n_kv_heads"),
    ("model.n_layers=0", "model.n_layers"), ("model.vocab_size=-5", "model.vocab_size"),
    ("data.task=poetry", "data.task"), ("eval.metric=bleu", "eval.metric"), ("eval.metric=exact,bleu", "eval.metric"), ("eval.interval=-1", "eval.interval"),
    ("eval.max_examples=0", "eval.max_examples"), ("eval.max_new_tokens=0", "eval.max_new_tokens"),
    ("eval.file=/no/such.jsonl", "eval.file"), (["eval.interval=5", "data.sources=[x.jsonl]"], "eval.file"),
])
def test_bad_values_are_rejected_by_load_config_naming_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("[", r"\[")):
        load_config(None, override if isinstance(override, list) else [override])


def test_choice_errors_list_the_options():
    with pytest.raises(ConfigError, match=r"jepa\.distance.*cosine\|l2\|mse\|infonce"):
        load_config(None, ["jepa.distance=dot"])
    with pytest.raises(ConfigError, match=r"model\.preset.*tiny\|125m"):
        load_config(None, ["model.preset=13b"])


def test_explicit_dims_fill_from_the_preset_before_the_check():
    cfg = load_config(None, ["model.dim=64", "model.n_heads=4", "model.n_kv_heads=2"])
    assert (cfg.model.dim, cfg.model.n_layers) == (64, None)  # None: the preset's, resolved with the tokenizer
    load_config(None, ["train.warmup_steps=0", "train.grad_clip=0", "train.weight_decay=0", "eval.metric=exact,regex"])


def test_bad_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  warmup: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert "bad.yaml" in str(e.value) and "train.warmup" in str(e.value)


def _train(tmp_path, *overrides):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, os.path.join(REPO, "megajepa", "train.py"),
                           f"output_dir={tmp_path}/run", "data.num_train=300", *overrides],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_cli_rejects_unknown_key_before_compute(tmp_path):
    out = _train(tmp_path, "jepa.lamda=1")
    assert out.returncode == 2 and "jepa.lamda" in out.stderr
    assert not os.path.exists(tmp_path / "run")  # nothing written


@pytest.mark.slow
def test_row_shorter_than_every_example_stops_before_training(tmp_path):
    out = _train(tmp_path, "data.seq_len=12", "data.vocab_size=400")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "data.seq_len=12" in out.stderr and "shorter than every example" in out.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


@pytest.mark.slow
def test_zero_warmup_trains_on_the_plain_cosine(tmp_path):
    """warmup_steps=0 (DeepSpeed's WarmupCosineLR refuses it) trains, with grad_clip=0 (off) too; the LR
    held after step s is the cosine from LR to cos_min_ratio * LR over max_steps, with no warm-up."""
    steps, lr = 4, 1e-3
    out = _train(tmp_path, "train.warmup_steps=0", "train.grad_clip=0", f"train.max_steps={steps}", f"train.lr={lr}",
                 "train.log_interval=1", "train.save_interval=100", "data.vocab_size=384", "data.seq_len=128",
                 "model.dim=64", "model.n_layers=1", "model.ffn_dim=128", "train.micro_batch_size=2")
    assert out.returncode == 0, out.stderr[-3000:]
    with open(os.path.join(REPO, "ds_configs", "zero3.json")) as f:
        cos_min = json.load(f)["scheduler"]["params"]["cos_min_ratio"]
    with open(tmp_path / "run" / "losses.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    for r in rows:
        want = lr * (cos_min + (1 - cos_min) * (1 + math.cos(math.pi * r["step"] / steps)) / 2)
        assert math.isclose(r["lr"], want, rel_tol=1e-12), (r["step"], r["lr"], want)
        assert math.isfinite(r["loss"]) and not r["skipped"]
