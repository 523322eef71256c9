"""Views -> packed rows at the token floor.

An example becomes a *unit*: a few segments that must share a row, plus the (Pred, target) position
pairs of its JEPA term. The default two-view layout (ARCHITECTURE.md):

    [bos Text sep Code eos | pred_1..pred_k | bos Code eos]
     NTP stream             predictor block   isolated copy of Code

- The predictor block continues Text's position ids and reads only the stream's `bos Text sep`
  prefix (`bos Text` with embed_at=last) and itself; its last token is Pred(Enc(Text)).
- The copy starts at position 0 and reads only itself; its last token is Enc(Code).
- k = 0: Enc(Text) itself (the marker after Text in the stream) is the prediction.
Units are placed into fixed-length rows first-fit, so padding is only what no unit could fill.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

IGNORE = -100


@dataclass
class Segment:
    tokens: list[int]
    positions: list[int]
    labels: list[int]  # next-token target per position, IGNORE where no loss
    ctx: int = -1  # index (within the unit) of the one earlier segment this one may read
    ctx_len: int = 0  # how many leading tokens of `ctx` it may read


@dataclass
class Unit:
    segments: list[Segment]
    pairs: list[tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=list)  # ((seg, i) pred, tgt)

    @property
    def n_tokens(self) -> int:
        return sum(len(s.tokens) for s in self.segments)


@dataclass
class Specials:
    bos: int
    eos: int
    sep: int
    pad: int
    predictors: list[int]

    @classmethod
    def from_tokenizer(cls, tok) -> "Specials":
        return cls(tok.bos_id, tok.eos_id, tok.sep_id, tok.pad_id, list(tok.predictor_ids))


@dataclass
class LayoutConfig:
    predictors: int = 1
    embed_at: str = "end"  # end: view's end marker (sep / eos) | last: its last content token
    train_all: bool = False  # NTP on every stream token, not just the answer view

    @classmethod
    def from_run(cls, cfg) -> "LayoutConfig":
        return cls(predictors=cfg.jepa.predictors, embed_at=cfg.jepa.embed_at, train_all=cfg.data.train_all)


def _stream(views: list[list[int]], sp: Specials, train_all: bool) -> Segment:
    """`bos v0 sep v1 eos` (or `bos v eos` for one view); labels on v1 + eos, or everything."""
    tokens = [sp.bos]
    for i, view in enumerate(views):
        tokens += view + [sp.sep if i < len(views) - 1 else sp.eos]
    answer_start = len(tokens) - len(views[-1]) - 1  # index of v1's first token
    labels = []
    for i in range(len(tokens)):
        target = tokens[i + 1] if i + 1 < len(tokens) else IGNORE
        labels.append(target if train_all or i + 1 >= answer_start else IGNORE)
    return Segment(tokens, list(range(len(tokens))), labels)


def _copy(view: list[int], sp: Specials, embed_at: str) -> Segment:
    """The view encoded on its own: `bos v eos` (`bos v` with embed_at=last; the eos would be unread)."""
    tokens = [sp.bos] + view + ([sp.eos] if embed_at == "end" else [])
    return Segment(tokens, list(range(len(tokens))), [IGNORE] * len(tokens))


def _predictor_block(ctx: int, prefix_len: int, k: int, sp: Specials) -> Segment:
    """k predictor tokens continuing the positions of a `prefix_len`-token prefix of segment `ctx`."""
    return Segment(sp.predictors[:k], list(range(prefix_len, prefix_len + k)), [IGNORE] * k, ctx, prefix_len)


def build_unit(views: list[list[int]], sp: Specials, layout: LayoutConfig, with_jepa: bool = True) -> Unit:
    """Two-view example (Text, Code) -> unit. Without JEPA (loss dropout, lambda=0) only the stream."""
    text, code = views
    segments = [_stream(views, sp, layout.train_all)]
    if not with_jepa:
        return Unit(segments)
    # Enc(Text) lives in the stream: its marker (sep) or its last token.
    text_enc = len(text) + 1 if layout.embed_at == "end" else len(text)
    prefix_len = text_enc + 1
    if layout.predictors:
        segments.append(_predictor_block(0, prefix_len, layout.predictors, sp))
        pred = (1, layout.predictors - 1)
    else:
        pred = (0, text_enc)
    segments.append(_copy(code, sp, layout.embed_at))
    target = (len(segments) - 1, len(segments[-1].tokens) - 1)
    return Unit(segments, [(pred, target)])


@dataclass
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    seg: list[int]
    ctx_seg: list[int]
    ctx_end: list[int]
    pairs: list[tuple[int, int]]  # (pred index, target index) within the row
    n_units: int = 0

    @property
    def n_real(self) -> int:
        return sum(1 for s in self.seg if s >= 0)


class _OpenRow:
    def __init__(self):
        self.units: list[Unit] = []
        self.used = 0


def place(units: list[Unit], seq_len: int, sp: Specials, max_open: int = 32) -> list[PackedRow]:
    """First-fit units into rows of `seq_len` tokens; a unit never straddles rows. Deterministic."""
    open_rows: list[_OpenRow] = []
    done: list[PackedRow] = []
    for unit in units:
        n = unit.n_tokens
        if n > seq_len:
            raise ValueError(f"a unit of {n} tokens does not fit data.seq_len={seq_len}")
        row = next((r for r in open_rows if r.used + n <= seq_len), None)
        if row is None:
            if len(open_rows) >= max_open:  # close the fullest row to bound the buffer
                fullest = max(range(len(open_rows)), key=lambda i: open_rows[i].used)
                done.append(_materialise(open_rows.pop(fullest).units, seq_len, sp))
            row = _OpenRow()
            open_rows.append(row)
        row.units.append(unit)
        row.used += n
    done.extend(_materialise(r.units, seq_len, sp) for r in open_rows)
    return done


def _materialise(units: list[Unit], seq_len: int, sp: Specials) -> PackedRow:
    row = PackedRow([], [], [], [], [], [], [], len(units))
    seg_id = 0
    for unit in units:
        starts, ids = [], []
        for segment in unit.segments:
            starts.append(len(row.input_ids))
            ids.append(seg_id)
            n = len(segment.tokens)
            row.input_ids += segment.tokens
            row.labels += segment.labels
            row.position_ids += segment.positions
            row.seg += [seg_id] * n
            has_ctx = segment.ctx >= 0
            row.ctx_seg += [ids[segment.ctx] if has_ctx else -1] * n
            row.ctx_end += [starts[segment.ctx] + segment.ctx_len if has_ctx else 0] * n
            seg_id += 1
        for (ps, pi), (ts, ti) in unit.pairs:
            row.pairs.append((starts[ps] + pi, starts[ts] + ti))
    pad = seq_len - len(row.input_ids)
    row.input_ids += [sp.pad] * pad
    row.labels += [IGNORE] * pad
    row.position_ids += [0] * pad
    row.seg += [-1] * pad
    row.ctx_seg += [-1] * pad
    row.ctx_end += [0] * pad
    return row


def bucket(n: int, minimum: int = 8) -> int:
    """Static pair-count buckets (powers of two) so compiled steps see few distinct shapes."""
    size = minimum
    while size < n:
        size *= 2
    return size


def collate(rows: list[PackedRow]) -> dict[str, torch.Tensor]:
    """Rows -> batch tensors. Pair indices are flat (b * T + t) into the [B*T, D] hidden states."""
    t = len(rows[0].input_ids)
    batch = {name: torch.tensor([getattr(r, name) for r in rows], dtype=torch.long)
             for name in ("input_ids", "labels", "position_ids", "seg", "ctx_seg", "ctx_end")}
    flat = [(b * t + p, b * t + q) for b, r in enumerate(rows) for p, q in r.pairs]
    size = bucket(len(flat))
    pad = size - len(flat)
    batch["pred_idx"] = torch.tensor([p for p, _ in flat] + [0] * pad, dtype=torch.long)
    batch["tgt_idx"] = torch.tensor([q for _, q in flat] + [0] * pad, dtype=torch.long)
    batch["pair_mask"] = torch.tensor([1.0] * len(flat) + [0.0] * pad)
    return batch
