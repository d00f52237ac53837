"""`tracer run -- CMD`: real scripts, run unchanged as subprocesses, recorded."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import ROOT, SECRET, free_port
from tracer.cli import cli

SCRIPTS = Path(__file__).parent / "scripts"
CLEARED = (
    "HF_TOKEN",
    "API_KEY",
    "OPENAI_API_KEY",
    "API_BASE_URL",
    "OPENAI_BASE_URL",
    "ENV_BASE_URL",
    "ENV_URL",
    "MODEL_NAME",
    "TRACE_DB",
)


def tracer_run(tmp_path, *args, env=None):
    """Run ``tracer run`` in process (stdout and stderr kept apart); return the result."""
    environ = {name: None for name in CLEARED}
    environ.update(env or {})
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        return CliRunner().invoke(
            cli, ["--db", str(tmp_path / "t.db"), "run", *args], env=environ, catch_exceptions=False
        )
    finally:
        os.chdir(old)


def script(name: str) -> list[str]:
    return [sys.executable, str(SCRIPTS / name)]


def db_rows(tmp_path, sql, params=()):
    with sqlite3.connect(tmp_path / "t.db") as db:
        return db.execute(sql, params).fetchall()


def test_a_seed_like_script_is_recorded_with_its_env_and_its_stdout_passed_through(
    tmp_path, llm_server, echo_env_server
):
    requests_before = len(llm_server.app.state.requests)
    result = tracer_run(
        tmp_path,
        "--upstream",
        llm_server.url + "/v1",
        "--env-url",
        echo_env_server.url,
        "--",
        *script("seed_like.py"),
    )
    assert result.exit_code == 0, result.stderr
    direct = subprocess.run(
        script("seed_like.py"),
        capture_output=True,
        cwd=tmp_path,
        check=True,
        env={
            **os.environ,
            "API_BASE_URL": llm_server.url + "/v1",
            "HF_TOKEN": "unused-key",
            "ENV_BASE_URL": echo_env_server.url,
        },
    )
    assert result.stdout_bytes == direct.stdout  # byte for byte, as without tracer

    calls = len(llm_server.app.state.requests) - requests_before - 9  # the direct run's 9
    assert db_rows(tmp_path, "select count(*) from llm_calls") == [(calls,)] == [(9,)]
    steps = db_rows(
        tmp_path,
        "select e.task, s.step, s.reward, s.action, s.observation "
        "from steps s join episodes e on e.id = s.episode_id order by s.id",
    )
    assert [(task, step) for task, step, *_ in steps] == [
        (t, n) for t in ("alpha", "beta", "gamma") for n in (1, 2, 3)
    ]
    # the env's own answer, through the env proxy, for every [STEP] line
    assert all('"message"' in action and '"echoed_message"' in obs for *_, action, obs in steps)
    # each LLM call belongs to the step it chose an action for
    assert db_rows(tmp_path, "select step, count(*) from llm_calls group by step") == [
        (1, 3),
        (2, 3),
        (3, 3),
    ]
    assert "ok    stdout: valid: 3 episode(s), 9 step(s)" in result.stderr
    assert "ok    llm calls through API_BASE_URL: 9 call(s)" in result.stderr

    shown = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.db"), "show", "latest"])
    assert "command " in shown.output and "seed_like.py" in shown.output
    assert "(proxied: steps have the env's answers)" in shown.output


def test_an_async_script_with_concurrent_calls_has_every_call_recorded(tmp_path):
    result = tracer_run(tmp_path, "--", *script("async_two_calls.py"))
    assert result.exit_code == 0, result.stderr
    steps = result.stdout.count("[STEP]")
    per_step = db_rows(
        tmp_path, "select episode_id, step, count(*) from llm_calls group by episode_id, step"
    )
    assert len(per_step) == steps and all(n == 2 for *_, n in per_step)
    assert "stand-in model" in result.stderr  # no key and no API_BASE_URL: offline


def test_the_stand_in_note_comes_before_anything_the_command_writes_to_stderr(tmp_path):
    (tmp_path / "loud.py").write_text("import sys\nprint('child: starting', file=sys.stderr)\n")
    result = tracer_run(tmp_path, "--", sys.executable, "loud.py")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.index("stand-in model") < result.stderr.index("child: starting")


def test_a_streaming_script_with_its_env_in_process_is_recorded_from_stdout_and_llm_traffic(
    tmp_path,
):
    import json

    result = tracer_run(tmp_path, "--", *script("streaming.py"))
    assert result.exit_code == 0, result.stderr
    rows = db_rows(tmp_path, "select stream, response from llm_calls")
    assert len(rows) == 6 and all(stream == 1 and "data: [DONE]" in raw for stream, raw in rows)
    shown = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.db"), "show", "latest", "--json"])
    step = json.loads(shown.output)["episodes"][0]["steps"][0]
    assert step["llm_calls"][0]["completion"] == step["action_text"]
    # no env proxy: steps come from stdout alone, and show says so
    assert db_rows(tmp_path, "select count(*), count(observation) from steps") == [(6, 0)]
    shown = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.db"), "show", "latest"])
    assert "env not proxied (in-process, or reached directly)" in shown.output


def test_debug_lines_on_stdout_are_kept_passed_through_and_named_by_the_check(tmp_path):
    result = tracer_run(tmp_path, "--", *script("debug_lines.py"))
    assert result.exit_code == 0  # the script's own exit code
    assert result.stdout.splitlines()[0] == "Loading model config..."
    lines = [line for (line,) in db_rows(tmp_path, "select line from lines order by id")]
    assert lines == result.stdout.splitlines()
    assert "FAIL  stdout: 4 error(s)" in result.stderr and "line 1: E101" in result.stderr
    assert db_rows(tmp_path, "select count(*) from steps") == [(2,)]

    checked = tracer_run(tmp_path, "--check", "--", *script("debug_lines.py"))
    assert checked.exit_code == 1


def test_a_script_that_bypasses_api_base_url_is_named(tmp_path):
    result = tracer_run(tmp_path, "--check", "--", *script("bypass.py"))
    assert "FAIL  llm calls through API_BASE_URL: 0 calls while 3 [STEP] line(s)" in result.stderr
    assert result.exit_code == 1


def test_a_key_the_model_repeats_back_is_never_stored_or_printed(tmp_path):
    from tracer.servers import BackgroundServer
    from tracer.standin import create_standin_app

    with BackgroundServer(create_standin_app(reply=f"my key is {SECRET} ok", chunk_chars=7)) as llm:
        results = [
            tracer_run(
                tmp_path,
                "--",
                *script(name),
                env={"API_BASE_URL": llm.url + "/v1", "HF_TOKEN": SECRET, "API_KEY": SECRET},
            )
            for name in ("streaming.py", "debug_lines.py")
        ]
        headers = [r["headers"]["authorization"] for r in llm.app.state.requests]
    assert headers and all(h == f"Bearer {SECRET}" for h in headers)  # passed to the upstream
    for result in results:
        assert result.exit_code == 0, result.stderr
        assert SECRET not in result.stdout + result.stderr
        assert "ok    key: " in result.stderr
    assert "action=my key is [REDACTED] ok" in results[0].stdout  # the streamed completion
    for path in tmp_path.glob("t.db*"):
        assert SECRET.encode() not in path.read_bytes()


def test_an_upstream_that_is_down_gives_the_script_a_502_and_the_run_records_it(tmp_path):
    down = f"http://127.0.0.1:{free_port()}/v1"
    result = tracer_run(
        tmp_path,
        "--",
        *script("debug_lines.py"),
        env={"API_BASE_URL": down, "HF_TOKEN": "some-key-1234"},
    )
    assert result.exit_code == 1  # the script's own: its openai client raised
    assert "tracer proxy: the upstream" in result.stderr and "could not be reached" in result.stderr
    (error,) = db_rows(tmp_path, "select error from llm_calls limit 1")[0]
    assert error.startswith("ConnectError")
    assert "FAIL  llm failures" in result.stderr
    assert db_rows(tmp_path, "select status, exit_code from runs") == [("failed", 1)]


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["no-such-program-xyz"], 127, "no-such-program-xyz: command not found"),
        (["./notes.txt"], 126, "./notes.txt: not an executable file"),
    ],
)
def test_a_command_that_cannot_start_is_one_line(tmp_path, argv, code, message):
    (tmp_path / "notes.txt").write_text("hello")
    result = tracer_run(tmp_path, "--", *argv)
    assert result.exit_code == code
    assert result.stderr.strip().splitlines()[-1] == f"Error: {message}"
    assert not (tmp_path / "t.db").exists()


def test_a_port_that_cannot_be_bound_is_one_line(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = tracer_run(tmp_path, "--port", str(port), "--", *script("bypass.py"))
    assert result.exit_code == 2
    assert f"Error: cannot listen on 127.0.0.1:{port} for the LLM proxy" in result.stderr


def test_an_upstream_with_a_bad_port_is_one_line_before_the_command_starts(tmp_path):
    result = tracer_run(
        tmp_path, "--upstream", "http://127.0.0.1:abc/v1", "--", *script("bypass.py")
    )
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("Error: the upstream http://127.0.0.1:abc/v1 is not a URL (")
    )
    assert result.stdout == "" and db_rows(tmp_path, "select count(*) from runs") == [(0,)]


def test_a_database_that_cannot_be_written_still_runs_the_command(tmp_path):
    (tmp_path / "t.db").mkdir()  # a directory where the database should be
    result = tracer_run(tmp_path, "--", *script("bypass.py"))
    assert result.exit_code == 0
    assert result.stdout.count("[END]") == 3
    assert result.stderr.count("nothing will be recorded") == 1


def test_sigterm_reaches_the_script_which_prints_its_end_and_the_run_is_interrupted(tmp_path):
    (tmp_path / "slow.py").write_text(
        "import signal, sys, time\n"
        "def end(*_):\n"
        "    print('[END] success=false steps=1 score=0.10 rewards=0.10', flush=True)\n"
        "    sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, end)\n"
        "print('[START] task=t env=e model=m', flush=True)\n"
        "print('[STEP] step=1 action=a reward=0.10 done=false error=null', flush=True)\n"
        "time.sleep(30)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tracer.cli",
            "--db",
            str(tmp_path / "t.db"),
            "run",
            "--",
            sys.executable,
            "slow.py",
        ],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not db_rows_or_none(tmp_path, "select 1 from steps") and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=20)
    assert child.returncode == 3, err  # the script's own exit code
    assert out.splitlines()[-1].startswith("[END]")
    assert db_rows(tmp_path, "select status, exit_code from runs") == [("interrupted", 3)]
    assert db_rows(tmp_path, "select status, success from episodes") == [("completed", 0)]
    assert "Traceback" not in err


def db_rows_or_none(tmp_path, sql):
    try:
        return db_rows(tmp_path, sql)
    except sqlite3.Error:
        return None


def a_plain_http_env():
    """A team's own env server: plain FastAPI /reset and /step, no OpenEnv /schema."""
    from fastapi import FastAPI

    from tracer.servers import BackgroundServer

    app = FastAPI()

    @app.post("/reset")
    def reset(task: str = "") -> dict:
        return {
            "observation": {"text": f"{task} ready" if task else "ready"},
            "reward": 0.0,
            "done": False,
        }

    @app.post("/step")
    def step(body: dict) -> dict:
        message = body["action"]["message"]
        return {"observation": {"text": message}, "reward": len(message) / 10, "done": False}

    return BackgroundServer(app, "plain env")


