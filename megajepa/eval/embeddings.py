"""Enc(Text), Enc(Code) and Pred(Enc(Text)) for two-view examples, and the geometry the paper reports
(its Table 14 and the SVD figure): the spectrum of Enc(Text) - Enc(Code), the least-squares error of the
best linear map Text -> Code, effective ranks.

Each view is encoded on its own, rendered by data/layout.py exactly as the packer lays it out:
  Enc(Text)        last token of `bos Text sep`   (embed_at=end; `bos Text` with embed_at=last)
  Pred(Enc(Text))  last token of `bos Text sep pred_1..pred_k`   (k=0: Enc(Text) itself)
  Enc(Code)        last token of `bos Code eos`   (embed_at=end; `bos Code` with embed_at=last)
"""
from __future__ import annotations

import torch

from megajepa.data import layout
from megajepa.data.layout import Specials
from megajepa.objective.geometry import collapse_stats, effective_rank


def view_sequences(tokenizer, text: str, code: str, predictors: int, embed_at: str) -> tuple[list, list, list]:
    """(Enc(Text), Pred(Enc(Text)), Enc(Code)) token ids, each the layout's standalone view."""
    sp = Specials.from_tokenizer(tokenizer)
    text_marker, code_marker = layout.markers(2, sp)
    text_ids = layout.standalone(tokenizer.encode(text), sp, text_marker, embed_at)
    code_ids = layout.standalone(tokenizer.encode(code), sp, code_marker, embed_at)
    return text_ids, text_ids + layout.predictor_block(sp, predictors), code_ids


@torch.no_grad()
def last_hidden(model, sequences: list[list[int]], batch_size: int = 64) -> torch.Tensor:
    """Final-norm hidden state at each sequence's last token; right padding cannot reach it (causal)."""
    out = []
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start:start + batch_size]
        width = max(len(s) for s in batch)
        ids = torch.tensor([s + [0] * (width - len(s)) for s in batch])
        positions = torch.arange(width).expand(len(batch), width)
        causal = torch.ones(width, width, dtype=torch.bool).tril()[None, None]
        hidden = model(ids, positions, causal)
        last = torch.tensor([len(s) - 1 for s in batch])
        out.append(hidden[torch.arange(len(batch)), last].float())
    return torch.cat(out)


def embed_pairs(model, tokenizer, pairs: list[tuple[str, str]], predictors: int = 1, embed_at: str = "end",
                batch_size: int = 64) -> dict[str, torch.Tensor]:
    """{"enc_text", "pred", "enc_code"}: [N, D] float32 for N (Text, Code) pairs."""
    model.eval()
    seqs = [view_sequences(tokenizer, t, c, predictors, embed_at) for t, c in pairs]
    enc_text = last_hidden(model, [s[0] for s in seqs], batch_size)
    pred = last_hidden(model, [s[1] for s in seqs], batch_size) if predictors else enc_text
    return {"enc_text": enc_text, "pred": pred, "enc_code": last_hidden(model, [s[2] for s in seqs], batch_size)}


def linear_map_error(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """min_W ||x W - y||_F^2 (the paper's Table 14 quantity) and the same relative to ||y||_F^2.
    Needs more rows than columns, else some W fits exactly."""
    if x.shape[0] <= x.shape[1]:
        raise ValueError(f"linear map error needs more examples ({x.shape[0]}) than embedding width ({x.shape[1]})")
    x64, y64 = x.double(), y.double()
    w = torch.linalg.lstsq(x64, y64).solution
    residual = float(((x64 @ w - y64) ** 2).sum())
    return {"lstsq_error": residual, "lstsq_relative": residual / float((y64 ** 2).sum())}


def analyze(emb: dict[str, torch.Tensor]) -> dict:
    """Scalars and spectra for the report (JSON-ready)."""
    diff = emb["enc_text"] - emb["enc_code"]
    out = {"n": emb["enc_text"].shape[0], "dim": emb["enc_text"].shape[1],
           "svd_text_minus_code": torch.linalg.svdvals(diff.double()).tolist(),
           "effective_rank": {k: effective_rank(v) for k, v in emb.items()},
           "text_to_code": linear_map_error(emb["enc_text"], emb["enc_code"]),
           "pred_to_code": linear_map_error(emb["pred"], emb["enc_code"])}
    stats = collapse_stats(emb["pred"], emb["enc_code"])
    out["cos_pred_code"] = stats["collapse/cos_pred_target"]
    out["cos_pred_other_code"] = stats["collapse/cos_pred_other"]
    return out
