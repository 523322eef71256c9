"""The run report from a run directory's losses.jsonl and TensorBoard events, and its CLI."""
import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

import run_helpers as rh


def _fake_run(path):
    from torch.utils.tensorboard import SummaryWriter
    (path / "losses.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 7 - 0.3 * s, "lm": 6 - 0.2 * s, "jepa": 1 - 0.05 * s, "grad_norm": 9.0 / s,
                    "lr": 1e-3 * s / 10, "skipped": False, "skipped_total": 0}) + "\n" for s in range(1, 11)))
    w = SummaryWriter(str(path / "tensorboard"))
    for s in (5, 10):
        for tag, v in (("throughput/tokens_per_s", 1000.0 * s), ("collapse/erank_enc", 3.0),
                       ("collapse/erank_pred", 2.5), ("collapse/cos_pred_target", 0.5),
                       ("collapse/cos_pred_other", 0.1), ("eval/exact", 0.1 * s), ("loss/stp", 0.2)):
            w.add_scalar(tag, v, s)
    w.close()


def test_report_writes_png_and_html_with_every_panel(tmp_path):
    pytest.importorskip("matplotlib")
    from megajepa.training.logs import step_log
    from megajepa.training.logs.report import _panels, make_report, tensorboard_scalars
    _fake_run(tmp_path)
    png, page = make_report(str(tmp_path))
    image = Path(png).read_bytes()
    assert image[:8] == b"\x89PNG\r\n\x1a\n"
    assert base64.b64encode(image).decode() in Path(page).read_text()  # the same figure
    panels = {title: curves for title, _, _, curves in _panels(
        step_log.read(str(tmp_path / "losses.jsonl")),
        tensorboard_scalars(str(tmp_path)))}
    assert set(panels["Loss terms (per step)"]) == {"total", "lm (NTP)", "jepa", "stp"}  # every loss term
    assert panels["In-training eval"]["exact"] == ([5, 10], [pytest.approx(0.5), pytest.approx(1.0)])
    assert len(panels) == 7


def test_cli_on_a_run_without_logs_says_so(tmp_path):
    p = subprocess.run([sys.executable, "tools/report.py", str(tmp_path)], cwd=rh.REPO, env=rh.env(),
                       capture_output=True, text=True, check=False, timeout=120)
    assert p.returncode == 1 and f"{tmp_path} holds no losses.jsonl steps" in p.stdout + p.stderr
