"""Trace databases built the way the recorder writes them, shared by the tests of the CLI.

``record_run`` plays the recorder against a real ``Store``: one episode per task, an LLM call
then an env step per message, the stdout protocol lines, the outcome.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import corrupt, run_cli, snapshot  # noqa: F401  (the CLI tests' helpers)
from tracer.store import Store, now

TOKEN = "hf_SuperSecretToken1234567890"


def chat_response(content: str, step: int) -> dict:
    return {
        "id": f"chatcmpl-{step}", "object": "chat.completion", "model": "stand-in",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20 + step, "completion_tokens": 3, "total_tokens": 23 + step},
    }


def sse_response(content: str) -> str:
    chunks = [{"choices": [{"index": 0, "delta": {"content": part}}]}
              for part in (content[:2], content[2:])]
    chunks.append({"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 4}})
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def record_run(
    store: Store,
    tasks: tuple[str, ...] = ("echo",),
    messages: tuple[str, ...] = ("hello", "world"),
    *,
    model: str = "stand-in",
    stream: bool = False,
    replay_of: str | None = None,
    finish: bool = True,
    api_key: str | None = None,
) -> str:
    """Record a run the way the recorder does; return its id."""
    run_id = store.start_run(
        tasks=list(tasks), benchmark="echo_env", model=model,
        api_base_url="http://llm.test/v1", env_source={"kind": "embedded"},
        config={"max_steps": len(messages), "temperature": 0.0},
        versions={"python": "3.11", "openenv-tracer": "0.1.0"}, replay_of=replay_of,
    )
    for position, task in enumerate(tasks, 1):
        episode = store.start_episode(
            run_id, position, task=task, benchmark="echo_env", model=model,
            reset_args={}, reset_observation={"echoed_message": ""},
            reset_latency_ms=3.5,
        )
        store.record_line(run_id, episode, f"[START] task={task} env=echo_env model={model}")
        rewards = []
        for step, message in enumerate(messages, 1):
            request = {
                "model": model,
                "messages": [{"role": "system", "content": "Echo one word."},
                             {"role": "user", "content": f"Step {step}: say a word"}],
                "temperature": 0.0, "max_tokens": 64, "stream": stream,
            }
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            store.record_llm_call(
                run_id=run_id, episode_id=episode, step=step, position=step, method="POST",
                url="http://llm.test/v1/chat/completions", request_hash=f"h{step}",
                request={**request, **({"extra_headers": headers} if headers else {})},
                status_code=200, stream=int(stream),
                response=sse_response(message) if stream else chat_response(message, step),
                latency_ms=100.0 + step, started_at=now(),
            )
            reward, done = len(message) / 10, step == len(messages)
            rewards.append(reward)
            store.record_step(
                run_id, episode, step=step, action={"message": message},
                action_text=message, observation={"echoed_message": message},
                reward=reward, done=int(done), error=None, latency_ms=2.0 + step,
                started_at=now(),
            )
            store.record_line(
                run_id, episode, f"[STEP] step={step} action={message} reward={reward:.2f} "
                f"done={'true' if done else 'false'} error=null",
            )
        if not finish:
            return run_id
        score = sum(rewards) / len(rewards)
        store.update_episode(
            episode, ended_at=now(), status="completed", success=int(score > 0.3),
            steps=len(messages), score=score, rewards=rewards,
        )
        store.record_line(
            run_id, episode, f"[END] success={'true' if score > 0.3 else 'false'} "
            f"steps={len(messages)} score={score:.3f} rewards="
            + ",".join(f"{r:.2f}" for r in rewards),
        )
    store.finish_run(run_id, "completed", 0)
    return run_id


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database with two runs: a two-task run and its replay, which differs at one step."""
    path = tmp_path / "traces.db"
    store = Store(path)
    original = record_run(store, ("echo", "shout"), ("hello", "world"))
    record_run(store, ("echo", "shout"), ("hello", "there"), replay_of=original)
    store.close()
    return path


def test_record_run_writes_what_the_recorder_writes(db):
    with sqlite3.connect(db) as conn:
        counts = {t: conn.execute(f"select count(*) from {t}").fetchone()[0]
                  for t in ("runs", "episodes", "steps", "llm_calls", "lines")}
    conn.close()
    assert counts == {"runs": 2, "episodes": 4, "steps": 8, "llm_calls": 8, "lines": 16}
