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

from tracer.store import now


def canonical_json(value: Any) -> str:
    """Return JSON with sorted keys and no spaces, the form request hashes are taken of."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_hash(body: Any) -> str:
    """Return the sha256 of a request body's canonical JSON."""
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def decode_body(content: bytes) -> Any:
    """Return a body as JSON when it is JSON, else as text."""
    text = content.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


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

    def __init__(self, on_exchange: Callable[[Exchange], None], inner: httpx.BaseTransport | None = None):
        self.inner = inner or httpx.HTTPTransport()
        self.on_exchange = on_exchange

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = decode_body(request.read())
        exchange = Exchange(
            method=request.method, url=str(request.url), request=body, started_at=now(),
            stream=isinstance(body, dict) and bool(body.get("stream")),
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
                content = httpx.Response(200, headers={"content-encoding": encoding}, content=content).read()
            exchange.latency_ms = (time.perf_counter() - t0) * 1000
            exchange.response = content.decode("utf-8", "replace") if exchange.stream else decode_body(content)
            exchange.error = error
            self.on_exchange(exchange)

        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_TeeStream(cast(httpx.SyncByteStream, response.stream), finished),
            extensions=response.extensions,
            request=request,
        )

    def close(self) -> None:
        self.inner.close()
