"""FLOPs accounting: the formula against DeepSpeed's flops profiler, and the sparse pair count against
the dense mask it stands for. (~5 s)"""
import pytest
import torch
from deepspeed.profiling.flops_profiler import FlopsProfiler
from helpers import random_packed_batch, tiny_model
from torch import nn

from megajepa.model import flops
from megajepa.model.attention import dense_mask
from megajepa.model.transformer import Attention, OutputHead


def random_batch(seed: int, k: int = 2):
    return random_packed_batch(seed, predictors=k)


@pytest.mark.parametrize("seed,k", [(0, 0), (1, 1), (2, 3)])
def test_attended_pairs_equal_dense_mask(seed, k):
    batch = random_batch(seed, k)
    mask = dense_mask(batch["seg"], batch["ctx_seg"], batch["ctx_end"])[:, 0]
    real = batch["seg"] >= 0
    assert (batch["ctx_seg"] >= 0).any() or k == 0  # predictor blocks read a prefix
    assert not real.all()  # padding present and excluded
    expected = int(mask[real].sum())
    assert flops.attended_pairs(batch["seg"], batch["ctx_seg"], batch["ctx_end"]) == expected
    # The block-sparse count is well below the causal count of the same rows.
    causal = int(sum(int(r.sum()) * (int(r.sum()) + 1) // 2 for r in real))
    assert expected < causal


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": False, "n_kv_heads": 4}])
def test_forward_flops_match_deepspeed_profiler(overrides):
    """DeepSpeed counts F.linear and SDPA by their runtime shapes (SDPA densely, so the mask is all
    keys here); our formula counts them from the config alone."""
    model = tiny_model(seed=0, **overrides)
    cfg = model.config
    b, t = 2, 24
    ids = torch.randint(0, cfg.vocab_size, (b, t))
    pos = torch.arange(t).expand(b, t)
    prof = FlopsProfiler(model)
    prof.start_profile()
    with torch.no_grad():
        model.lm_head(model(ids, pos, None))  # no mask: every query attends all t keys
    matmul = sum(m.__flops__ for m in model.modules() if isinstance(m, (nn.Linear, OutputHead, Attention)))
    total = prof.get_total_flops()
    prof.end_profile()
    assert matmul == flops.forward_flops(cfg, b * t, b * t * t)
    silu = cfg.n_layers * b * t * cfg.ffn_dim  # the only non-matmul op the profiler counts here
    assert total == matmul + silu


def test_batch_flops_and_throughput_scalars():
    model = tiny_model(seed=0)
    batch = random_batch(3)
    n = int((batch["seg"] >= 0).sum())
    pairs = flops.attended_pairs(batch["seg"], batch["ctx_seg"], batch["ctx_end"])
    assert flops.batch_train_flops(model.config, batch) == 3 * flops.forward_flops(model.config, n, pairs)
    cpu = flops.throughput_scalars(4e9, 2.0, torch.device("cpu"), world=2)
    assert cpu == {"throughput/gflops": 1.0}
    assert flops.peak_flops(torch.device("cpu")) is None


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                       ("NVIDIA A100-SXM4-80GB", 312e12), ("Some Future GPU", None)])
def test_mfu_against_the_peak_table(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    scalars = flops.throughput_scalars(2 * 300e12, 2.0, torch.device("cuda"), world=2)  # 150 TFLOP/s each
    assert scalars["throughput/tflops"] == pytest.approx(150.0)
    if peak is None:
        assert "throughput/mfu" not in scalars
    else:
        assert scalars["throughput/mfu"] == pytest.approx(150e12 / peak)
