"""Views -> packed rows at the token floor. Which tokens each piece holds is data/layout.py; this module
gives them positions, labels and what each segment may read.

An example becomes a *unit*: a few segments that must share a row, plus the (Pred, target) position
pairs of its JEPA term. The default two-view layout (docs/architecture.md):

    [bos Text sep Code eos | pred_1..pred_k | bos Code eos]
     NTP stream             predictor block   isolated copy of Code

- Enc(v) is the hidden state at the end of `bos v marker` encoded alone (marker: sep after every
  view but the last, eos after the last, eos for every view in train_all; embed_at=last drops the
  marker and uses v's last token).
- A view whose standalone encoding is already a prefix of some segment (Text in the stream, every
  view in train_all mode) is reused; any other view that the objective needs gets one isolated copy.
- A predictor block continues the positions of that standalone encoding and reads only it and
  itself; its last token is Pred(Enc(v)). k = 0: Enc(v) itself is the prediction.
- pred_position=front: `bos pred_1..k v marker` is its own segment (predictors change the view's
  encoding, so nothing is shared); Pred is its last token.
- N views: pairs chain (v_i predicts v_i+1) or all (every ordered pair); reverse swaps direction.
- train_all (pretraining): every view is its own NTP stream `bos v eos`, labelled on every token;
  train_all_views=first keeps only the first view's (`bos Text eos`), the others are copies (the
  reference's --plain --train_all).
- Labels: the stream's answer (v_last eos); label_prompt labels every token after bos (system, Text,
  Code), as the reference code trained.
- A prompt (chat records with a system turn) is rendered before Text in the stream, so Text is no
  longer a stream prefix and gets a copy.
Units are placed into fixed-length rows first-fit, so padding is only what no unit could fill.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field

from megajepa.config import EmbedAt, Pairs, PredPosition, TrainAllViews
from megajepa.data import layout as render
from megajepa.data.layout import Specials

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
    # STP documents: (NTP stream segment, Text [start, end), Code [start, end)) within it; Code is empty
    # (start = end = Text's end) for a one-view document
    docs: list[tuple[int, tuple[int, int], tuple[int, int]]] = field(default_factory=list)
    ntp_segments: int | None = None  # how many leading segments are NTP streams (None: all of them)

    @property
    def n_tokens(self) -> int:
        return sum(len(s.tokens) for s in self.segments)

    def without_jepa(self) -> "Unit":
        """The unit build_unit makes with with_jepa=False: the JEPA segments come after the streams, so
        it is this unit's leading segments; a kept unit serves every epoch's loss-dropout decision."""
        return Unit(self.segments[:self.ntp_segments], docs=self.docs, ntp_segments=self.ntp_segments)


@dataclass
class LayoutConfig:
    predictors: int = 1
    embed_at: EmbedAt = "end"
    train_all: bool = False  # pretraining: every view its own NTP stream, labelled everywhere
    pred_position: PredPosition = "end"
    reverse: bool = False  # Code predicts Text (every pair's direction swapped)
    pairs: Pairs = "chain"
    train_all_views: TrainAllViews = "all"  # train_all: which views are NTP streams (first: only v_0)
    label_prompt: bool = False  # the stream labelled on every token after bos, not only the answer

    @classmethod
    def from_run(cls, cfg) -> "LayoutConfig":
        j, d = cfg.jepa, cfg.data
        return cls(predictors=j.predictors, embed_at=j.embed_at, train_all=d.train_all,
                   pred_position=j.pred_position, reverse=j.reverse, pairs=j.pairs,
                   train_all_views=d.train_all_views, label_prompt=d.label_prompt)


def _labels(tokens: list[int], first_target: int) -> list[int]:
    """Next-token labels predicting tokens[first_target:]; IGNORE elsewhere."""
    return [tokens[i + 1] if i + 1 >= first_target and i + 1 < len(tokens) else IGNORE
            for i in range(len(tokens))]


def _stream(views: list[list[int]], sp: Specials, prompt: list[int] | None = None,
            label_prompt: bool = False) -> Segment:
    """The layout's stream; labels on v_last + eos (the answer), or on every token after bos (label_prompt)."""
    tokens = render.stream(views, sp, prompt)
    first_target = 1 if label_prompt else len(tokens) - len(views[-1]) - 1
    return Segment(tokens, list(range(len(tokens))), _labels(tokens, first_target))


def _own_stream(view: list[int], sp: Specials) -> Segment:
    """train_all: the layout's own stream, every token a target."""
    tokens = render.own_stream(view, sp)
    return Segment(tokens, list(range(len(tokens))), _labels(tokens, 1))


def _copy(tokens: list[int]) -> Segment:
    """An isolated segment (positions from 0, reads only itself, no NTP labels)."""
    return Segment(tokens, list(range(len(tokens))), [IGNORE] * len(tokens))


def _predictor_block(ctx: int, prefix_len: int, k: int, sp: Specials) -> Segment:
    """k predictor tokens continuing the positions of a `prefix_len`-token prefix of segment `ctx`."""
    return Segment(render.predictor_block(sp, k), list(range(prefix_len, prefix_len + k)), [IGNORE] * k, ctx, prefix_len)


