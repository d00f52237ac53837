"""Recorded server-sent event streams (``stream=True`` completions), as stored raw."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

_LINE_END = re.compile(r"(\r\n|\r|\n)")  # SSE allows all three


def data_events(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (index, chunk) for each ``data:`` line of ``text`` holding a JSON object; the
    index is the line's place in ``_LINE_END.split(text)``.

    ``[DONE]`` and torn or non-object chunks are skipped: what the stream did carry is kept.
    """
    parts = _LINE_END.split(text)
    for index in range(0, len(parts), 2):
        if not parts[index].startswith("data:"):
            continue
        try:
            chunk = json.loads(parts[index][5:])
        except ValueError:
            continue
        if isinstance(chunk, dict):
            yield index, chunk


def content_deltas(chunk: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield the ``delta`` objects of a chunk's choices that carry text ``content``."""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            yield delta


def _texts(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any, Any, str]]:
    """Yield (path, container, key, text) for every string inside ``value``. In lists of
    objects with an ``index`` (tool calls), the path uses that index, as chunks do."""
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, item in items:
        step = item.get("index", key) if isinstance(value, list) and isinstance(item, dict) else key
        if isinstance(item, str):
            yield (*path, step), value, key, item
        else:
            yield from _texts(item, (*path, step))


def redact_stream(text: str, secrets: Iterable[str], replacement: str) -> str:
    """Return ``text`` with no secret left in what its events say, even split across chunks.

    Each secret seen whole in the raw text is replaced first. Then every text of every event
    is read as JSON (so escapes such as ``\\u0068`` are seen through), and the texts of each
    choice's deltas are put together field by field (content, reasoning, tool call
    arguments...): where a secret remains, the redacted whole goes into the field's first
    piece and its other pieces are emptied, so the stream still parses to the redacted text.
    A stream that holds no secret is returned as it was.
    """
    secrets = [s for s in secrets if s]
    for secret in secrets:
        text = text.replace(secret, replacement)

    def redact(value: str) -> str:
        for secret in secrets:
            value = value.replace(secret, replacement)
        return value

    def leaks(value: str) -> bool:
        return any(secret in value for secret in secrets)

    changed: dict[int, dict[str, Any]] = {}
    pieces: dict[tuple, list[tuple[int, dict[str, Any], Any, Any]]] = {}
    for index, chunk in data_events(text):
        for path, container, key, value in _texts(chunk):
            if leaks(value):  # whole, but written with JSON escapes
                container[key] = redact(value)
                changed[index] = chunk
            if len(path) > 3 and path[0] == "choices" and path[2] == "delta":
                # (choice index, field in its delta): the pieces of one text, in order.
                pieces.setdefault((path[1], *path[3:]), []).append((index, chunk, container, key))
    for field_pieces in pieces.values():
        whole = "".join(container[key] for _, _, container, key in field_pieces)
        if leaks(whole):
            for n, (index, chunk, container, key) in enumerate(field_pieces):
                container[key] = redact(whole) if n == 0 else ""
                changed[index] = chunk
    if not changed:
        return text
    parts = _LINE_END.split(text)
    for index, chunk in changed.items():
        parts[index] = "data: " + json.dumps(chunk, ensure_ascii=False)
    return "".join(parts)


def stream_message(text: str) -> tuple[dict[str, Any] | None, str | None, dict[str, Any]]:
    """Return (assistant message, finish reason, usage) that a stream's first choice spelled.

    Content pieces are joined; tool calls are put together by their ``index`` (id, name, and
    the pieces of their arguments). The message is None when the stream carried neither.
    """
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    usage: dict[str, Any] = {}
    for _, chunk in data_events(text):
        if isinstance(chunk.get("usage"), dict):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            finish = choice.get("finish_reason") or finish
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            if isinstance(delta.get("content"), str):
                content.append(delta["content"])
            for piece in delta.get("tool_calls") or []:
                if not isinstance(piece, dict):
                    continue
                call = calls.setdefault(piece.get("index", len(calls)), {
                    "id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                call["id"] = piece.get("id") or call["id"]
                function = piece.get("function") if isinstance(piece.get("function"), dict) else {}
                call["function"]["name"] += function.get("name") or ""
                call["function"]["arguments"] += function.get("arguments") or ""
    if not content and not calls:
        return None, finish, usage
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) if content else None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message, finish, usage
