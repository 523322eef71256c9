"""W&B beside TensorBoard, offline: the offline run read back with wandb's own reader (`wandb leet
inspect --json`) holds the same scalars at the same steps as TensorBoard, and the run config once."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from megajepa.config import ConfigError, load_config
import run_helpers as rh


def test_enabled_but_not_installed_is_a_config_error(monkeypatch):
    from megajepa import config
    real = config.importlib.util.find_spec
    monkeypatch.setattr(config.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(ConfigError, match=r"logging.wandb.*pip install 'megajepa\[wandb\]'"):
        load_config(None, ["logging.wandb=true"])


@pytest.mark.slow
def test_offline_run_holds_the_tensorboard_scalars(tmp_path):
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    cmd = [sys.executable, rh.TRAIN, f"output_dir={out}", *rh.TINY, "train.max_steps=4", "train.log_interval=2",
           "logging.wandb=true", "logging.project=p", "logging.name=n", "logging.tags=[a,b]"]
    p = subprocess.run(cmd, env=rh.env(WANDB_MODE="offline"), cwd=rh.REPO, capture_output=True, text=True, check=False,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "run finished: 4 steps" in p.stderr and "collapse: ok" in p.stderr  # the end-of-run summary
    assert (out / "report.png").is_file() and (out / "report.html").is_file()
    wandb_cli = os.path.join(os.path.dirname(sys.executable), "wandb")
    dump = subprocess.run([wandb_cli if os.path.exists(wandb_cli) else shutil.which("wandb"), "leet", "inspect",
                           "--json", str(out / "wandb")], capture_output=True, text=True, timeout=120, check=True)
    records = [json.loads(line) for line in dump.stdout.splitlines() if line.startswith("{")]
    runs = [r["run"] for r in records if r["type"] == "run"]
    assert len(runs) == 1 and runs[0]["project"] == "p" and runs[0]["display_name"] == "n"
    assert runs[0]["tags"] == ["a", "b"]
    assert runs[0]["config"]["update"]["train"]["max_steps"] == 4
    history = {}
    for r in records:
        if r["type"] == "history":
            item = r["history"]["item"]
            history.setdefault(item["_step"], {}).update(item)
    from megajepa.training.logs.report import tensorboard_scalars
    tb = {tag: dict(zip(*points)) for tag, points in tensorboard_scalars(str(out)).items()}
    assert sorted(history) == [2, 4]
    for tag, by_step in tb.items():
        for step, value in by_step.items():
            assert history[step][tag] == pytest.approx(value, rel=1e-6), (tag, step)  # TB stores float32
    assert set(tb) <= set(history[4])
