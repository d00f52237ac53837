"""Recorded server-sent event streams (``stream=True`` completions), as stored raw."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


def data_events(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line index, chunk) for each ``data:`` line of ``text`` holding a JSON object.

    ``[DONE]`` and torn or non-object chunks are skipped: what the stream did carry is kept.
    """
    for index, line in enumerate(text.split("\n")):
        if not line.startswith("data:"):
            continue
        try:
            chunk = json.loads(line[5:])
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


def redact_stream(text: str, secrets: Iterable[str], replacement: str) -> str:
    """Return ``text`` with no secret in its content, even one split across chunks.

    Each secret seen whole in the raw text is replaced first. If one is still in the content
    put together, the whole redacted content goes into the first content delta and the other
    deltas are emptied, so the stream still parses to the redacted completion.
    """
    secrets = [s for s in secrets if s]
    for secret in secrets:
        text = text.replace(secret, replacement)
    lines = text.split("\n")
    deltas = [(index, chunk, delta) for index, chunk in data_events(text)
              for delta in content_deltas(chunk)]
    content = "".join(delta["content"] for _, _, delta in deltas)
    if not any(secret in content for secret in secrets):
        return text
    for secret in secrets:
        content = content.replace(secret, replacement)
    for n, (index, chunk, delta) in enumerate(deltas):
        delta["content"] = content if n == 0 else ""
        lines[index] = "data: " + json.dumps(chunk, ensure_ascii=False)
    return "\n".join(lines)
