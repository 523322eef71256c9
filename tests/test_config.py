"""Bad input stops before any compute, with a message naming the problem."""
import json
import os
import subprocess
import sys

import pytest

from megajepa.config import ConfigError, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.max_steps=7", "jepa.lambda=0.5", "jepa.predictors=3", "model.preset=125m",
                             "output_dir=runs/x", "train.lr=3e-4"])
    assert (cfg.train.max_steps, cfg.jepa.lam, cfg.jepa.predictors) == (7, 0.5, 3)
    assert cfg.model.preset == "125m" and cfg.output_dir == "runs/x" and cfg.train.lr == 3e-4
    assert cfg.to_dict()["jepa"]["lambda"] == 0.5


def test_file_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  max_steps: 11\njepa:\n  lambda: 2.0\n")
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
