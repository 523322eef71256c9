"""Packed rows -> batch tensors: one collation for rows packed in memory and rows read from shards.

Pair indices become flat (b * T + t) into the [B*T, D] hidden states; pair and NTP index counts are
rounded to few static sizes so compiled steps see few distinct shapes.
"""
from __future__ import annotations

import numpy as np
import torch

from megajepa.data.packing import IGNORE, PackedRow

FIELDS = ("input_ids", "labels", "position_ids", "seg", "ctx_seg", "ctx_end")


def bucket(n: int, minimum: int = 8) -> int:
    """Static pair-count buckets (powers of two) so compiled steps see few distinct shapes."""
    size = minimum
    while size < n:
        size *= 2
    return size


def add_ntp_index(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`ntp_idx`/`ntp_labels`: the labelled positions (flat b * T + t) and their labels, so the output head
    runs on those rows only: predictors, isolated copies, prompts and padding never reach the vocabulary
    matmul. Host-side, in the loader's thread (no device sync); the count is rounded up to a multiple of
    1/16 of the next power of two (under 12.5% padding, 16 shapes per octave for torch.compile), never
    past B * T."""
    labels = batch["labels"].reshape(-1)
    idx = (labels != IGNORE).nonzero().squeeze(1)
    n, total = len(idx), len(labels)
    step = max(8, 1 << max(0, n.bit_length() - 4))  # <= n / 8
    size = min(total, max(step, -(-n // step) * step))  # >= 8 rows: a batch without labels is all padding
    pad = size - n
    batch["ntp_idx"] = torch.cat([idx, torch.zeros(pad, dtype=torch.long)])
    batch["ntp_labels"] = torch.cat([labels[idx], torch.full((pad,), IGNORE, dtype=torch.long)])
    return batch


def collate_arrays(fields: dict[str, np.ndarray], pairs: list) -> dict[str, torch.Tensor]:
    """[B, T] arrays for each of FIELDS and each row's (pred, target) index pairs -> batch tensors."""
    t = fields["input_ids"].shape[1]
    batch = {f: torch.from_numpy(np.ascontiguousarray(fields[f], dtype=np.int64)) for f in FIELDS}
    flat = np.concatenate([np.asarray(p, dtype=np.int64).reshape(-1, 2) + b * t for b, p in enumerate(pairs)])
    pad = bucket(len(flat)) - len(flat)
    batch["pred_idx"] = torch.from_numpy(np.concatenate([flat[:, 0], np.zeros(pad, np.int64)]))
    batch["tgt_idx"] = torch.from_numpy(np.concatenate([flat[:, 1], np.zeros(pad, np.int64)]))
    batch["pair_mask"] = torch.tensor([1.0] * len(flat) + [0.0] * pad)
    return add_ntp_index(batch)


def collate(rows: list[PackedRow]) -> dict[str, torch.Tensor]:
    """Rows packed in memory -> batch tensors."""
    return collate_arrays({f: np.array([getattr(r, f) for r in rows], dtype=np.int64) for f in FIELDS},
                          [r.pairs for r in rows])
