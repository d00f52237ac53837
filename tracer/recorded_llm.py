"""The fast offline path: the agent loop's completion step answered from the recording.

In ``--offline`` replay most of the time went into the ``openai`` client building the request
and parsing the response into its models (84%; 36% its ``maybe_transform``), not into anything
being checked. ``RecordedLLM`` stands in for the client in the agent loop: it builds the same
request body the client sends (``complete()``'s parameters; its hash is the recorded one) and
sends it through the same transports, so the request is still checked against the recording
(the same field-level diff when it differs) and the replay still records the exchange; then it
reads the reply text out of the recorded JSON itself. An exchange that was not a plain
successful completion when recorded (an HTTP error and its retries, a failed connection, a
stream, a body without a reply text) goes through the real client, which knows those cases.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import httpx

from tracer.store import dumps

_HEADERS = {"content-type": "application/json"}


class RecordedLLM:
    """An ``OpenAI`` client stand-in with ``chat.completions.create`` for the agent loop."""

    def __init__(self, client: Any, http: httpx.BaseTransport, calls: Any, base_url: str):
        self.client = client  # the full client, for exchanges the fast path does not parse
        self.transport = http  # called directly: httpx.Client.send's cookie and redirect
        # handling cost a third of a fast-path replay, and recorded replies set no cookies
        self.calls = calls  # -> the recorded exchange the next request will be answered with
        self.url = f"{base_url.rstrip('/')}/chat/completions"
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))
        self.answered = 0  # how many calls the fast path answered

    def create(self, **params: Any) -> Any:
        """Return the recorded completion for this request, checked as the client's would be."""
        reply = _plain_reply(self.calls())
        if params.get("stream") or params.get("tools") or reply is None:  # tool calls: the client
            return self.client.chat.completions.create(**params)
        request = httpx.Request("POST", self.url, content=dumps(params).encode(),
                                headers=_HEADERS)
        self.transport.handle_request(request).read()  # checked against the recording; recorded
        self.answered += 1
        message = SimpleNamespace(content=reply[0])
        return SimpleNamespace(choices=[SimpleNamespace(message=message)])


def _plain_reply(call: dict[str, Any] | None) -> tuple[str | None] | None:
    """Return ``(reply text,)`` of a recorded successful completion, or None if it is not one."""
    if call is None or call["status_code"] != 200 or call["stream"]:
        return None
    try:
        content = json.loads(call["response"] or "")["choices"][0]["message"]["content"]
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    return (content,) if content is None or isinstance(content, str) else None
