"""Records -> tokenized examples, with bad records skipped and counted or rejected up front."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from megajepa.data.records import BadRecord, example_views

log = logging.getLogger(__name__)


@dataclass
class Example:
    views: list[list[int]]  # token ids per view, no specials
    source: str  # "file:line" (or "synthetic:index") for messages about this example
    record: int  # its record's place in the training stream: the key of its loss-dropout draw
    prompt: list[int] | None = None  # chat system turn rendered before Text (data.system_prompt)
    jepa_views: list[list[int]] = field(default_factory=list)  # data.views: JEPA views apart from the stream


@dataclass
class BadRecordReport:
    counts: dict[str, int] = field(default_factory=dict)
    first: list[str] = field(default_factory=list)  # the first few messages, verbatim

    def add(self, source: str, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.first) < 20:
            self.first.append(f"{source}: {reason}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def system_turn(record) -> str | None:
    """The first system turn of a messages record: the chat prompt rendered before Text."""
    messages = record.get("messages") if isinstance(record, dict) else None
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and message.get("role") == "system" and isinstance(message.get("content"), str):
            return message["content"]
    return None


class RecordError(ValueError):
    """A bad record under policy `error`; raised before training starts."""


def tokenize_records(records, tokenizer, policy: str, report: BadRecordReport,
                     source_name: str = "synthetic", with_prompt: bool = False,
                     extra_fields: tuple | list = (), view_specs: tuple | list = (),
                     first_record: int = 0) -> list[Example]:
    """`records`: iterable of (source, record) or plain records (numbered from 1); a one-view record of any
    format is a plain NTP document (docs/data.md). `with_prompt`: keep a messages record's system turn as
    the example's prompt. `view_specs` (data.views, records.ViewSpec): the JEPA views, apart from the stream.
    `first_record`: the stream position of records[0] (a chunk's offset), so Example.record is global.
    Every text is encoded in one batched call; bad records are reported (or raised) in record order."""
    parsed, texts = [], []  # per record: (source, index, error or None, (views, JEPA views, has a prompt))
    for i, item in enumerate(records, 1):
        source, record = item if isinstance(item, tuple) else (f"{source_name}:{i}", item)
        try:
            views, jepa = example_views(record, extra_fields, view_specs)  # data.extra_view_fields, data.views
        except BadRecord as e:
            parsed.append((source, i, str(e), (0, 0, False)))
            continue
        prompt = system_turn(record) if with_prompt else None
        parsed.append((source, i, None, (len(views), len(jepa), bool(prompt))))
        texts += [*views, *jepa] + ([prompt] if prompt else [])
    encoded = iter(tokenizer.encode_batch(texts))
    out = []
    for source, i, error, (n_views, n_jepa, has_prompt) in parsed:
        ids, jepa_ids = [next(encoded) for _ in range(n_views)], [next(encoded) for _ in range(n_jepa)]
        prompt_ids = next(encoded) if has_prompt else None
        if error is None and any(not v for v in ids + jepa_ids):
            error = "a view tokenizes to nothing"
        if error is not None:
            if policy == "error":
                raise RecordError(f"{source}: {error}")
            report.add(source, error)
            continue
        out.append(Example(ids, source, first_record + i - 1, prompt_ids, jepa_ids))
    return out
