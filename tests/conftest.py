"""Shared fixtures: local servers on 127.0.0.1 and a way to run inference.py for real."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hf_TESTSECRET_do_not_store_0123456789"


def free_port() -> int:
    """Return a 127.0.0.1 port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def inference_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """Return a clean environment for inference.py: no key, a DB in tmp_path, no .env."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "API_KEY", "API_BASE_URL", "MODEL_NAME", "ENV_BASE_URL",
                        "TASKS", "MAX_STEPS", "TRACE", "TRACE_DB", "LOCAL_IMAGE_NAME", "IMAGE_NAME")}
    env["TRACE_DB"] = str(tmp_path / "traces.db")
    env.update(overrides)
    return env


def unprivileged(cmd: list[str]) -> list[str]:
    """Return ``cmd`` run as a user that file permissions apply to: root writes anywhere, so
    as root it runs as nobody in a user namespace (or the test is skipped)."""
    import shutil

    if os.geteuid() != 0:
        return cmd
    if not shutil.which("unshare") or subprocess.run(["unshare", "-U", "true"],
                                                     check=False).returncode:
        pytest.skip("no unprivileged user to run as")
    return ["unshare", "-U", *cmd]


def start_inference(tmp_path: Path, **overrides: str) -> subprocess.Popen:
    """Start ``python inference.py`` from tmp_path (so no stray .env is read)."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "inference.py")], cwd=tmp_path,
        env=inference_env(tmp_path, **overrides),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture(scope="session")
def llm_server():
    """A local OpenAI-compatible server (the deterministic stand-in) for the session."""
    from tracer.servers import BackgroundServer
    from tracer.standin import create_standin_app

    with BackgroundServer(create_standin_app(), "test llm") as server:
        yield server


@pytest.fixture(scope="session")
def echo_env_server():
    """The bundled echo env, served on 127.0.0.1 for the session."""
    from tracer.echo_env import create_echo_app
    from tracer.servers import BackgroundServer

    with BackgroundServer(create_echo_app(), "test env") as server:
        yield server


def scripted_env(*answers: dict, reset: dict | None = None, delay_s: float = 0.0):
    """An env server (OpenEnv's websocket protocol, written with Python's ``json`` as any server
    may be) whose steps answer ``answers`` in turn, then echo forever; ``delay_s`` before each.
    ``reset`` updates its answer to a reset.

    Each answer updates the echo env's usual one (``{"observation", "reward", "done"}``), so
    a test can send what openenv-core's own server never does: ``NaN``, ``"done": "false"``.
    """
    import asyncio
    import json

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute

    from tracer.servers import BackgroundServer

    async def schema(request) -> JSONResponse:
        return JSONResponse({"action": {"properties": {"message": {"type": "string"}},
                                        "required": ["message"]}})

    async def session(websocket) -> None:
        await websocket.accept()
        steps = 0
        while True:
            message = json.loads(await websocket.receive_text())
            if message["type"] == "close":
                return
            data = {"observation": {"echoed_message": "ready"}, "reward": 0.0, "done": False,
                    **(reset or {})}
            if message["type"] == "step":
                text = message["data"].get("message", "")
                data = {"observation": {"echoed_message": text}, "reward": 0.1, "done": False}
                steps += 1
                if steps <= len(answers):
                    data.update(answers[steps - 1])
                await asyncio.sleep(delay_s)
            await websocket.send_text(json.dumps({"type": "observation", "data": data}))

    app = Starlette(routes=[Route("/schema", schema), WebSocketRoute("/ws", session)])
    return BackgroundServer(app, "scripted env")
