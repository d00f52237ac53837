"""The agent loop: one episode of an LLM acting in an OpenEnv environment.

``inference.py`` and ``tracer replay`` both run episodes through ``run_episode``; only what
sits behind the two seams differs (the LLM client's httpx transport, the env client).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tracer.recorder import Recorder
from tracer.store import now
from validator.grammar import EndLine, StartLine, StepLine

SYSTEM_PROMPT = (
    "You are an agent acting in an OpenEnv environment.\n"
    "Each turn you receive the latest observation and must reply with your next action.\n"
    "{action_instructions}"
)


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived; the episode ends at once, but still prints its [END]."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


class StopEpisode(BaseException):
    """Raised by a replay seam to end the episode as failed, with this message.

    A BaseException so that the openai client's retry loop (``except Exception``) cannot
    swallow it and ask again.
    """


class SignalGate:
    """Turns the first SIGTERM/SIGINT into ``Interrupted``, but never inside ``hold()``.

    Recording a line and printing it happen under ``hold()``, so an interrupt cannot land
    between them: whatever reached stdout is also in the database.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.depth = 0
        self.fired = False
        self.pending: int | None = None

    def handler(self, signum: int, frame: Any) -> None:
        if self.fired:  # later signals must not cut the [END] line short
            return
        self.fired = True
        if self.depth:
            self.pending = signum
        else:
            raise Interrupted(signum)

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending is not None:
                signum, self.pending = self.pending, None
                raise Interrupted(signum)


SIGNALS = SignalGate()


class ActionError(Exception):
    """A completion that cannot be turned into an action for this environment."""


def text_field(action_schema: dict | None) -> str | None:
    """Return the action's single text field (``message`` for the echo env), if it has one."""
    if not action_schema:
        return "message"
    properties = {k: v for k, v in action_schema.get("properties", {}).items() if k != "metadata"}
    strings = [k for k, v in properties.items() if v.get("type") == "string"]
    required = [k for k in action_schema.get("required", []) if k in properties]
    if len(strings) == 1 and set(required) <= set(strings):
        return strings[0]
    return None


def action_instructions(action_schema: dict | None) -> str:
    """Return the part of the system prompt that says how to write an action."""
    name = text_field(action_schema)
    if name is not None:
        return (f"Reply with exactly the {name} to send: no quotes, no prefixes, just the text. "
                "Longer, substantive messages earn more reward.")
    return ("Reply with exactly one JSON object that matches this JSON Schema, and nothing else:\n"
            + json.dumps(action_schema, sort_keys=True))


def action_from_completion(text: str, action_schema: dict | None) -> tuple[dict, str]:
    """Return the env action for a completion, and the text to print in ``action=``."""
    name = text_field(action_schema)
    if name is not None:
        return {name: text}, text
    try:
        action = json.loads(text)
    except ValueError:
        raise ActionError(f"completion is not a JSON action object: {text[:80]!r}") from None
    if not isinstance(action, dict):
        raise ActionError(f"completion is not a JSON object: {text[:80]!r}")
    return action, json.dumps(action, separators=(",", ":"), ensure_ascii=False)


def last_action_error(observation: Any) -> str | None:
    """Return the env's ``last_action_error`` (observation field or metadata), if any."""
    if not isinstance(observation, dict):
        return None
    error = observation.get("last_action_error")
    if error is None and isinstance(observation.get("metadata"), dict):
        error = observation["metadata"].get("last_action_error")
    return str(error) if error not in (None, "", False) else None


def user_prompt(step: int, observation: Any, last_reward: float, history: list[str]) -> str:
    """Return the user message for ``step``, like the seed's prompt."""
    history_block = "\n".join(history[-4:]) if history else "None"
    return (
        f"Step: {step}\n"
        f"Last observation: {json.dumps(observation, sort_keys=True, ensure_ascii=False)}\n"
        f"Last reward: {last_reward:.2f}\n"
        f"Previous steps:\n{history_block}\n"
        "Send your next action."
    )


@dataclass
class Settings:
    """What the loop needs besides its two seams."""

    task: str
    benchmark: str
    model: str
    max_steps: int = 8
    temperature: float = 0.7
    max_tokens: int = 150
    success_threshold: float = 0.1
    stream: bool = False
    reset_args: dict = field(default_factory=dict)

    @property
    def max_total_reward(self) -> float:
        # As in the seed: each completion token can earn 0.1, on every step.
        return self.max_steps * self.max_tokens * 0.1


@dataclass
class StepRecord:
    step: int
    action: dict
    action_text: str
    observation: Any
    reward: float
    done: bool
    error: str | None


@dataclass
class Outcome:
    """How an episode ended: ``status`` is completed, failed or interrupted."""

    status: str = "running"
    error: str | None = None
    steps: list[StepRecord] = field(default_factory=list)
    reset_observation: Any = None
    success: bool = False
    score: float = 0.0
    lines: list[str] = field(default_factory=list)

    @property
    def rewards(self) -> list[float]:
        return [s.reward for s in self.steps]


