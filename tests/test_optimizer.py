"""On CPU the resolved DeepSpeed config selects torch's fused AdamW (no JIT-built op), and the ZeRO-3
engine's update equals DeepSpeed's own FusedAdam and a direct AdamW formula."""
import copy
import logging
import os

import pytest
import torch

from megajepa.config import RunConfig
from megajepa.training.engine import build_engine, resolve_ds_config
from helpers import run_gloo_ranks

STEPS = 3


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(8, 16)
        self.b = torch.nn.Linear(16, 1)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x))).square().mean()


def _run_cfg() -> RunConfig:
    cfg = RunConfig()
    cfg.train.micro_batch_size, cfg.train.warmup_steps, cfg.train.max_steps = 4, 1, STEPS
    cfg.train.grad_clip = 1e6  # the formula below has no clipping
    return cfg


def _engine_params(ds: dict, init: Toy, xs) -> tuple[dict, list[float], str]:
    import deepspeed
    engine = build_engine(copy.deepcopy(init), ds, weight_decay=0.1)
    lrs = []
    for x in xs:
        lrs.append(engine.get_lr()[0])
        engine.backward(engine(x))
        engine.step()
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        params = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    kind = type(engine.optimizer.optimizer).__name__
    engine.destroy()
    return params, lrs, kind


def _adamw_formula(init: Toy, xs, lrs, betas, eps, wd) -> dict:
    model = copy.deepcopy(init)
    state = {n: (torch.zeros_like(p), torch.zeros_like(p)) for n, p in model.named_parameters()}
    for t, (x, lr) in enumerate(zip(xs, lrs), start=1):
        model.zero_grad()
        model(x).backward()
        with torch.no_grad():
            for n, p in model.named_parameters():
                m, v = state[n]
                m.mul_(betas[0]).add_((1 - betas[0]) * p.grad)
                v.mul_(betas[1]).add_((1 - betas[1]) * p.grad ** 2)
                p.mul_(1 - lr * (wd if p.ndim >= 2 else 0.0))
                p.sub_(lr * (m / (1 - betas[0] ** t)) / ((v / (1 - betas[1] ** t)).sqrt() + eps))
    return {n: p.detach() for n, p in model.named_parameters()}


def _compare(rank):
    import os
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")  # what a launcher sets for DeepSpeed
    ds = resolve_ds_config(_run_cfg(), world_size=1)
    assert ds["optimizer"]["params"]["torch_adam"] is True
    torch.manual_seed(0)
    init = Toy()
    xs = [torch.randn(4, 8) for _ in range(STEPS)]
    ours, lrs, kind = _engine_params(ds, init, xs)
    assert kind == "AdamW"
    ds_fused = copy.deepcopy(ds)
    del ds_fused["optimizer"]["params"]["torch_adam"], ds_fused["optimizer"]["params"]["fused"]
    theirs, _, their_kind = _engine_params(ds_fused, init, xs)
    assert their_kind == "FusedAdam"
    p = ds["optimizer"]["params"]
    direct = _adamw_formula(init, xs, lrs, p["betas"], p["eps"], p["weight_decay"])
    moved = [n for n in ours if not torch.equal(ours[n], dict(init.named_parameters())[n])]
    assert len(moved) == len(ours)
    for n in ours:
        torch.testing.assert_close(ours[n], theirs[n], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(ours[n], direct[n], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_cpu_torch_adamw_equals_deepspeed_fused_adam_and_formula():
    run_gloo_ranks(_compare, 1)


def _resolved(bf16, ds_path=None) -> dict:
    cfg = _run_cfg()
    cfg.train.bf16, cfg.deepspeed_config = bf16, ds_path
    return resolve_ds_config(cfg, world_size=1)


def _cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as f:
        return set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())


@pytest.mark.skipif(not os.path.isfile("/proc/cpuinfo"), reason="reads the CPU's flags from /proc/cpuinfo")
def test_bf16_on_a_cpu_without_onednn_bf16_warns(caplog):
    """The warning follows the CPU's own flags: oneDNN multiplies bf16 from AVX512 (F, BW, VL, DQ), AMX or
    AVX-NE-CONVERT on; on anything less (an AVX2 EPYC) torch's fallback runs at ~0.5 GFLOP/s."""
    flags = _cpu_flags()
    onednn_bf16 = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags or bool({"amx_bf16", "avx_ne_convert"} & flags)
    for bf16, expect in ((True, not onednn_bf16 and not torch.cuda.is_available()), (False, False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="megajepa.training.engine"):
            _resolved(bf16)
        assert any("bf16 matmuls" in r.getMessage() for r in caplog.records) is expect, (bf16, sorted(flags))


def test_train_bf16_sets_the_deepspeed_bf16_section(tmp_path):
    from megajepa.config import ConfigError, load_config
    from megajepa.training.engine import bf16_available
    assert _resolved("auto")["bf16"]["enabled"] is bf16_available()
    assert _resolved(True)["bf16"]["enabled"] is True
    assert _resolved(False)["bf16"]["enabled"] is False
    assert load_config(None, ["train.bf16=true"]).train.bf16 is True
    with pytest.raises(ConfigError, match="train.bf16"):
        load_config(None, ["train.bf16=yes please"])
    (tmp_path / "ds.json").write_text('{"bf16": {"enabled": false}}')
    with pytest.raises(ConfigError, match="bf16.enabled"):
        _resolved(True, str(tmp_path / "ds.json"))
