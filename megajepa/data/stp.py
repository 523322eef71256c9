"""Semantic Tube Prediction samples, drawn on the host when a batch is collated (objective/stp.py uses them).

A document is one NTP stream of a packed row: (Text start, Text end, Code start, Code end), row positions
(packing.PackedRow.docs; Code is empty for a one-view document). Each sample is two vectors, each a sum of
up to 3 displacements h[end] - h[start] of the final-norm hidden states; D(x, y) = h[y - 1] - h[x - 1] is
the displacement over tokens [x, y) (an empty one is h[x - 1] - h[x - 1] = 0):
  triples      s < r < t in [Text start, Code end), the document's content: (h_r - h_s, h_t - h_r)
  random_span  over the Text + Code tokens (the gap between them skipped), a span [a, b) that is not all of
               them: (rest = D(before the span) + D(after it), patch = D(a, b)), as the reference's
               random_span (its _get_s_t and _get_span_embeddings)
  e2e          (D(Text), D(Code))
Draws come from a numpy Generator seeded by (run seed, epoch, row's place in the epoch's global order), so a
resumed run and any rank count see the same samples. A document too short for the mode (triples: < 3
content tokens; random_span: < 2 Text + Code tokens; e2e: an empty Text or Code) gets no sample and is
counted.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from megajepa.data.collate import bucket

STP_STREAM = 0x737470  # "stp": keeps these draws apart from every other use of the seed
TERMS = 3  # displacements per vector at most (random_span's rest inside Code: Text, before, after)


@dataclass
class StpSampling:
    mode: str
    samples_per_document: int
    length_weighting: str
    seed: int

    @classmethod
    def from_run(cls, cfg) -> StpSampling | None:
        """None when stp.lambda is 0: batches then carry no STP keys and nothing changes."""
        s = cfg.stp
        return cls(s.mode, s.samples_per_document, s.length_weighting, cfg.seed) if s.lam > 0 else None


def length_weight(kind: str, full: int, patch: int) -> float:
    """The reference's length_adjustment: how balanced the span and the rest are (1 when equal)."""
    rest = full - patch
    if kind == "cosine_like":
        return 2.0 * rest * patch / (rest * rest + patch * patch)
    if kind == "jaccard_like":
        return 1.0 - abs(rest - patch) / (rest + patch)
    return 1.0


def _span(rng: np.random.Generator, full: int) -> tuple[int, int]:
    """[s, t) in [0, full), s uniform, t uniform in (s, full], never the whole range (the reference's draw)."""
    s = int(rng.integers(0, full))
    while True:
        t = int(rng.integers(s + 1, full + 1))
        if t - s < full:
            return s, t


def _random_span(rng, us, ue, cs, ce, weighting):
    """((rest displacements), (patch displacements), weight) as (x, y) token ranges."""
    text = ue - us
    full = text + ce - cs
    s, t = _span(rng, full)
    ps = us + s if s < text else cs + s - text  # offsets past Text continue at Code's start
    pt = us + t if t < text else cs + t - text
    if ps >= cs:  # inside Code
        rest, patch = ((us, ue), (cs, ps), (pt, ce)), ((ps, pt),)
    elif pt <= ue:  # inside Text
        rest, patch = ((us, ps), (pt, ue), (cs, ce)), ((ps, pt),)
    else:  # from Text into Code
        rest, patch = ((us, ps), (pt, ce)), ((ps, ue), (cs, pt))
    return rest, patch, length_weight(weighting, full, t - s)


def _as_rows(displacements) -> list[tuple[int, int]]:
    """Token ranges (x, y) -> hidden-row pairs (y - 1, x - 1), padded with zero displacements."""
    rows = [(y - 1, x - 1) for x, y in displacements]
    return rows + [(0, 0)] * (TERMS - len(rows))


def sample_document(rng: np.random.Generator, doc, sampling: StpSampling) -> list | None:
    """`samples_per_document` samples of one document: [(a rows, b rows, weight)], None when too short."""
    us, ue, cs, ce = doc
    out = []
    for _ in range(sampling.samples_per_document):
        if sampling.mode == "triples":
            if ce - us < 3:
                return None
            s, r, t = sorted(int(i) for i in rng.choice(ce - us, 3, replace=False) + us)
            out.append(([(r, s)] + [(0, 0)] * (TERMS - 1), [(t, r)] + [(0, 0)] * (TERMS - 1), 1.0))
        elif sampling.mode == "random_span":
            if (ue - us) + (ce - cs) < 2:
                return None
            rest, patch, w = _random_span(rng, us, ue, cs, ce, sampling.length_weighting)
            out.append((_as_rows(rest), _as_rows(patch), w))
        elif sampling.mode == "e2e":
            if ue - us < 1 or ce - cs < 1:
                return None
            out.append((_as_rows([(us, ue)]), _as_rows([(cs, ce)]), 1.0))
        else:
            raise ValueError(f"stp.mode: unknown mode {sampling.mode!r}")
    return out


def add_stp_samples(batch: dict[str, torch.Tensor], row_docs: list, epoch: int, first_row: int,
                    sampling: StpSampling) -> dict[str, torch.Tensor]:
    """`stp_idx` [S, 2, TERMS, 2] flat hidden rows (end, start) of each vector's displacements, `stp_weight`
    [S] (0 in padded slots; S bucketed like the JEPA pairs) and `stp_skipped`: documents too short for the
    mode. Row b of the batch is row `first_row + b` of epoch `epoch`'s global order."""
    seq_len = batch["input_ids"].shape[1]
    idx, weights, skipped = [], [], 0
    for b, docs in enumerate(row_docs):
        rng = np.random.default_rng([sampling.seed, STP_STREAM, epoch, first_row + b])
        for doc in docs:
            samples = sample_document(rng, [int(x) for x in doc], sampling)
            if samples is None:
                skipped += 1
                continue
            for a, v, w in samples:
                idx.append(np.asarray([a, v], dtype=np.int64) + b * seq_len)
                weights.append(w)
    pad = bucket(len(idx)) - len(idx)
    empty = np.zeros((pad, 2, TERMS, 2), dtype=np.int64)
    batch["stp_idx"] = torch.from_numpy(np.concatenate([np.asarray(idx, dtype=np.int64).reshape(-1, 2, TERMS, 2),
                                                        empty]))
    batch["stp_weight"] = torch.tensor(weights + [0.0] * pad, dtype=torch.float32)
    batch["stp_skipped"] = torch.tensor(float(skipped))
    return batch
