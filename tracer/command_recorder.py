"""What ``tracer run`` records of a command as it runs: its stdout lines read as episodes and
steps, and each LLM and env exchange attached to the episode and step open when it began.

Thread-safe: stdout is read in one thread, the proxies answer in another.
"""

from __future__ import annotations

import hmac
import math
import re
import sqlite3
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from tracer.store import MIN_SECRET_LENGTH, REDACTED, Store, TraceError, now

if TYPE_CHECKING:
    from tracer.transport import Exchange

#: What a script gets as its key when none is given (the stand-in and a replay check none).
PLACEHOLDER_KEY = "tracer-placeholder-key"


def note(message: str) -> None:
    """Print one of tracer's own messages on stderr: stdout is the child's."""
    print(f"tracer: {message}", file=sys.stderr, flush=True)


@dataclass
class Slot:
    """Where an exchange belongs: the episode and step open when it began, its position."""

    episode_id: int | None
    step: int | None
    position: int
    started_at: str
    episode: int | None = None  # the episode's position in the run


def same_key(sent: str | None, given: list[str]) -> bool:
    """Compare a key in constant time with each given one, keeping neither."""
    return sent is not None and any(hmac.compare_digest(sent.encode(), g.encode()) for g in given)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _integer(text: str | None) -> int | None:
    return int(text) if text is not None and re.fullmatch(r"[0-9]{1,18}", text) else None


def _flag(text: str | None) -> bool | None:
    return {"true": True, "false": False, "1": True, "0": False}.get((text or "").lower())


@dataclass
class EpisodeState:
    """An episode being printed: its row, its steps so far, its LLM call positions."""

    id: int | None
    position: int
    task: str
    steps: int = 0
    llm_calls: int = 0
    ended: bool = False
    score: float | None = None


@dataclass
class Tally:
    """What the grader checks need, counted as the run goes."""

    llm_calls: int = 0
    # (the request: its episode, step and body hash; its call's number): a retry is the same
    # body sent again for the same step; the same body in another step or task is not one
    failed_calls: list[tuple[tuple, int]] = field(default_factory=list)
    recovered: set[tuple] = field(default_factory=set)
    keys_given: int = 0
    keys_other: int = 0
    keys_missing: int = 0
    step_lines: int = 0
    env_exchanges: int = 0
    env_failed: int = 0
    other_lines: int = 0


