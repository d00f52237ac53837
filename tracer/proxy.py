"""The LLM proxy of ``tracer run``: an OpenAI-compatible endpoint on 127.0.0.1 that forwards
every request to the upstream (or answers it from a recording) and records each exchange.

Any method and path under the base path is forwarded as is (chat completions, completions,
embeddings, responses, models; also ``/v1/v1/...`` from scripts that append ``/v1`` to a base
that has it), with the caller's headers and body untouched. A stream is forwarded chunk by
chunk as it arrives.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpcore

from tracer.command_recorder import Slot
from tracer.sse import is_finished
from tracer.transport import Exchange, decode_body

# Headers that belong to one connection, not to the request or response being forwarded.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_HOP_BY_HOP = {name.encode() for name in HOP_BY_HOP}
_KEPT_BACK = {name.encode() for name in HOP_BY_HOP - {"content-length"}}  # of a response
# Connect within 10 s; then wait as long as the script does (it has its own time-outs).
_TIMEOUTS = {"timeout": {"connect": 10.0, "read": None, "write": None, "pool": None}}
#: What the upstream's failing looks like: httpcore's exceptions (httpx wraps the same ones).
UPSTREAM_ERRORS = (
    httpcore.NetworkError,
    httpcore.TimeoutException,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)


class ExchangeLog(Protocol):
    """What the proxy tells the recorder (``tracer.command.CommandRecorder``)."""

    def llm_slot(self) -> Slot: ...
    def record_llm(self, slot: Slot, exchange: Exchange) -> None: ...
    def note_key(self, key: str | None) -> None: ...


@dataclass
class Answer:
    """A response the proxy sends without asking the upstream (a replay)."""

    status_code: int
    body: bytes
    stream: bool = False


#: Answers a request from elsewhere than the upstream: (slot, method, path, body) -> Answer.
Responder = Callable[[Slot, str, str, bytes], Awaitable[Answer]]


def bearer(headers: Any) -> str | None:
    """Return the key a request carries (``Authorization: Bearer`` or ``api-key``)."""
    value = headers.get("authorization") or ""
    if value.lower().startswith("bearer "):
        return value[7:].strip() or None
    return headers.get("api-key") or None


def unreachable(upstream: str | None, why: str) -> str:
    """Return what the script is told when the upstream cannot be reached."""
    return f"tracer proxy: the upstream {upstream} could not be reached ({why})"


def error_body(message: str) -> dict[str, Any]:
    """Return an OpenAI-style error body (what the openai client shows in its exception)."""
    return {"error": {"message": message, "type": "tracer_proxy_error", "code": None}}


def create_llm_proxy(
    log: ExchangeLog,
    *,
    base_path: str,
    upstream: str | None = None,
    responder: Responder | None = None,
) -> LLMProxy:
    """Return the proxy's ASGI app: forward to ``upstream``, or answer with ``responder``."""
    return LLMProxy(log, base_path=base_path, upstream=upstream, responder=responder)


