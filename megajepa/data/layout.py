"""THE sequence layout: which tokens an example becomes, rendered once for training, generation prompts,
embedding analysis and the exported chat template (docs/architecture.md, "Packing").

    stream      bos [system sep] v_0 sep ... v_last eos    (two views: bos [system sep] Text sep Code eos)
    own stream  bos v eos                                  (train_all: every view its own stream;
                                                            train_all_views=first: only v_0's)
    standalone  bos [lead] v marker                        (Enc(v); marker: sep after every view but the last,
                                                            eos after the last; none with embed_at=last)
    predictors  pred_1..pred_k                             (continue a standalone encoding; Pred is the last)
    prompt      bos [system sep] Text sep                  (the stream up to Code: what generation continues)

Positions, labels and which segment reads which are the packer's business (packing.py); this module only
says which tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

from megajepa.data.tokenizer.sentencepiece import SEP


@dataclass
class Specials:
    bos: int
    eos: int
    sep: int
    pad: int
    predictors: list[int]

    @classmethod
    def from_tokenizer(cls, tok) -> Specials:
        return cls(tok.bos_id, tok.eos_id, tok.sep_id, tok.pad_id, list(tok.predictor_ids))


def _head(sp: Specials, system: list[int] | None) -> list[int]:
    """`bos [system sep]`: what precedes the first view of a stream."""
    return [sp.bos] + (list(system) + [sp.sep] if system else [])


def markers(n_views: int, sp: Specials, train_all: bool = False) -> list[int]:
    """The token that ends each view: sep between views, eos after the last (every view in train_all)."""
    return [sp.eos] * n_views if train_all else [sp.sep] * (n_views - 1) + [sp.eos]


def stream(views: list[list[int]], sp: Specials, system: list[int] | None = None) -> list[int]:
    """`bos [system sep] v_0 sep ... v_last eos`."""
    tokens = _head(sp, system)
    for view, marker in zip(views, markers(len(views), sp)):
        tokens += list(view) + [marker]
    return tokens


def view_spans(views: list[list[int]], sp: Specials, system: list[int] | None = None) -> list[tuple[int, int]]:
    """[start, end) of each view's tokens inside `stream(views, sp, system)` (own_stream: [(1, 1 + len(v))])."""
    start, spans = len(_head(sp, system)), []
    for view in views:
        spans.append((start, start + len(view)))
        start += len(view) + 1  # the view's marker
    return spans


def own_stream(view: list[int], sp: Specials) -> list[int]:
    """train_all: `bos v eos`."""
    return [sp.bos] + list(view) + [sp.eos]


def standalone(view: list[int], sp: Specials, marker: int, embed_at: str, lead: list[int] = ()) -> list[int]:
    """`bos [lead] v marker` (no marker with embed_at=last: it would be unread)."""
    return [sp.bos] + list(lead) + list(view) + ([marker] if embed_at == "end" else [])


def predictor_block(sp: Specials, k: int) -> list[int]:
    """The k predictor tokens appended after a standalone encoding."""
    return list(sp.predictors[:k])


def prompt(text: list[int], sp: Specials, system: list[int] | None = None) -> list[int]:
    """`bos [system sep] Text sep`: the stream's prefix before Code, which generation continues."""
    return _head(sp, system) + list(text) + [markers(2, sp)[0]]


def chat_template(system_prompt: bool) -> str:
    """Jinja rendering `stream` for chat messages (system?, user, assistant) with transformers'
    apply_chat_template; the generation prompt is `prompt`, so nothing follows the user's sep."""
    sep = "{{ m['content'] + '" + SEP + "' }}"
    return ("{{ bos_token }}{% for m in messages %}"
            "{% if m['role'] == 'system' %}" + (sep if system_prompt else "") +
            "{% elif m['role'] == 'user' %}" + sep +
            "{% elif m['role'] == 'assistant' %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}")