def test_an_http_env_gives_each_step_the_envs_own_action_and_reward_in_its_own_episode(tmp_path):
    with a_plain_http_env() as env:
        result = tracer_run(tmp_path, "--env-url", env.url, "--", *script("http_env.py"))
    assert result.exit_code == 0, result.stderr
    steps = db_rows(
        tmp_path,
        "select e.task, s.action_text, s.action, s.reward from steps s "
        "join episodes e on e.id = s.episode_id order by s.id",
    )
    assert [task for task, *_ in steps] == ["second", "second", "third", "third"]
    for _, text, action, reward in steps:  # not the dropped step of the first task
        assert action == json.dumps({"message": text}, separators=(",", ":"))
        assert reward == pytest.approx(len(text) / 10)  # the env's, not the printed 0.50
    assert "ok    env calls through ENV_BASE_URL: 8 exchange(s), 0 failed" in result.stderr


def test_a_script_that_bypasses_env_base_url_is_named(tmp_path, echo_env_server):
    result = tracer_run(tmp_path, "--env-url", echo_env_server.url, "--", *script("bypass.py"))
    assert (
        "FAIL  env calls through ENV_BASE_URL: 0 exchanges while 3 [STEP] line(s)" in result.stderr
    )


def test_protocol_lines_behind_a_logging_prefix_are_still_recorded():
    from validator.lines import read_fields

    line = (
        "2026-12-03 10:00:00 [INFO] agent: [STEP] step=2 action=go reward=0.50 done=true error=null"
    )
    assert read_fields(line) is None  # a grader rejects it (E101)...
    assert read_fields(line, anywhere=True) == (
        "STEP",
        {  # ...the recorder keeps the step
            "step": "2",
            "action": "go",
            "reward": "0.50",
            "done": "true",
            "error": "null",
        },
    )