class CommandRecorder:
    """Records one command run; thread-safe (stdout is read in one thread, proxies in another).

    With ``store=None`` nothing is written, but lines are still parsed for the checks.
    A failing write is reported once and stops recording; the command goes on.
    """

    def __init__(self, store: Store | None, given_keys: Iterable[str] = ()):
        self.store = store
        self.given_keys = [k for k in given_keys if k]
        self.run_id: str | None = None
        self.lock = threading.RLock()
        self.episodes: list[EpisodeState] = []
        self.episode: EpisodeState | None = None
        self.outside_calls = 0  # LLM calls made outside any episode
        self.env_position = 0
        self.env_steps: deque[dict[str, Any]] = deque()  # env step exchanges not yet printed
        self.tally = Tally()
        self.tasks: list[str] = []
        self.model: str | None = None
        self._tasks_changed = False  # a [START] came: the run row's tasks are to be written
        self.sync: Callable[[], None] = lambda: None  # takes in stdout printed so far
        self.lines: list[str] = []  # as printed (secrets redacted), for a replay's comparison
        self.env_answers: dict[tuple[int, int], dict[str, Any]] = {}  # (episode, step): env step

    # -- writing ----------------------------------------------------------------------

    def _write(self, operation: Callable[[Store], Any]) -> Any:
        if self.store is None:
            return None
        try:
            return operation(self.store)
        except (sqlite3.Error, TraceError, OSError) as exc:
            note(f"recording stopped, could not write to {self.store.path}: {exc}")
            self.store = None
            return None

    def start(self, **fields: Any) -> str | None:
        """Record the start of the run; return its id (None when not recording)."""
        self.run_id = self._write(lambda s: s.start_run(**fields))
        return self.run_id

    def redact_text(self, text: str) -> str:
        return self.store.redact(text) if self.store is not None else text

    # -- stdout -----------------------------------------------------------------------

    def on_lines(self, lines: list[str]) -> None:
        """Record a batch of stdout lines (without newlines) and what they say, at once."""
        with self.lock:
            if self.store is None or not self.run_id:
                for line in lines:
                    self._parse(line, None)
                return
            self._write(lambda store: self._record_lines(store, lines))

    def _record_lines(self, store: Store, lines: list[str]) -> None:
        with store.transaction():
            for line in lines:
                self._parse(line, store)
            if self._tasks_changed:
                store.update_run(cast(str, self.run_id), tasks=self.tasks, model=self.model)
                self._tasks_changed = False

    def _parse(self, line: str, store: Store | None) -> None:
        from validator.lines import read_fields

        self.lines.append(line)
        read = read_fields(line.rstrip("\r"), anywhere=True)
        kind, values = read if read else (None, {})
        if kind == "START":
            self._end_unfinished("a new [START] came before its [END]")
            task = values.get("task") or "?"
            position = len(self.episodes) + 1
            episode_id = (
                store.start_episode(
                    cast(str, self.run_id),
                    position,
                    task=task,
                    benchmark=values.get("env"),
                    model=values.get("model"),
                )
                if store
                else None
            )
            self.episode = EpisodeState(episode_id, position, task)
            self.episodes.append(self.episode)
            self.tasks.append(task)
            self.model = self.model or values.get("model")
            self._tasks_changed = True
        episode = self.episode
        if store:
            store.record_line(cast(str, self.run_id), episode.id if episode else None, line)
        if kind == "STEP":
            self.tally.step_lines += 1
            if episode is None:
                return
            episode.steps += 1
            env = self._env_step_for(episode)
            if env:
                self.env_answers[(episode.position, episode.steps)] = env
            if store and episode.id:
                error = values.get("error")
                # The env's own reward and done when it was proxied; else what was printed.
                reward = (
                    env.get("reward")
                    if _is_number(env.get("reward"))
                    else _number(values.get("reward"))
                )
                done = (
                    env["done"] if isinstance(env.get("done"), bool) else _flag(values.get("done"))
                )
                store.record_step(
                    cast(str, self.run_id),
                    episode.id,
                    step=episode.steps,  # its position, as its LLM calls have it; step= is in lines
                    action_text=values.get("action"),
                    action=env.get("action"),
                    observation=env.get("observation"),
                    reward=reward,
                    done=done,
                    error=None if error in (None, "null", "None", "") else error,
                    latency_ms=env.get("latency_ms"),
                    started_at=env.get("started_at") or now(),
                )
        elif kind == "END" and episode is not None:
            rewards = [_number(r) for r in (values.get("rewards") or "").split(",") if r]
            episode.ended, episode.score = True, _number(values.get("score"))
            if store and episode.id:
                store.update_episode(
                    episode.id,
                    ended_at=now(),
                    status="completed",
                    success=_flag(values.get("success")),
                    steps=_integer(values.get("steps")) or episode.steps,
                    score=episode.score,
                    rewards=rewards,
                )
            self.episode = None
        elif kind is None:
            self.tally.other_lines += 1

    def _env_step_for(self, episode: EpisodeState) -> dict[str, Any]:
        """Return the oldest env step taken in this episode (or before any), not yet printed;
        one taken in an earlier episode that printed no [STEP] for it is dropped."""
        while self.env_steps:
            env = self.env_steps.popleft()
            if env["episode"] in (None, episode.position):
                return env
        return {}

    def _end_unfinished(self, why: str, status: str = "failed") -> None:
        episode = self.episode
        if episode is None:
            return
        self.episode = None
        if self.store is not None and episode.id:
            self._write(
                lambda s: s.update_episode(
                    cast(int, episode.id),
                    ended_at=now(),
                    status=status,
                    steps=episode.steps,
                    error=why,
                )
            )

    # -- LLM proxy --------------------------------------------------------------------

    def note_key(self, key: str | None) -> None:
        """Count how a call was keyed; a key other than the given ones is redacted too."""
        with self.lock:
            if key is None:
                self.tally.keys_missing += 1
            elif same_key(key, self.given_keys):
                self.tally.keys_given += 1
            else:
                self.tally.keys_other += 1
                if (
                    self.store is not None
                    and key != PLACEHOLDER_KEY
                    and len(key) >= MIN_SECRET_LENGTH
                ):
                    self.store.add_secret(key)

    def llm_slot(self) -> Slot:
        """Return where an LLM call that begins now belongs."""
        self.sync()
        with self.lock:
            episode = self.episode
            if episode is None:
                self.outside_calls += 1
                return Slot(None, None, self.outside_calls, now())
            episode.llm_calls += 1
            return Slot(episode.id, episode.steps + 1, episode.llm_calls, now(), episode.position)

    def record_llm(self, slot: Slot, exchange: Exchange) -> None:
        """Record one LLM exchange as ``inference.py`` records it."""
        # Imported here, as tracer.sse and decode_body are: tracer.transport imports httpx,
        # which `tracer run` need not import before it starts the command.
        from tracer.transport import request_hash

        with self.lock:
            self.tally.llm_calls += 1
            digest = request_hash(exchange.request)
            error = exchange.failure()
            failed = error is not None or (exchange.status_code or 0) >= 400
            request = (slot.episode, slot.step, digest)
            if failed:
                self.tally.failed_calls.append((request, self.tally.llm_calls))
            else:
                self.tally.recovered.add(request)
            if self.store is None or not self.run_id:
                return
            response = exchange.response
            if exchange.stream and isinstance(response, str):
                from tracer.sse import redact_stream

                response = redact_stream(response, self.store.secrets, REDACTED)
            row = dict(
                run_id=self.run_id,
                episode_id=slot.episode_id,
                step=slot.step,
                position=slot.position,
                method=exchange.method,
                url=exchange.url,
                request_hash=digest,
                request=exchange.request,
                status_code=exchange.status_code,
                response=response,
                stream=int(exchange.stream),
                latency_ms=round(exchange.latency_ms, 3),
                error=error,
                started_at=slot.started_at,
            )
            self._write(lambda s: s.record_llm_call(**row))

    # -- env proxy --------------------------------------------------------------------

    def env_slot(self) -> Slot:
        self.sync()
        with self.lock:
            self.env_position += 1
            episode = self.episode
            return Slot(
                episode.id if episode else None,
                episode.steps + 1 if episode else None,
                self.env_position,
                now(),
                episode.position if episode else None,
            )

    def record_env(
        self,
        slot: Slot,
        *,
        session: int | None,
        method: str,
        path: str,
        request: Any,
        status_code: int | None,
        response: str | None,
        latency_ms: float,
        error: str | None,
    ) -> None:
        """Record one env exchange (its answer as the exact text sent back); a step's answer
        waits for its [STEP] line."""
        from tracer.transport import decode_body

        parsed = decode_body(response.encode()) if response is not None else None
        with self.lock:
            self.tally.env_exchanges += 1
            if (
                error
                or (status_code or 0) >= 500
                or (isinstance(parsed, dict) and parsed.get("type") == "error")
            ):
                self.tally.env_failed += 1
            step = _env_step(method, path, request, parsed)
            if step is not None:
                self.env_steps.append(
                    {
                        **step,
                        "latency_ms": latency_ms,
                        "started_at": slot.started_at,
                        "episode": slot.episode,
                    }
                )
            if self.store is None or not self.run_id:
                return
            row = dict(
                run_id=self.run_id,
                episode_id=slot.episode_id,
                step=slot.step,
                position=slot.position,
                session=session,
                method=method,
                path=path,
                request=request,
                status_code=status_code,
                response=response,
                latency_ms=latency_ms,
                error=error,
                started_at=slot.started_at,
            )
            self._write(lambda s: s.insert_rows([("env_messages", row)]))

    # -- the end ----------------------------------------------------------------------

    def finish(
        self, status: str, exit_code: int, error: str | None, checks: dict[str, Any] | None
    ) -> None:
        with self.lock:
            self._end_unfinished(
                "the command ended before the episode's [END]",
                "interrupted" if status == "interrupted" else "failed",
            )
            if self.run_id:
                self._write(lambda s: s.update_run(cast(str, self.run_id), checks=checks))
                self._write(
                    lambda s: s.finish_run(cast(str, self.run_id), status, exit_code, error)
                )


def _env_step(method: str, path: str, request: Any, response: Any) -> dict[str, Any] | None:
    """Return the action and what the env answered, when an exchange is an env step."""
    if method == "WS" and isinstance(request, dict) and request.get("type") == "step":
        data = response.get("data") if isinstance(response, dict) else None
        action = request.get("data")
    elif method == "POST" and path.partition("?")[0].rstrip("/").endswith("/step"):
        data = response
        action = request.get("action", request) if isinstance(request, dict) else request
    else:
        return None
    data = data if isinstance(data, dict) else {}
    return {
        "action": action,
        "observation": data.get("observation"),
        "reward": data.get("reward"),
        "done": data.get("done"),
    }
