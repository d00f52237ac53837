"""Writes one run to the trace store as it happens: episodes, steps, LLM calls, stdout lines."""

from __future__ import annotations

import platform
import sqlite3
import sys
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from tracer.sse import redact_stream
from tracer.store import REDACTED, Store, TraceError, now, redact
from tracer.tables import JSONText
from tracer.transport import Exchange, request_hash

#: The distributions that install the ``openenv`` package: the maintained one, and the one
#: frozen at 0.3.0 that older projects still have.
OPENENV_DISTRIBUTIONS = ("openenv", "openenv-core")


def openenv_version() -> str:
    """Return which distribution(s) installed ``openenv``, with versions: ``openenv 0.10.0``."""
    found = []
    for name in OPENENV_DISTRIBUTIONS:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    # Both at once share openenv/'s files (the last installed wins): say so rather than guess.
    return " + ".join(found) or "not installed"


def versions() -> dict[str, str]:
    """Return the versions of Python and the packages a run depends on."""
    found = {"python": platform.python_version(), "openenv": openenv_version()}
    for package in ("openai", "openenv-tracer"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


class Recorder:
    """Records a run into ``store``; with ``store=None`` (``TRACE=off``) it records nothing.

    A failing write is reported once on stderr and stops recording; the episode goes on,
    because the protocol log on stdout is what graders read. LLM exchanges are committed with
    the next row written (normally their step and its line), one transaction per step.
    """

    def __init__(self, store: Store | None, secrets: Iterable[str] = ()):
        self.store = store
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.run_id: str | None = None
        self.episode_id: int | None = None
        self.step: int = 0
        self._llm_position = 0
        self._pending: list[tuple[str, dict[str, Any]]] = []  # LLM exchanges not yet written
        self._last_line_id: int | None = None

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def redact(self, text: str) -> str:
        """Return ``text`` with secrets replaced: also stdout never shows a key."""
        return redact(text, self.secrets)

    def _write(self, operation: str, /, *args: Any, **kwargs: Any) -> Any:
        if self.store is None:
            return None
        try:
            return getattr(self.store, operation)(*args, **kwargs)
        except (sqlite3.Error, TraceError, OSError) as exc:
            print(
                f"tracer: recording stopped, could not write to {self.store.path}: {exc}",
                file=sys.stderr,
                flush=True,
            )
            self.store = None
            return None

    def start_run(self, config: Any, env_source: dict, replay_of: str | None = None) -> str | None:
        """Record the start of a run and return its id (None when not recording)."""
        self.run_id = self._write(
            "start_run",
            tasks=list(config.tasks),
            benchmark=config.benchmark,
            model=config.model,
            api_base_url=config.api_base_url,
            env_source=env_source,
            config=config.public(),
            config_fingerprint=config.fingerprint(),
            versions=versions(),
            replay_of=replay_of,
        )
        return self.run_id

    def update_run(self, **fields: Any) -> None:
        if self.run_id:
            self._write("update_run", self.run_id, **fields)

    def finish_run(self, status: str, exit_code: int, error: str | None = None) -> None:
        if self.run_id:
            self._insert()
            self._write("finish_run", self.run_id, status, exit_code, error)

    def start_episode(self, position: int, **fields: Any) -> None:
        self.step = 0
        self._llm_position = 0
        self.episode_id = None
        if self.run_id:
            self.episode_id = self._write("start_episode", self.run_id, position, **fields)

    def update_episode(self, **fields: Any) -> None:
        if self.episode_id:
            self._insert()
            self._write("update_episode", self.episode_id, **fields)

    def _insert(self, *rows: tuple[str, dict[str, Any]]) -> list[int] | None:
        """Write ``rows`` and any pending LLM exchanges in one transaction; return their ids."""
        batch, self._pending = [*self._pending, *rows], []
        return self._write("insert_rows", batch) if batch else None

    def record_step(self, line: str, **fields: Any) -> None:
        """Record one env step together with the [STEP] line printed for it."""
        if self.episode_id:
            ids = {"run_id": self.run_id, "episode_id": self.episode_id}
            written = self._insert(
                ("steps", {**ids, **fields}), ("lines", {**ids, "line": line, "printed_at": now()})
            )
            self._last_line_id = written[-1] if written else None

    def record_line(self, line: str) -> None:
        if self.run_id:
            written = self._insert(
                (
                    "lines",
                    {
                        "run_id": self.run_id,
                        "episode_id": self.episode_id,
                        "line": line,
                        "printed_at": now(),
                    },
                )
            )
            self._last_line_id = written[-1] if written else None

    def unrecord_line(self) -> None:
        """Remove the line just recorded: printing it failed, so it was never printed."""
        if self._last_line_id is not None:
            self._write("delete_row", "lines", self._last_line_id)
            self._last_line_id = None

    def on_exchange(self, exchange: Exchange) -> None:
        """Record one LLM HTTP exchange (the transport calls this)."""
        self._llm_position += 1
        if not self.run_id:
            return
        self._pending.append(
            (
                "llm_calls",
                dict(
                    run_id=self.run_id,
                    episode_id=self.episode_id,
                    step=self.step,
                    position=self._llm_position,
                    method=exchange.method,
                    url=exchange.url,
                    request_hash=exchange.request_hash or request_hash(exchange.request),
                    # The text as sent when it is JSON (see decode_json_text), not a copy written anew.
                    request=_as_is(exchange.request_text, exchange.request),
                    status_code=exchange.status_code,
                    # A stream's chunks can split a secret that the model repeated: redact it whole.
                    response=(
                        redact_stream(exchange.response, self.secrets, REDACTED)
                        if exchange.stream and isinstance(exchange.response, str)
                        else _as_is(exchange.response_text, exchange.response)
                    ),
                    stream=int(exchange.stream),
                    latency_ms=round(exchange.latency_ms, 3),
                    error=exchange.failure(),
                    started_at=exchange.started_at,
                ),
            )
        )


def _as_is(text: str | None, value: Any) -> Any:
    """Return a body's JSON text to store, or its value when the text cannot be kept."""
    return value if text is None else JSONText(text, value)
