"""The LLM proxy of ``tracer run``: an OpenAI-compatible endpoint on 127.0.0.1 that forwards
every request to the upstream (or answers it from a recording) and records each exchange.

Any method and path under the base path is forwarded as is (chat completions, completions,
embeddings, responses, models; also ``/v1/v1/...`` from scripts that append ``/v1`` to a base
that has it), with the caller's headers and body untouched. A stream is forwarded chunk by
chunk as it arrives.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tracer.transport import Exchange, decode_body

# Headers that belong to one connection, not to the request or response being forwarded.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
# Connect within 10 s; then wait as long as the script does (it has its own time-outs).
_TIMEOUTS = {"timeout": {"connect": 10.0, "read": None, "write": None, "pool": None}}


@dataclass
class Slot:
    """Where an exchange belongs: the episode and step open when it began, its position."""

    episode_id: int | None
    step: int | None
    position: int
    started_at: str
    episode: int | None = None  # the episode's position in the run


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


def same_key(sent: str | None, given: list[str]) -> bool:
    """Compare a key in constant time with each given one, keeping neither."""
    return sent is not None and any(hmac.compare_digest(sent.encode(), g.encode()) for g in given)


def unreachable(upstream: str | None, why: str) -> str:
    """Return what the script is told when the upstream cannot be reached."""
    return f"tracer proxy: the upstream {upstream} could not be reached ({why})"


def error_body(message: str) -> dict[str, Any]:
    """Return an OpenAI-style error body (what the openai client shows in its exception)."""
    return {"error": {"message": message, "type": "tracer_proxy_error", "code": None}}


def create_llm_proxy(log: ExchangeLog, *, base_path: str, upstream: str | None = None,
                     responder: Responder | None = None) -> Any:
    """Return the proxy's ASGI app: forward to ``upstream``, or answer with ``responder``."""
    from starlette.applications import Starlette

    base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
    # The transport alone: the client's cookie jar, redirect and auth handling cost a third of
    # a forwarded call, and a proxy must pass cookies and redirects on untouched anyway.
    transport = httpx.AsyncHTTPTransport()

    def target(request: Request) -> str:
        path = request.url.path
        rest = path.removeprefix(base_path)
        query = f"?{request.url.query}" if request.url.query else ""
        return f"{cast(str, upstream).rstrip('/')}{rest}{query}"

    async def proxy(request: Request) -> Response:
        body = await request.body()
        log.note_key(bearer(request.headers))
        slot = log.llm_slot()
        parsed = decode_body(body) if body else None
        exchange = Exchange(method=request.method, url=request.url.path, request=parsed,
                            started_at=slot.started_at,
                            stream=isinstance(parsed, dict) and parsed.get("stream") is True)
        t0 = time.perf_counter()

        def finish(status: int | None, content: bytes | None, error: str | None,
                   elapsed_s: float | None = None) -> None:
            exchange.status_code = status
            elapsed_s = time.perf_counter() - t0 if elapsed_s is None else elapsed_s
            exchange.latency_ms = elapsed_s * 1000
            if content is not None:  # the exact text, so a replay sends the same bytes
                exchange.response = content.decode("utf-8", "replace")
            exchange.error = error
            log.record_llm(slot, exchange)

        if responder is not None:
            answer = await responder(slot, request.method, request.url.path, body)
            elapsed_s = time.perf_counter() - t0

            async def record() -> None:  # async: runs on this loop, where the store lives
                finish(answer.status_code, answer.body, None, elapsed_s)

            media = "text/event-stream" if answer.stream else "application/json"
            # Recorded once the answer is sent, as a forwarded one is once its body is: the
            # script does not wait for the database write (bench/bench_command_replay.py).
            return Response(answer.body, status_code=answer.status_code, media_type=media,
                            background=BackgroundTask(record))

        url = target(request)
        exchange.url = url
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        try:
            upstream_response = await transport.handle_async_request(httpx.Request(
                request.method, url, headers=headers, content=body, extensions=_TIMEOUTS))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            why = " ".join(str(exc).split()) or type(exc).__name__
            finish(None, None, f"{type(exc).__name__}: {why}")
            return JSONResponse(error_body(unreachable(upstream, why)), status_code=502)

        encoding = upstream_response.headers.get("content-encoding")

        async def relay() -> AsyncIterator[bytes]:
            chunks: list[bytes] = []
            error = None
            try:
                async for chunk in upstream_response.aiter_raw():
                    chunks.append(chunk)
                    yield chunk
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            except BaseException as exc:  # the script went away mid-stream
                error = f"the client went away ({type(exc).__name__})"
                raise
            finally:
                await upstream_response.aclose()
                content = b"".join(chunks)
                if encoding and not error:  # record what the client decodes, not gzip bytes
                    content = httpx.Response(200, headers={"content-encoding": encoding},
                                             content=content).read()
                finish(upstream_response.status_code, content, error)

        out_headers = {k: v for k, v in upstream_response.headers.items()
                       if k.lower() not in HOP_BY_HOP - {"content-length"}}
        return StreamingResponse(relay(), status_code=upstream_response.status_code,
                                 headers=out_headers)

    app = Starlette(routes=[Route("/{path:path}", proxy, methods=METHODS)])
    app.state.transport = transport
    return app
