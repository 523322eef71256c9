"""Record formats -> lists of view strings.

  {"views": [v0, v1, ...]}                        N views of the same thing
  {"messages": [system?, user, assistant]}        the LLM-JEPA paper's files: Text = first user turn,
                                                  Code = the assistant turn
  {"text": "..."}                                 a plain NTP document (one view)
"""
from __future__ import annotations


class BadRecord(ValueError):
    """A record that cannot become an example; the message names the reason."""


def record_views(record) -> list[str]:
    if not isinstance(record, dict):
        raise BadRecord(f"expected a JSON object, got {type(record).__name__}")
    if "views" in record:
        views = record["views"]
        if not isinstance(views, list) or not all(isinstance(v, str) for v in views):
            raise BadRecord("field 'views' must be a list of strings")
    elif "messages" in record:
        views = _message_views(record["messages"])
    elif "text" in record:
        if not isinstance(record["text"], str):
            raise BadRecord("field 'text' must be a string")
        views = [record["text"]]
    else:
        raise BadRecord("record has none of the fields 'views', 'messages', 'text'")
    for i, view in enumerate(views):
        if not view.strip():
            raise BadRecord(f"view {i} is empty")
    if not views:
        raise BadRecord("record has no views")
    return views


def _message_views(messages) -> list[str]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRecord("field 'messages' must be a list of {role, content} objects")
    by_role: dict[str, str] = {}
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise BadRecord(f"messages[{i}] needs string fields 'role' and 'content'")
        by_role.setdefault(role, content)  # the first turn of each role
    if "user" not in by_role or "assistant" not in by_role:
        raise BadRecord("field 'messages' needs a user turn and an assistant turn")
    return [by_role["user"], by_role["assistant"]]