def complete(llm: Any, settings: Settings, messages: list[dict]) -> str:
    """Return the model's reply text for ``messages`` (streamed or not)."""
    params = dict(model=settings.model, messages=messages, temperature=settings.temperature,
                  max_tokens=settings.max_tokens, stream=settings.stream)
    if settings.stream:
        parts = []
        for chunk in llm.chat.completions.create(**params):
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        return "".join(parts).strip()
    completion = llm.chat.completions.create(**params)
    return (completion.choices[0].message.content or "").strip()


def close_quietly(env: Any, timeout_s: float = 5.0) -> str | None:
    """Close an env client without letting a hung or failing close block the [END] line."""
    if getattr(env, "closes_at_once", False):  # a thread per episode was 40% of offline replay
        env.close()
        return None
    errors: list[str] = []

    def close() -> None:
        try:
            env.close()
        except Exception as exc:  # reported on stderr by the caller
            errors.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=close, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return f"env.close() did not finish within {timeout_s:.0f}s"
    return errors[0] if errors else None


def run_episode(
    settings: Settings,
    llm: Any,
    open_env: Callable[[], Any],
    action_schema: Callable[[], dict | None],
    recorder: Recorder,
    emit: Callable[[str], None],
    position: int = 1,
) -> Outcome:
    """Run one episode, printing its [START], [STEP]s and an [END] whatever happens."""
    outcome = Outcome()

    def say(line: StartLine | StepLine | EndLine, **step: Any) -> None:
        """Record and print a line (with its step's row) so that both or neither happen."""
        text = recorder.redact(line.format())
        outcome.lines.append(text)
        with SIGNALS.hold():
            if step:
                recorder.record_step(text, **step)
            else:
                recorder.record_line(text)
            emit(text)

    recorder.start_episode(position, task=settings.task, benchmark=settings.benchmark,
                           model=settings.model, reset_args=settings.reset_args)
    env = None
    try:
        say(StartLine(task=settings.task, env=settings.benchmark, model=settings.model))
        env = open_env()
        t0 = time.perf_counter()
        result = env.reset(**settings.reset_args)
        outcome.reset_observation = result.observation
        recorder.update_episode(reset_observation=_payload(result),
                                reset_latency_ms=round((time.perf_counter() - t0) * 1000, 3))
        schema = action_schema()
        system = SYSTEM_PROMPT.format(action_instructions=action_instructions(schema))
        observation, last_reward, history = result.observation, 0.0, []
        for step in range(1, settings.max_steps + 1):
            if result.done:
                break
            recorder.step = step
            messages = [{"role": "system", "content": system},
                        {"role": "user", "content": user_prompt(step, observation, last_reward, history)}]
            text = complete(llm, settings, messages)
            action, action_text = action_from_completion(text, schema)
            started = time.perf_counter()
            result = env.step(action)
            latency_ms = round((time.perf_counter() - started) * 1000, 3)
            reward = float(result.reward or 0.0)
            record = StepRecord(step, action, action_text, result.observation, reward,
                                bool(result.done), last_action_error(result.observation))
            outcome.steps.append(record)
            say(StepLine(step=step, action=action_text, reward=reward, done=record.done,
                         error=record.error),
                step=step, action=action, action_text=action_text, observation=result.observation,
                reward=reward, done=int(record.done), error=record.error, latency_ms=latency_ms)
            observation, last_reward = result.observation, reward
            history.append(f"Step {step}: {action_text!r} -> reward {reward:+.2f}")
        outcome.status = "completed"
    except Interrupted as exc:
        outcome.status, outcome.error = "interrupted", str(exc)
        raise
    except (StopEpisode, Exception) as exc:
        message = str(exc) if isinstance(exc, StopEpisode) else _describe(exc)
        outcome.status, outcome.error = "failed", recorder.redact(message)
        print(f"tracer: episode {settings.task!r} stopped: {outcome.error}", file=sys.stderr, flush=True)
    finally:
        if env is not None:
            problem = close_quietly(env)
            if problem:
                print(f"tracer: {problem}", file=sys.stderr, flush=True)
        total = sum(outcome.rewards)
        score = total / settings.max_total_reward if settings.max_total_reward > 0 else 0.0
        outcome.score = min(max(score, 0.0), 1.0)
        outcome.success = outcome.status == "completed" and outcome.score >= settings.success_threshold
        say(EndLine(success=outcome.success, steps=len(outcome.steps), score=outcome.score,
                    rewards=outcome.rewards))
        recorder.update_episode(
            ended_at=now(), status=outcome.status, success=int(outcome.success),
            steps=len(outcome.steps), score=round(outcome.score, 3), rewards=outcome.rewards,
            error=outcome.error,
        )
    return outcome


def _payload(result: Any) -> dict:
    return {"observation": result.observation, "reward": result.reward, "done": result.done}


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