class LLMProxy:
    """The proxy as a bare ASGI app over an httpcore connection pool.

    Bare because a forwarded call is on the script's critical path: Starlette's routing,
    middleware and Request/Response objects, and httpx's models over httpcore, cost more than
    the forwarding itself (bench/bench_proxy.py), and a proxy needs none of what they add. Headers
    stay the raw byte pairs uvicorn and httpcore both speak, and each exchange is recorded
    after its answer has been sent, so the script does not wait for the database.
    """

    def __init__(
        self,
        log: ExchangeLog,
        *,
        base_path: str,
        upstream: str | None = None,
        responder: Responder | None = None,
    ):
        self.log, self.upstream, self.responder = log, upstream, responder
        self.base_path = ("/" + base_path.strip("/") if base_path.strip("/") else "").encode()
        self.pool: httpcore.AsyncConnectionPool | None = None
        if responder is None:
            import httpx  # its TLS settings (certifi, SSL_CERT_FILE), as the httpx transport has

            from tracer.loopback import AsyncioBackend

            self.base_url = (upstream or "").rstrip("/")
            self.base = httpcore.URL(self.base_url)
            # httpx's own defaults for its transport's pool.
            self.pool = httpcore.AsyncConnectionPool(
                ssl_context=httpx.create_ssl_context(),
                max_connections=100,
                max_keepalive_connections=20,
                keepalive_expiry=5.0,
                network_backend=AsyncioBackend() if self.base.scheme == b"http" else None,
            )
            self.base_target = self.base.target.rstrip(b"/")
            default = {b"http": 80, b"https": 443}.get(self.base.scheme)
            port = b"" if self.base.port in (None, default) else b":%d" % self.base.port
            self.host = (b"host", self.base.host + port)  # the upstream's, not the proxy's

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # no lifespan (uvicorn runs it off) and no WebSocket
            if scope["type"] == "websocket":
                await send({"type": "websocket.close"})
            return
        method = scope["method"]
        if method not in METHODS:
            await _send(
                send,
                405,
                b"Method Not Allowed",
                b"text/plain; charset=utf-8",
                [(b"allow", ", ".join(METHODS).encode())],
            )
            return
        body = await _read_body(receive)
        if body is None:  # the script went away before sending all of it
            return
        headers = scope["headers"]
        self.log.note_key(
            bearer(
                {
                    k.decode("latin-1"): v.decode("latin-1")
                    for k, v in headers
                    if k in (b"authorization", b"api-key")
                }
            )
        )
        slot = self.log.llm_slot()
        parsed = decode_body(body) if body else None
        stream = isinstance(parsed, dict) and parsed.get("stream") is True
        exchange = Exchange(
            method=method,
            url=scope["path"],
            request=parsed,
            started_at=slot.started_at,
            stream=stream,
        )
        t0 = time.perf_counter()
        if self.responder is not None:
            answer = await self.responder(slot, method, scope["path"], body)
            elapsed_s = time.perf_counter() - t0
            media = b"text/event-stream" if answer.stream else b"application/json"
            await _send(send, answer.status_code, answer.body, media)
            # Recorded once the answer is sent: the script does not wait for the database
            # write (bench/bench_command_replay.py).
            self._finish(slot, exchange, answer.status_code, answer.body, None, elapsed_s)
            return
        await self._forward(scope, receive, send, slot, exchange, body, t0)

    async def _forward(
        self,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        slot: Slot,
        exchange: Exchange,
        body: bytes,
        t0: float,
    ) -> None:
        assert self.pool is not None
        raw_path = scope.get("raw_path") or scope["path"].encode()  # as sent, %-escapes and all
        query = scope.get("query_string") or b""
        rest = raw_path.removeprefix(self.base_path) + (b"?" + query if query else b"")
        url = httpcore.URL(
            scheme=self.base.scheme,
            host=self.base.host,
            port=self.base.port,
            target=self.base_target + rest,
        )
        exchange.url = self.base_url + rest.decode("latin-1")
        headers = [self.host, *((k, v) for k, v in scope["headers"] if k not in _HOP_BY_HOP)]
        if body or scope["method"] in ("POST", "PUT", "PATCH"):  # as httpx sets it
            headers.append((b"content-length", b"%d" % len(body)))
        request = httpcore.Request(
            method=scope["method"], url=url, headers=headers, content=body, extensions=_TIMEOUTS
        )
        try:
            response = await self.pool.handle_async_request(request)
        except UPSTREAM_ERRORS as exc:
            why = " ".join(str(exc).split()) or type(exc).__name__
            message = json.dumps(
                error_body(unreachable(self.upstream, why)), separators=(",", ":")
            ).encode()
            await _send(send, 502, message, b"application/json")
            self._finish(
                slot, exchange, None, None, f"{type(exc).__name__}: {why}", time.perf_counter() - t0
            )
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(k, v) for k, v in response.headers if k.lower() not in _KEPT_BACK],
            }
        )
        relay = self._relay(send, response, slot, exchange, t0)
        if not _streamed(exchange, response):
            await relay  # whole and small: nothing to stop early
            return
        # A stream the script stops reading (it went away) is stopped upstream too. The relay
        # sends the end of the answer as its last await, so if the script is found gone
        # while the relay is still running, the answer was not all sent (unless its [DONE] was).
        relaying = asyncio.ensure_future(relay)
        gone = asyncio.ensure_future(_disconnect(receive))
        await asyncio.wait((relaying, gone), return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not relaying.done():
            relaying.cancel()
        try:
            await relaying
        except asyncio.CancelledError:
            if not relaying.cancelled():  # this task itself was cancelled
                raise

    async def _relay(
        self, send: Any, response: httpcore.Response, slot: Slot, exchange: Exchange, t0: float
    ) -> None:
        """Pass the answer's body on chunk by chunk as it arrives, then record the exchange."""
        chunks: list[bytes] = []
        error, gone = None, False
        try:
            async for chunk in response.aiter_stream():
                chunks.append(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UPSTREAM_ERRORS as exc:  # the answer ends here, as the upstream ended it
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        except BaseException as exc:  # the script went away mid-stream
            gone = True
            # Clients close as soon as they read data: [DONE] (the openai client does), often
            # before the end of the body comes from a distant upstream: the answer was whole.
            if not (exchange.stream and is_finished(b"".join(chunks).decode("utf-8", "replace"))):
                error = f"the client went away ({type(exc).__name__})"
            raise
        finally:
            try:  # a cancel that lands in these awaits must not cost the exchange its row
                await response.aclose()
                if not gone:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                self._record(slot, exchange, response, chunks, error, t0)

    def _record(
        self,
        slot: Slot,
        exchange: Exchange,
        response: httpcore.Response,
        chunks: list[bytes],
        error: str | None,
        t0: float,
    ) -> None:
        content = b"".join(chunks)
        encoding = _header(response.headers, b"content-encoding")
        if encoding and not error:  # record what the client decodes, not gzip bytes
            import httpx

            content = httpx.Response(
                200, headers={"content-encoding": encoding}, content=content
            ).read()
        self._finish(slot, exchange, response.status, content, error, time.perf_counter() - t0)

    def _finish(
        self,
        slot: Slot,
        exchange: Exchange,
        status: int | None,
        content: bytes | None,
        error: str | None,
        elapsed_s: float,
    ) -> None:
        exchange.status_code = status
        exchange.latency_ms = elapsed_s * 1000
        if content is not None:  # the exact text, so a replay sends the same bytes
            exchange.response = content.decode("utf-8", "replace")
        exchange.error = error
        self.log.record_llm(slot, exchange)


async def _read_body(receive: Any) -> bytes | None:
    """Return a request's whole body, or None when the client left before sending it."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _disconnect(receive: Any) -> None:
    """Return once the client has gone (or the response is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send(
    send: Any,
    status: int,
    body: bytes,
    media: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _streamed(exchange: Exchange, response: httpcore.Response) -> bool:
    """Whether an answer may go on for a while: a stream asked for, or sent without a length.

    An error answer (a 429 to a stream asked for) is short: it is read whole, so that its message
    is recorded even when the client closes it unread, as the openai client does before a retry."""
    if response.status >= 400:
        return False
    return exchange.stream or _header(response.headers, b"content-length") is None
