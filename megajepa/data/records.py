"""Record formats -> lists of view strings.

  {"views": [v0, v1, ...]}                        N views of the same thing
  {"messages": [system?, user, assistant]}        the LLM-JEPA paper's files: Text = first user turn,
                                                  Code = the assistant turn
  {"text": "..."}                                 a plain NTP document (one view)

A messages record may carry extra list-valued fields (names from `data.extra_view_fields`) holding
alternative message lists, e.g. {"messages": [...], "paraphrases": [[{user...}], [{user...}]]}: the first
user turn of each alternative becomes one more view, after Text and Code, so views[:2] stay (Text, Code).

`data.views` names the JEPA views apart from the NTP stream, per view a field and a role, e.g. the paper's
HellaSwag files: NTP on `messages`, JEPA between [{field: text, role: user}, {field: code, role: assistant}]
(a field holding a message list takes that role's first turn; a string field is taken whole).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ViewSpec:
    """One JEPA view of `data.views`: record field, and for a message-list field the role whose turn it takes."""
    field: str
    role: str | None = None


def view_specs(entries: list) -> tuple[ViewSpec, ...]:
    """`data.views` entries ({field, role?}, checked by config.validate) as ViewSpecs."""
    return tuple(ViewSpec(e["field"], e.get("role")) for e in entries)


class BadRecord(ValueError):
    """A record that cannot become an example; the message names the reason."""


@dataclass
class Malformed:
    """What a reader yields for a line it could not parse (bad JSON, invalid UTF-8): one bad record."""
    reason: str


def record_views(record, extra_fields: tuple | list = ()) -> list[str]:
    if isinstance(record, Malformed):
        raise BadRecord(record.reason)
    if not isinstance(record, dict):
        raise BadRecord(f"expected a JSON object, got {type(record).__name__}")
    if "views" in record:
        views = record["views"]
        if not isinstance(views, list) or not all(isinstance(v, str) for v in views):
            raise BadRecord("field 'views' must be a list of strings")
    elif "messages" in record:
        views = _message_views(record["messages"], "messages")
        for name in extra_fields:
            views += _alternative_views(record.get(name), name)
    elif "text" in record:
        if not isinstance(record["text"], str):
            raise BadRecord("field 'text' must be a string")
        views = [record["text"]]
    else:
        raise BadRecord("record has none of the fields 'views', 'messages', 'text'")
    if not views:
        raise BadRecord("record has no views")
    for i, view in enumerate(views):
        if not view.strip():
            raise BadRecord(f"view {i} is empty")
    return views


def spec_views(record, specs: tuple | list) -> list[str]:
    """The JEPA views `data.views` names (ViewSpec each), in order."""
    views = []
    for spec in specs:
        value = record.get(spec.field) if isinstance(record, dict) else None
        if isinstance(value, str) and spec.role is None:
            views.append(value)
        elif isinstance(value, str):
            raise BadRecord(f"field '{spec.field}' is a string: data.views gives it role {spec.role!r} (leave role unset)")
        elif value is None:
            raise BadRecord(f"field '{spec.field}' (data.views) is missing")
        elif spec.role is None:
            raise BadRecord(f"field '{spec.field}' is a message list: data.views needs a role for it")
        else:
            by_role = _turns(value, spec.field)
            if spec.role not in by_role:
                raise BadRecord(f"field '{spec.field}' has no {spec.role} turn (data.views)")
            views.append(by_role[spec.role])
    for spec, view in zip(specs, views):
        if not view.strip():
            raise BadRecord(f"field '{spec.field}' (data.views) is empty")
    return views


def example_views(record, extra_fields: tuple | list = (), specs: tuple | list = ()) -> tuple[list[str], list[str]]:
    """(NTP stream views, JEPA views named by data.views: [] when it is unset, the stream's views pair)."""
    return record_views(record, extra_fields), spec_views(record, specs) if specs else []


def _turns(messages, name: str) -> dict[str, str]:
    """The first turn of each role of one message list."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRecord(f"field '{name}' must be a list of {{role, content}} objects")
    by_role: dict[str, str] = {}
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise BadRecord(f"{name}[{i}] needs string fields 'role' and 'content'")
        by_role.setdefault(role, content)
    return by_role


def _message_views(messages, name: str) -> list[str]:
    by_role = _turns(messages, name)
    if "user" not in by_role or "assistant" not in by_role:
        raise BadRecord(f"field '{name}' needs a user turn and an assistant turn")
    return [by_role["user"], by_role["assistant"]]


def _alternative_views(value, name: str) -> list[str]:
    """An extra field: absent/null (no extra views), one message list, or a list of message lists."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRecord(f"field '{name}' must be a list of message lists")
    alternatives = [value] if value and isinstance(value[0], dict) else value  # one list or several
    views = []
    for j, alternative in enumerate(alternatives):
        by_role = _turns(alternative, f"{name}[{j}]")
        if "user" not in by_role:
            raise BadRecord(f"field '{name}[{j}]' needs a user turn")
        views.append(by_role["user"])
    return views

