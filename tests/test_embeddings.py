"""The analysis tool's embeddings are the training objective's (packed rows), and its linear-map error is
the least-squares residual."""
import numpy as np
import pytest
import torch
from helpers import SPECIALS as SP
from helpers import random_views, tiny_model

from megajepa.config import JepaConfig
from megajepa.data.collate import collate
from megajepa.data.packing import LayoutConfig, build_unit, place
from megajepa.eval.embeddings import analyze, embed_pairs, linear_map_error
from megajepa.objective.hybrid import HybridObjective


class IdTokenizer:
    """Text is space-separated token ids: the test controls every id."""
    bos_id, eos_id, sep_id, pad_id, predictor_ids = SP.bos, SP.eos, SP.sep, SP.pad, SP.predictors

    def encode(self, text):
        return [int(t) for t in text.split()]


@pytest.mark.parametrize("k,embed_at", [(1, "end"), (3, "last"), (0, "end")])
def test_embeddings_equal_the_packed_objective(k, embed_at):
    model = tiny_model(seed=2)
    rng = np.random.default_rng(0)
    examples = [random_views(rng) for _ in range(5)]
    objective = HybridObjective(model, JepaConfig.paper(predictors=k, embed_at=embed_at))
    layout = LayoutConfig(predictors=k, embed_at=embed_at)
    pred, target = [], []
    with torch.no_grad():
        for views in examples:  # the training path: one packed row per example, Pred and Enc gathered
            batch = collate(place([build_unit(views, SP, layout)], 64, SP))
            _, stats = objective(batch, torch.tensor(1.0), torch.tensor(1.0))
            pred.append(stats["pred"][0])
            target.append(stats["target"][0])
    pairs = [(" ".join(map(str, t)), " ".join(map(str, c))) for t, c in examples]
    emb = embed_pairs(model, IdTokenizer(), pairs, predictors=k, embed_at=embed_at, batch_size=2)
    torch.testing.assert_close(emb["pred"], torch.stack(pred), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb["enc_code"], torch.stack(target), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(emb["enc_text"], emb["enc_code"])


def test_linear_map_error_is_the_projection_residual():
    g = torch.Generator().manual_seed(0)
    x, noise = torch.randn(40, 6, generator=g), torch.randn(40, 5, generator=g)
    w = torch.randn(6, 5, generator=g)
    assert linear_map_error(x, x @ w)["lstsq_error"] < 1e-9  # an exact linear map: no error
    y = x @ w + noise
    projection = x @ torch.linalg.pinv(x)  # residual = ||(I - P) y||^2, computed another way
    expected = float(((torch.eye(40) - projection) @ y).pow(2).sum())
    got = linear_map_error(x, y)
    assert got["lstsq_error"] == pytest.approx(expected, rel=1e-6)
    assert got["lstsq_relative"] == pytest.approx(expected / float(y.pow(2).sum()), rel=1e-6)
    with pytest.raises(ValueError, match="more examples"):
        linear_map_error(x[:6], y[:6])


def test_analyze_reports_spectrum_and_ranks():
    g = torch.Generator().manual_seed(1)
    text = torch.randn(30, 8, generator=g)
    code = text.clone()
    code[:, 0] += 1.0  # Text - Code is rank one
    out = analyze({"enc_text": text, "pred": code.clone(), "enc_code": code})
    s = out["svd_text_minus_code"]
    assert len(s) == 8 and s[0] == pytest.approx(30 ** 0.5) and max(s[1:]) < 1e-9
    assert out["cos_pred_code"] == pytest.approx(1.0)
    assert out["text_to_code"]["lstsq_error"] > 1.0  # a constant shift is affine, not linear
    assert set(out["effective_rank"]) == {"enc_text", "pred", "enc_code"}
