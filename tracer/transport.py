"""The seam to the LLM: httpx transports that record or replay what the openai client sends.

The ``openai`` client accepts ``http_client=httpx.Client(transport=...)``. A recording
transport passes each request on and keeps the exact bytes sent and received; a replay
transport answers from a recording without touching the network.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import httpx

from tracer.sse import is_finished
from tracer.store import now


def canonical_json(value: Any) -> str:
    """Return JSON with sorted keys and no spaces, the form request hashes are taken of."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_hash(body: Any) -> str:
    """Return the sha256 of a request body's canonical JSON."""
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def decode_body(content: bytes) -> Any:
    """Return a body as JSON when it is JSON, else as text."""
    return decode_json_text(content)[0]


def decode_json_text(content: bytes) -> tuple[Any, str | None]:
    """Return a body as JSON when it is JSON, else as text; and, when it is a JSON object or
    array, its text to store as is (None: store the value as JSON).

    Storing the text received spares serialising the value again (the largest cost of
    recording an exchange). Text with ``\\u`` or ``\\/`` escapes is not kept: a secret could
    hide in them from the redaction, which sees the value's characters only once written out.
    """
    text = content.decode("utf-8", errors="replace")
    try:
        value = json.loads(text)
    except ValueError:
        return text, None
    plain = isinstance(value, (dict, list)) and "\\u" not in text and "\\/" not in text
    return value, text if plain else None


@dataclass
class Exchange:
    """One HTTP request to the LLM endpoint and what came back."""

    method: str
    url: str
    request: Any
    started_at: str
    status_code: int | None = None
    response: Any = None
    stream: bool = False
    latency_ms: float = 0.0
    error: str | None = None
    #: The bodies' JSON text as sent and received, when they can be stored as is (see
    #: ``decode_json_text``); None: store ``request``/``response`` as JSON.
    request_text: str | None = None
    response_text: str | None = None
    request_hash: str | None = None  # the request's hash when already known (a replay's check)

    def failure(self) -> str | None:
        """Return the error, or why a successful stream is incomplete: it ended before
        ``data: [DONE]``."""
        unfinished = (
            self.error is None
            and self.stream
            and self.status_code == 200
            and isinstance(self.response, str)
            and not is_finished(self.response)
        )
        return "the stream ended before data: [DONE]" if unfinished else self.error


class _TeeStream(httpx.SyncByteStream):
    """Passes a response body through while keeping a copy; reports it when closed."""

    def __init__(self, inner: httpx.SyncByteStream, on_close: Callable[[bytes, str | None], None]):
        self._inner = inner
        self._on_close = on_close
        self._chunks: list[bytes] = []
        self._error: str | None = None
        self._reported = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                self._chunks.append(chunk)
                yield chunk
        except BaseException as exc:
            self._error = f"{type(exc).__name__}: {exc}"
            raise

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            if not self._reported:
                self._reported = True
                self._on_close(b"".join(self._chunks), self._error)


class RecordingTransport(httpx.BaseTransport):
    """Sends requests through ``inner`` and hands each finished ``Exchange`` to ``on_exchange``."""

    def __init__(
        self, on_exchange: Callable[[Exchange], None], inner: httpx.BaseTransport | None = None
    ):
        self.inner = inner or httpx.HTTPTransport()
        self.on_exchange = on_exchange

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body, text = decode_json_text(request.read())
        exchange = Exchange(
            method=request.method,
            url=str(request.url),
            request=body,
            started_at=now(),
            stream=isinstance(body, dict) and bool(body.get("stream")),
            request_text=text,
        )
        t0 = time.perf_counter()
        try:
            response = self.inner.handle_request(request)
        except BaseException as exc:
            exchange.latency_ms = (time.perf_counter() - t0) * 1000
            exchange.error = f"{type(exc).__name__}: {exc}"
            self.on_exchange(exchange)
            raise
        exchange.status_code = response.status_code

        encoding = response.headers.get("content-encoding")

        def finished(content: bytes, error: str | None) -> None:
            if encoding and not error:  # keep what the client decoded, not gzip bytes
                content = httpx.Response(
                    200, headers={"content-encoding": encoding}, content=content
                ).read()
            exchange.latency_ms = (time.perf_counter() - t0) * 1000
            if exchange.stream:
                exchange.response = content.decode("utf-8", "replace")
            else:
                exchange.response, exchange.response_text = decode_json_text(content)
            exchange.error = error
            self.on_exchange(exchange)

        if isinstance(response.stream, httpx.ByteStream):  # in memory already, and read (a replay)
            finished(b"".join(response.stream), None)
            return response
        # The same response, its body passed through a tee: a new httpx.Response (headers
        # copied and parsed again) cost as much as the rest of recording the exchange.
        response.stream = _TeeStream(cast(httpx.SyncByteStream, response.stream), finished)
        return response

    def close(self) -> None:
        self.inner.close()