def test_a_body_that_is_not_a_json_object_is_recorded_and_reads_back_as_sent(tmp_path):
    (tmp_path / "odd.py").write_text(
        "import os, httpx\n"
        "base = os.environ['API_BASE_URL']\n"
        "print('[START] task=t env=e model=m', flush=True)\n"
        "httpx.post(base + '/completions', content=b'prompt=hello',\n"
        "           headers={'content-type': 'application/x-www-form-urlencoded'})\n"
        "httpx.post(base + '/embeddings', json=['a', 'b'])\n"
        "print('[STEP] step=1 action=a reward=0.50 done=true error=null', flush=True)\n"
        "print('[END] success=true steps=1 score=0.50 rewards=0.50', flush=True)\n"
    )
    assert tracer_run(tmp_path, "--", sys.executable, "odd.py").exit_code == 0
    db = str(tmp_path / "t.db")
    shown = CliRunner().invoke(cli, ["--db", db, "show", "latest", "--json"])
    assert shown.exit_code == 0, shown.output
    exported = CliRunner().invoke(cli, ["--db", db, "export", "latest", "--format", "jsonl"])
    assert exported.exit_code == 0, exported.output
    calls = json.loads(exported.output)["llm_calls"]
    assert [call["request"] for call in calls] == ["prompt=hello", ["a", "b"]]
    for fmt in ("messages", "call-messages", "trace"):  # not chat calls: nothing to train on
        result = CliRunner().invoke(cli, ["--db", db, "export", "latest", "--format", fmt])
        assert (result.exit_code, result.output) == (0, ""), fmt