def view_pairs(n_views: int, pairs: Pairs = "chain", reverse: bool = False) -> list[tuple[int, int]]:
    """(source, target) view indices: source's Pred predicts target's Enc."""
    if pairs == "chain":
        out = [(i, i + 1) for i in range(n_views - 1)]
    elif pairs == "all":
        out = [(i, j) for i in range(n_views) for j in range(n_views) if i != j]
    else:
        raise ValueError(f"jepa.pairs must be one of {'|'.join(typing.get_args(Pairs))}, got {pairs!r}")
    return [(t, s) for s, t in out] if reverse else out


def build_unit(views: list[list[int]], sp: Specials, layout: LayoutConfig, with_jepa: bool = True,
               prompt: list[int] | None = None, jepa_views: list[list[int]] | None = None) -> Unit:
    """An example's views (Text, Code, ... ; token ids without specials) -> unit. Without JEPA (loss
    dropout, lambda=0) only the NTP stream(s). `prompt`: tokens rendered before Text (chat system turn);
    train_all ignores it (every view is its own stream). `jepa_views` (data.views): the JEPA term pairs
    these instead of the stream's views; none of them is a stream prefix, so each gets a copy."""
    n = len(views)
    markers = render.markers(n, sp, layout.train_all)
    if layout.train_all:
        streams = views if layout.train_all_views == "all" else views[:1]
        segments = [_own_stream(v, sp) for v in streams]
        standalone = {i: (i, len(render.standalone(v, sp, markers[i], layout.embed_at))) for i, v in enumerate(streams)}
        docs = [(i, (1, 1 + len(v)), (1 + len(v), 1 + len(v))) for i, v in enumerate(streams)]
    else:
        segments = [_stream(views, sp, prompt, layout.label_prompt)]
        standalone = {} if prompt else {0: (0, len(render.standalone(views[0], sp, markers[0], layout.embed_at)))}
        spans = render.view_spans(views, sp, prompt)
        docs = [(0, spans[0], spans[-1] if n > 1 else (spans[0][1], spans[0][1]))]
    if jepa_views:
        views, standalone = jepa_views, {}
        n, markers = len(views), render.markers(len(views), sp, layout.train_all)
    ntp_segments = len(segments)
    if not with_jepa or n < 2:
        return Unit(segments, docs=docs, ntp_segments=ntp_segments)

    def encoding(i: int) -> tuple[int, int]:
        """(segment, length) whose first `length` tokens are `bos v_i marker` alone; copy if none."""
        if i not in standalone:
            tokens = render.standalone(views[i], sp, markers[i], layout.embed_at)
            segments.append(_copy(tokens))
            standalone[i] = (len(segments) - 1, len(tokens))
        return standalone[i]

    directed = view_pairs(n, layout.pairs, layout.reverse)
    k = layout.predictors
    preds: dict[int, tuple[int, int]] = {}
    for src in dict.fromkeys(s for s, _ in directed):  # one Pred per source view, whatever its targets
        if k and layout.pred_position == "front":
            tokens = render.standalone(views[src], sp, markers[src], layout.embed_at, render.predictor_block(sp, k))
            segments.append(_copy(tokens))
            preds[src] = (len(segments) - 1, len(tokens) - 1)
        elif k:
            seg, length = encoding(src)
            segments.append(_predictor_block(seg, length, k, sp))
            preds[src] = (len(segments) - 1, k - 1)
        else:
            seg, length = encoding(src)
            preds[src] = (seg, length - 1)
    pairs = []
    for src, tgt in directed:
        seg, length = encoding(tgt)
        pairs.append((preds[src], (seg, length - 1)))
    return Unit(segments, pairs, docs, ntp_segments)


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
    # STP documents within the row: (Text start, Text end, Code start, Code end)
    docs: list[tuple[int, int, int, int]] = field(default_factory=list)

    @property
    def n_real(self) -> int:
        return sum(1 for s in self.seg if s >= 0)


class _OpenRow:
    def __init__(self):
        self.units: list[Unit] = []
        self.used = 0


def place(units: list[Unit], seq_len: int, sp: Specials, max_open: int = 32) -> list[PackedRow]:
    """First-fit units into rows of `seq_len` tokens; a unit never straddles rows. Deterministic."""
    return list(place_stream(units, seq_len, sp, max_open))


def place_stream(units, seq_len: int, sp: Specials, max_open: int = 32):
    """`place` as a generator: rows come out as they close, so a corpus larger than memory packs."""
    open_rows: list[_OpenRow] = []
    for unit in units:
        n = unit.n_tokens
        if n > seq_len:
            raise ValueError(f"a unit of {n} tokens does not fit data.seq_len={seq_len}")
        row = next((r for r in open_rows if r.used + n <= seq_len), None)
        if row is None:
            if len(open_rows) >= max_open:  # close the fullest row to bound the buffer
                fullest = max(range(len(open_rows)), key=lambda i: open_rows[i].used)
                yield _materialise(open_rows.pop(fullest).units, seq_len, sp)
            row = _OpenRow()
            open_rows.append(row)
        row.units.append(unit)
        row.used += n
    yield from (_materialise(r.units, seq_len, sp) for r in open_rows)


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
        for s, (text_start, text_end), (code_start, code_end) in unit.docs:
            at = starts[s]
            row.docs.append((at + text_start, at + text_end, at + code_start, at + code_end))
    pad = seq_len - len(row.input_ids)
    row.input_ids += [sp.pad] * pad
    row.labels += [IGNORE] * pad
    row.position_ids += [0] * pad
    row.seg += [-1] * pad
    row.ctx_seg += [-1] * pad
    row.ctx_end += [0] * pad
    return row
