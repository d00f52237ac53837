"""The trace database schema, as numbered migrations applied once each.

Never edit a migration that has shipped: add the next one. ``MIGRATIONS`` is the order.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

MIGRATIONS_TABLE = "_tracer_migrations"


def m001_initial(db: sqlite_utils.Database) -> None:
    db["runs"].create(
        {
            "id": str,
            "started_at": str,
            "ended_at": str,
            "status": str,  # running, completed, failed, interrupted
            "exit_code": int,
            "error": str,
            "tasks": str,  # JSON list
            "benchmark": str,
            "model": str,
            "api_base_url": str,
            "env_source": str,  # JSON: {"kind": "embedded"|"url"|"image", ...}
            "env_schema": str,  # JSON: the env's /schema (action, observation, state)
            "config": str,  # JSON, secrets removed
            "config_fingerprint": str,
            "versions": str,  # JSON: python, openenv-core, openai, openenv-tracer
            "replay_of": str,
            "pid": int,
        },
        pk="id",
    )
    db["episodes"].create(
        {
            "id": int,
            "run_id": str,
            "position": int,  # 1-based order within the run
            "task": str,
            "benchmark": str,
            "model": str,
            "started_at": str,
            "ended_at": str,
            "status": str,  # running, completed, failed, interrupted
            "success": int,
            "steps": int,
            "score": float,
            "rewards": str,  # JSON list of floats
            "error": str,
            "reset_args": str,  # JSON
            "reset_observation": str,  # JSON: the reset response data
            "reset_latency_ms": float,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["steps"].create(
        {
            "id": int,
            "episode_id": int,
            "run_id": str,
            "step": int,
            "action": str,  # JSON: the payload sent to env.step()
            "action_text": str,  # as printed in action=
            "observation": str,  # JSON: the observation returned
            "reward": float,
            "done": int,
            "error": str,
            "latency_ms": float,
            "started_at": str,
        },
        pk="id",
        foreign_keys=[("episode_id", "episodes", "id"), ("run_id", "runs", "id")],
    )
    db["llm_calls"].create(
        {
            "id": int,
            "run_id": str,
            "episode_id": int,
            "step": int,  # the step this call chose an action for
            "position": int,  # 1-based order of the HTTP exchange within the episode
            "method": str,
            "url": str,
            "request_hash": str,  # sha256 of the canonical JSON request body
            "request": str,  # JSON request body
            "status_code": int,
            "response": str,  # JSON response body (or raw text for streams and non-JSON)
            "stream": int,
            "latency_ms": float,
            "error": str,
            "started_at": str,
        },
        pk="id",
        foreign_keys=[("episode_id", "episodes", "id"), ("run_id", "runs", "id")],
    )
    db["lines"].create(
        {
            "id": int,
            "run_id": str,
            "episode_id": int,
            "line": str,  # exactly as printed on stdout, without the newline
            "printed_at": str,
        },
        pk="id",
        foreign_keys=[("episode_id", "episodes", "id"), ("run_id", "runs", "id")],
    )
    db["runs"].create_index(["started_at"])
    db["runs"].create_index(["replay_of"])
    db["episodes"].create_index(["run_id", "position"])
    db["episodes"].create_index(["task"])
    db["steps"].create_index(["episode_id", "step"])
    db["llm_calls"].create_index(["episode_id", "position"])
    db["lines"].create_index(["run_id", "id"])


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [m001_initial]