def test_a_call_made_outside_any_episode_is_shown_with_the_run(tmp_path):
    (tmp_path / "warm.py").write_text(
        "import os, httpx\n"
        "httpx.post(os.environ['API_BASE_URL'] + '/chat/completions', json={\n"
        "    'model': 'm', 'messages': [{'role': 'user', 'content': 'warm up'}]})\n"
        "print('[START] task=t env=e model=m', flush=True)\n"
        "print('[STEP] step=1 action=a reward=0.50 done=true error=null', flush=True)\n"
        "print('[END] success=true steps=1 score=0.50 rewards=0.50', flush=True)\n"
    )
    result = tracer_run(tmp_path, "--", sys.executable, "warm.py")
    assert result.exit_code == 0, result.stderr
    db = str(tmp_path / "t.db")
    shown = CliRunner().invoke(cli, ["--db", db, "show", "latest", "--json"])
    (call,) = json.loads(shown.output)["other_llm_calls"]
    assert call["prompt"] == "warm up" and call["completion"]
    text = CliRunner().invoke(cli, ["--db", db, "show", "latest"]).output
    assert "outside any episode" in text and "prompt      warm up" in text
    # The model chose none of the actions: the check a grader's proxy would pass says so.
    assert (
        "FAIL  llm calls through API_BASE_URL: 1 call(s), none inside an episode, while 1 "
        "[STEP] line(s) were printed"
    ) in result.stderr


def test_bare_tags_give_their_rows_and_the_check_says_the_score_is_missing(tmp_path):
    result = tracer_run(tmp_path, "--", *script("bare_tags.py"))
    assert result.exit_code == 0, result.stderr
    assert db_rows(tmp_path, "select task, score from episodes") == [("?", None)]
    assert db_rows(tmp_path, "select step, reward from steps") == [(1, None), (2, None)]
    assert "score not strictly inside (0, 1): ? (no score)" in result.stderr


def test_a_process_the_command_leaves_running_does_not_keep_the_run_open(tmp_path):
    result = tracer_run(
        tmp_path, "--", *script("leaves_a_process.py"), env={"HELPER_DIR": str(tmp_path)}
    )
    running = not (tmp_path / "done").exists()  # tracer did not wait for it to close stdout
    (tmp_path / "release").touch()
    assert running
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("[END] success=true steps=1 score=0.50 rewards=0.50\n")
    assert db_rows(tmp_path, "select status from runs") == [("completed",)]
    assert "a process it started still holds its stdout" in result.stderr


def test_steps_are_numbered_in_order_so_each_llm_call_stays_with_its_step(tmp_path):
    result = tracer_run(tmp_path, "--", *script("same_step_number.py"))
    assert result.exit_code == 0, result.stderr
    assert db_rows(tmp_path, "select step, action_text from steps order by id") == [
        (1, "a"),
        (2, "b"),
        (3, "c"),
    ]
    assert db_rows(
        tmp_path,
        "select s.action_text, json_extract(c.request, '$.messages[0].content') "
        "from llm_calls c join steps s on s.episode_id = c.episode_id "
        "and s.step = c.step order by c.id",
    ) == [("a", "a"), ("b", "b"), ("c", "c")]
    assert "[STEP] step=1 action=b" in result.stdout  # as printed


