"""NTP on CPU runs torch's chunked linear cross-entropy with our chunk size: several chunks (and a
partial last one) give the loss and gradients of materialised logits. (~2 s)"""
import torch
import torch.nn.functional as F

from megajepa.objective import losses


def test_chunked_ntp_equals_materialised(monkeypatch):
    monkeypatch.setattr(losses, "CPU_CHUNK_LOGITS", 300 * 256)  # 256-row chunks at vocab 300
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 500, 32, generator=g, requires_grad=True)
    w = (torch.randn(300, 32, generator=g) / 32**0.5).requires_grad_()
    y = torch.randint(0, 300, (2, 500), generator=g)
    y[:, ::7] = losses.IGNORE
    assert losses.chunk_options(h.reshape(-1, 32), 300).batch_chunk_size == 256  # 4 chunks for 1000 rows
    loss = losses.fused_linear_cross_entropy(h, w, y)
    dh, dw = torch.autograd.grad(loss, (h, w))
    ref = F.cross_entropy(h.reshape(-1, 32) @ w.T, y.reshape(-1), ignore_index=losses.IGNORE, reduction="sum")
    rdh, rdw = torch.autograd.grad(ref, (h, w))
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(dh, rdh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dw, rdw, rtol=1e-5, atol=1e-5)  # sums over 1000 rows
