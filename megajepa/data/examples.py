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
    `first_record`: the stream position of records[0] (a chunk's offset), so Example.record is global."""
    out = []
    for i, item in enumerate(records, 1):
        source, record = item if isinstance(item, tuple) else (f"{source_name}:{i}", item)
        try:
            views, jepa = example_views(record, extra_fields, view_specs)  # data.extra_view_fields, data.views
            ids, jepa_ids = [tokenizer.encode(v) for v in views], [tokenizer.encode(v) for v in jepa]
            if any(not v for v in ids + jepa_ids):
                raise BadRecord("a view tokenizes to nothing")
        except BadRecord as e:
            if policy == "error":
                raise RecordError(f"{source}: {e}") from None
            report.add(source, str(e))
            continue
        prompt = system_turn(record) if with_prompt else None
        out.append(Example(ids, source, first_record + i - 1, tokenizer.encode(prompt) if prompt else None, jepa_ids))
    return out