def a_distant_upstream():
    """A provider farther away than the script: a stream's next event, and its end of body after
    data: [DONE], come a while later; under /busy, every other call is a 429 whose body comes
    after its status; under /cut, streams end without their data: [DONE]."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from tracer.servers import BackgroundServer

    async def chat(request) -> StreamingResponse:
        async def events():
            yield 'data: {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}\n\n'
            await asyncio.sleep(0.3)
            yield 'data: {"choices": [{"index": 0, "delta": {"content": "lo"}}]}\n\n'
            if not request.url.path.startswith("/cut/"):
                yield "data: [DONE]\n\n"
            await asyncio.sleep(0.3)

        return StreamingResponse(events(), media_type="text/event-stream")

    calls = []

    async def busy(request) -> StreamingResponse:
        calls.append(1)
        if len(calls) % 2 == 0:
            return await chat(request)

        async def message():
            await asyncio.sleep(0.3)
            yield '{"error": {"message": "rate limited"}}'

        return StreamingResponse(message(), status_code=429, media_type="application/json")

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/busy/v1/chat/completions", busy, methods=["POST"]),
            Route("/cut/v1/chat/completions", chat, methods=["POST"]),
        ]
    )
    return BackgroundServer(app, "distant upstream")


@pytest.mark.parametrize("leave", ["done", "first"])
def test_a_stream_closed_at_its_done_is_whole_and_one_left_before_it_is_not(tmp_path, leave):
    with a_distant_upstream() as upstream:
        result = tracer_run(
            tmp_path,
            "--upstream",
            upstream.url + "/v1",
            "--",
            *script("closes_at_done.py"),
            env={"LEAVE": leave},
        )
    assert result.exit_code == 0, result.stderr
    rows = db_rows(tmp_path, "select stream, error, response from llm_calls order by id")
    assert len(rows) == 2 and all(stream == 1 for stream, _, _ in rows)
    if leave == "done":  # the whole answer was read: no failure, the stream kept as sent
        assert [error for _, error, _ in rows] == [None, None]
        assert all(response.endswith("data: [DONE]\n\n") for _, _, response in rows)
        assert "ok    llm failures: 0 of 2 exchange(s) failed" in result.stderr
    else:
        assert all(error.startswith("the client went away") for _, error, _ in rows)
        assert all("[DONE]" not in response for _, _, response in rows)


def test_a_429_to_a_stream_closed_unread_is_recorded_with_its_message(tmp_path):
    with a_distant_upstream() as upstream:
        result = tracer_run(
            tmp_path, "--upstream", upstream.url + "/busy/v1", "--", *script("retries_a_429.py")
        )
    assert result.exit_code == 0, result.stderr
    rows = db_rows(tmp_path, "select status_code, error, response from llm_calls order by id")
    assert [status for status, _, _ in rows] == [429, 200, 429, 200]
    assert rows[0][1:] == (None, '{"error": {"message": "rate limited"}}')
    assert rows[2][1:] == (None, '{"error": {"message": "rate limited"}}')


def test_a_failed_call_is_not_taken_as_retried_by_the_same_question_in_another_task(tmp_path):
    with a_distant_upstream() as upstream:  # /busy: the first call is a 429, the second not
        result = tracer_run(
            tmp_path, "--upstream", upstream.url + "/busy/v1", "--", *script("falls_back.py")
        )
    assert result.exit_code == 0, result.stderr
    assert "action=fallback" in result.stdout and "action=asked" in result.stdout
    assert (
        "FAIL  llm failures: 1 of 2 exchange(s) failed; 1 request(s) never answered by a retry "
        "(calls #1)"
    ) in result.stderr


def test_a_stream_that_ends_without_its_done_is_recorded_as_cut_short(tmp_path):
    with a_distant_upstream() as upstream:
        result = tracer_run(
            tmp_path, "--upstream", upstream.url + "/cut/v1", "--", *script("closes_at_done.py")
        )
    assert result.exit_code == 0, result.stderr
    cut = ("the stream ended before data: [DONE]",)
    assert db_rows(tmp_path, "select error from llm_calls") == [cut, cut]
    assert "llm failures: 2 of 2 exchange(s) failed" in result.stderr
