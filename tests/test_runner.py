"""Runs of the reference agent in-process: endpoints, failures, secrets, configuration."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from tests.conftest import SECRET, free_port, scripted_env
from tracer.config import Config
from tracer.runner import main, run
from tracer.store import Store
from validator.grammar import parse


def config(tmp_path: Path, **kwargs) -> Config:
    return Config(trace_db=str(tmp_path / "traces.db"), **kwargs)


def log_of(capsys) -> tuple[list, str]:
    """Return the protocol lines printed (after checking them as ``validator check`` does)."""
    from validator import check_lines

    out, err = capsys.readouterr()
    report = check_lines(out.splitlines(keepends=True))
    assert report.ok, report.problems
    return [parse(line) for line in out.splitlines()], err


def test_with_a_key_it_calls_the_endpoint_and_stores_no_secret(
    tmp_path, capsys, llm_server, monkeypatch
):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    before = len(llm_server.app.state.requests)
    code = run(
        config(
            tmp_path,
            api_key=SECRET,
            api_base_url=llm_server.url + "/v1",
            model="my-org/my-model",
            max_steps=2,
        )
    )
    lines, err = log_of(capsys)
    assert code == 0 and lines[0].model == "my-org/my-model"
    seen = llm_server.app.state.requests[before:]
    assert len(seen) == 2 and seen[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    assert SECRET not in err
    assert SECRET.encode() not in (tmp_path / "traces.db").read_bytes()


@pytest.mark.parametrize("stream", [False, True])
def test_a_secret_inside_bodies_and_actions_is_redacted_everywhere(
    tmp_path, capsys, monkeypatch, stream
):
    from tracer.servers import BackgroundServer
    from tracer.standin import create_standin_app

    monkeypatch.setenv("API_KEY", SECRET)
    # Streamed 3 characters per chunk, the repeated key is split across chunks.
    leaky = create_standin_app(reply=f"my key is {SECRET}", chunk_chars=3)
    with BackgroundServer(leaky) as leaky_llm:
        code = run(
            config(
                tmp_path,
                api_key=SECRET,
                api_base_url=leaky_llm.url + "/v1",
                max_steps=2,
                stream=stream,
            )
        )
    out, err = capsys.readouterr()
    assert code == 0
    assert SECRET not in out and SECRET not in err
    assert "action=my key is [REDACTED]" in out
    for path in tmp_path.iterdir():  # the database and its WAL
        assert SECRET.encode() not in path.read_bytes(), path
    from tracer.queries import parse_response

    calls = list(sqlite_utils.Database(tmp_path / "traces.db")["llm_calls"].rows)
    assert [parse_response(c["response"], bool(c["stream"]))[0] for c in calls] == [
        "my key is [REDACTED]"
    ] * 2


def test_a_stream_whose_events_span_several_data_lines_is_read_and_stored_redacted(
    tmp_path, capsys, monkeypatch
):
    from click.testing import CliRunner
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    from tracer.cli import cli
    from tracer.servers import BackgroundServer

    def events():  # the key split across chunks, each chunk's JSON over two data: lines
        for i in range(0, len(reply := f"my key is {SECRET}"), 3):
            chunk = {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": reply[i : i + 3]}}],
            }
            yield json.dumps(chunk).replace(', "choices"', ',\ndata: "choices"')
        yield json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        yield "[DONE]"

    app = FastAPI()
    app.post("/v1/chat/completions")(
        lambda: StreamingResponse(
            (f"data: {event}\n\n" for event in events()), media_type="text/event-stream"
        )
    )
    monkeypatch.setenv("API_KEY", SECRET)
    with BackgroundServer(app) as llm:
        code = run(
            config(tmp_path, api_key=SECRET, api_base_url=llm.url + "/v1", max_steps=1, stream=True)
        )
    out, _ = capsys.readouterr()
    assert code == 0 and "action=my key is [REDACTED]" in out
    (call,) = sqlite_utils.Database(tmp_path / "traces.db")["llm_calls"].rows
    from openai._streaming import SSEDecoder  # how the client reads it back (and replay serves it)

    said = "".join(
        json.loads(event.data)["choices"][0]["delta"].get("content", "")
        for event in SSEDecoder().iter_bytes(iter([call["response"].encode()]))
        if event.data != "[DONE]"
    )
    assert said == "my key is [REDACTED]"
    db = str(tmp_path / "traces.db")
    shown = json.loads(CliRunner().invoke(cli, ["show", "latest", "--json", "--db", db]).stdout)
    assert shown["episodes"][0]["steps"][0]["llm_calls"][0]["completion"] == "my key is [REDACTED]"
    (row,) = [
        json.loads(line)
        for line in CliRunner()
        .invoke(cli, ["export", "latest", "--format", "messages", "--db", db])
        .stdout.splitlines()
    ]
    assert row["messages"][-1] == {"role": "assistant", "content": "my key is [REDACTED]"}


def test_a_signal_while_the_episode_ends_still_prints_end_and_finishes_the_episode(
    tmp_path, capsys, monkeypatch
):
    import signal
    import time

    from tracer import agent

    def close_then_signalled(env, timeout_s=5.0):  # SIGTERM lands between the last [STEP] and [END]
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        return agent_close(env, timeout_s)

    agent_close = agent.close_quietly
    monkeypatch.setattr(agent, "close_quietly", close_then_signalled)
    code = run(config(tmp_path, max_steps=2, tasks=("a", "b")))
    lines, err = log_of(capsys)
    assert code == 128 + signal.SIGTERM and "interrupted by signal" in err
    assert [line.kind for line in lines] == ["START", "STEP", "STEP", "END"]
    db = sqlite_utils.Database(tmp_path / "traces.db")
    (episode,) = db["episodes"].rows
    assert episode["status"] == "completed" and episode["ended_at"]
    assert [run["status"] for run in db["runs"].rows] == ["interrupted"]


@pytest.mark.parametrize("reward", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_reward_is_an_env_error_and_end_is_still_valid(tmp_path, capsys, reward):
    with scripted_env({}, {"reward": reward}) as env:
        code = run(config(tmp_path, env_base_url=env.url, max_steps=3))
    lines, err = log_of(capsys)
    assert code == 0
    assert [line.kind for line in lines] == ["START", "STEP", "END"]
    assert lines[-1].steps == 1 and lines[-1].rewards == [lines[1].reward]
    assert f"env step 2 returned a non-finite reward ({reward})" in err
    assert "validation error" not in err and "Traceback" not in err
    (episode,) = sqlite_utils.Database(tmp_path / "traces.db")["episodes"].rows
    assert episode["status"] == "failed" and episode["steps"] == 1
    assert "non-finite reward" in episode["error"]


def test_done_that_is_not_a_boolean_is_an_env_error_not_the_end(tmp_path, capsys):
    with scripted_env({"done": "false"}) as env:
        code = run(config(tmp_path, env_base_url=env.url, max_steps=3))
    lines, err = log_of(capsys)
    assert code == 0 and [line.kind for line in lines] == ["START", "END"]
    assert "env step 1 returned done='false' (a str), not true or false" in err
    with scripted_env(reset={"done": "false"}) as env:
        code = run(config(tmp_path, env_base_url=env.url, max_steps=3))
    lines, err = log_of(capsys)
    assert code == 0 and [line.kind for line in lines] == ["START", "END"]
    assert "env reset returned done='false' (a str), not true or false" in err


@pytest.mark.parametrize("placeholder", ["e", "Step"])
def test_a_placeholder_key_too_short_to_be_a_secret_changes_nothing_and_is_named_once(
    tmp_path, capsys, monkeypatch, llm_server, placeholder
):
    from click.testing import CliRunner

    from tracer.cli import cli

    monkeypatch.setenv("HF_TOKEN", placeholder)  # HF_TOKEN=x, say: what a replay or a demo sets
    code = run(
        config(tmp_path, api_key=placeholder, api_base_url=llm_server.url + "/v1", max_steps=2)
    )
    out, err = capsys.readouterr()
    assert code == 0 and "[REDACTED]" not in out
    assert err.count("HF_TOKEN is shorter than 8 characters") == 1
    (call, _) = sqlite_utils.Database(tmp_path / "traces.db")["llm_calls"].rows
    messages = json.loads(call["request"])["messages"]
    assert "Reply with exactly" in messages[0]["content"]
    assert messages[1]["content"].startswith("Step: 1")
    exported = CliRunner().invoke(
        cli,
        ["export", "latest", "--db", str(tmp_path / "traces.db")],
        env={"HF_TOKEN": placeholder},
    )
    assert exported.exit_code == 0 and "[REDACTED]" not in exported.stdout


@pytest.mark.parametrize(
    "body, media_type, message",
    [
        (
            '{"id": "x", "object": "chat.completion", "choices": []}',
            "application/json",
            "the LLM answered with no choices",
        ),
        (
            "<html><body>Service starting</body></html>",
            "text/html",
            "the LLM's answer is not a chat completion: '<html><body>Service starting</body></html>'",
        ),
    ],
)
def test_an_answer_that_is_no_completion_ends_the_episode_with_a_clear_error(
    tmp_path, capsys, body, media_type, message
):
    from fastapi import FastAPI, Response

    from tracer.servers import BackgroundServer

    app = FastAPI()
    app.post("/v1/chat/completions")(lambda: Response(body, media_type=media_type))
    with BackgroundServer(app) as llm:
        code = run(config(tmp_path, api_key=SECRET, api_base_url=llm.url + "/v1", max_steps=2))
    lines, err = log_of(capsys)
    assert code == 0 and [line.kind for line in lines] == ["START", "END"]
    assert f"stopped: {message}" in err
    (episode,) = sqlite_utils.Database(tmp_path / "traces.db")["episodes"].rows
    assert episode["error"] == message


def test_a_hung_env_step_ends_the_episode_naming_the_step_and_the_wait(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr("tracer.agent.ENV_TIMEOUT_S", 0.3)
    with scripted_env(delay_s=1.5) as env:
        code = run(config(tmp_path, env_base_url=env.url, max_steps=2))
    lines, err = log_of(capsys)
    assert code == 0 and [line.kind for line in lines] == ["START", "END"]
    assert "stopped: env step 1 got no answer within 0.3 s" in err


def test_a_stream_cut_before_its_end_is_an_error_not_an_action(tmp_path, capsys):
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    from tracer.servers import BackgroundServer

    def cut():  # the connection drops after two chunks: no finish_reason, no [DONE]
        for piece in ("Half a", " sent"):
            chunk = {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
            }
            yield f"data: {json.dumps(chunk)}\n\n"

    app = FastAPI()
    app.post("/v1/chat/completions")(
        lambda: StreamingResponse(cut(), media_type="text/event-stream")
    )
    with BackgroundServer(app) as llm:
        code = run(
            config(tmp_path, api_key=SECRET, api_base_url=llm.url + "/v1", max_steps=2, stream=True)
        )
    lines, err = log_of(capsys)
    assert code == 0 and [line.kind for line in lines] == ["START", "END"]
    assert "stopped: the LLM's stream ended before its last chunk" in err
    (call,) = sqlite_utils.Database(tmp_path / "traces.db")["llm_calls"].rows
    assert call["error"] == "the stream ended before data: [DONE]"


def test_exports_of_an_observation_holding_nan_are_strict_json(tmp_path, capsys):
    from click.testing import CliRunner

    from tracer.cli import cli

    with scripted_env(
        {"observation": {"echoed_message": "x", "score": float("nan"), "best": float("inf")}}
    ) as env:
        assert run(config(tmp_path, env_base_url=env.url, max_steps=1)) == 0
    capsys.readouterr()

    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name}"))

    db = str(tmp_path / "traces.db")
    (record,) = [
        strict(line)
        for line in CliRunner().invoke(cli, ["export", "latest", "--db", db]).stdout.splitlines()
    ]
    assert record["steps"][0]["observation"]["score"] == "NaN"
    assert record["steps"][0]["observation"]["best"] == "Infinity"
    strict(CliRunner().invoke(cli, ["show", "latest", "--json", "--db", db]).stdout)


def test_unreachable_llm_still_gives_a_valid_log_and_a_clear_message(tmp_path, capsys):
    code = run(config(tmp_path, api_key=SECRET, api_base_url=f"http://127.0.0.1:{free_port()}/v1"))
    lines, err = log_of(capsys)
    assert code == 0  # the [END] was printed: a grader must not read this as a crash
    assert "1 of 1 episode(s) failed" in err and "TRACE_STRICT_EXIT=1" in err
    assert [line.kind for line in lines] == ["START", "END"]
    assert lines[-1].success is False and lines[-1].steps == 0
    assert "APIConnectionError" in err
    db = sqlite_utils.Database(tmp_path / "traces.db")
    assert db["llm_calls"].count == 3  # the first try and the client's two retries
    assert all(row["error"] for row in db["llm_calls"].rows)
    (episode,) = db["episodes"].rows
    assert episode["status"] == "failed" and "APIConnectionError" in episode["error"]
    (run_row,) = db["runs"].rows
    assert run_row["status"] == "failed" and run_row["exit_code"] == 0


def test_strict_exit_makes_a_failed_episode_exit_1(tmp_path, capsys):
    code = main(
        {
            "TRACE_STRICT_EXIT": "1",
            "TRACE_DB": str(tmp_path / "traces.db"),
            "HF_TOKEN": SECRET,
            "ENV_BASE_URL": f"http://127.0.0.1:{free_port()}",
        }
    )
    lines, err = log_of(capsys)
    assert code == 1 and [line.kind for line in lines] == ["START", "END"]
    assert "1 of 1 episode(s) failed (see above); exit code 1" in err
    (run_row,) = sqlite_utils.Database(tmp_path / "traces.db")["runs"].rows
    assert run_row["status"] == "failed" and run_row["exit_code"] == 1


def test_unreachable_env_still_gives_a_valid_log_for_every_task(tmp_path, capsys):
    code = run(config(tmp_path, env_base_url=f"http://127.0.0.1:{free_port()}", tasks=("a", "b")))
    lines, err = log_of(capsys)
    assert code == 0
    assert [(line.kind, getattr(line, "task", None)) for line in lines] == [
        ("START", "a"),
        ("END", None),
        ("START", "b"),
        ("END", None),
    ]
    assert "Failed to connect" in err


def test_env_url_runs_against_an_already_running_env(tmp_path, capsys, echo_env_server):
    code = run(config(tmp_path, env_base_url=echo_env_server.url, max_steps=2))
    lines, _ = log_of(capsys)
    assert code == 0 and lines[-1].steps == 2
    (run_row,) = sqlite_utils.Database(tmp_path / "traces.db")["runs"].rows
    assert json.loads(run_row["env_source"]) == {"kind": "url", "url": echo_env_server.url}


def test_streamed_completions_are_recorded_as_sent(tmp_path, capsys, llm_server):
    code = run(
        config(
            tmp_path, api_key=SECRET, api_base_url=llm_server.url + "/v1", max_steps=1, stream=True
        )
    )
    lines, _ = log_of(capsys)
    assert code == 0
    (call,) = sqlite_utils.Database(tmp_path / "traces.db")["llm_calls"].rows
    assert call["stream"] == 1 and call["response"].rstrip().endswith("data: [DONE]")
    assert lines[1].action.split()[0] in call["response"]


def test_trace_off_records_nothing(tmp_path, capsys):
    code = run(config(tmp_path, trace=False, max_steps=1))
    lines, _ = log_of(capsys)
    assert code == 0 and len(lines) == 3
    assert not (tmp_path / "traces.db").exists()


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("MAX_STEPS", "many", "MAX_STEPS: expected an integer"),
        ("MAX_STEPS", "0", "MAX_STEPS: must be at least 1"),
        ("TASKS", "a task", "TASKS: 'a task' contains whitespace"),
        ("TRACE", "maybe", "TRACE: expected on or off"),
        ("STREAM", "maybe", "STREAM: expected on or off"),
        ("TRACE_STRICT_EXIT", "maybe", "TRACE_STRICT_EXIT: expected on or off"),
        ("EMBEDDED_ENV", "chess", "EMBEDDED_ENV: expected one of echo, mcp-echo, got 'chess'"),
        ("TEMPERATURE", "nan", "TEMPERATURE: expected a finite number"),
        ("TEMPERATURE", "inf", "TEMPERATURE: expected a finite number"),
        ("MAX_TOKENS", "1" + "0" * 400, "MAX_TOKENS: must be at most 1,000,000"),
        (
            "TRACE_DB",
            ":memory:",
            (
                "TRACE_DB: ':memory:' is SQLite's in-memory database, which keeps "
                "nothing; give a file, or TRACE=off"
            ),
        ),
    ],
)
def test_configuration_errors_exit_2_naming_the_variable(variable, value, message, capsys):
    assert main({variable: value}) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err and "Traceback" not in err


def test_dotenv_in_the_working_directory_is_read(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        "os.environ",
        {
            k: v
            for k, v in os.environ.items()
            if k not in ("TASKS", "MAX_STEPS", "TRACE", "HF_TOKEN", "API_KEY")
        },
    )
    (tmp_path / ".env").write_text("TASKS=fromdotenv\nMAX_STEPS=1\nTRACE=off\n")
    assert main() == 0
    lines, _ = log_of(capsys)
    assert lines[0].task == "fromdotenv" and lines[-1].steps == 1
    assert not (tmp_path / "traces").exists()


def test_a_full_disk_on_stdout_stops_the_run_in_one_line(tmp_path, capsys, monkeypatch):
    with open("/dev/full", "w") as full:  # every write fails: No space left on device
        monkeypatch.setattr("sys.stdout", full)
        code = run(config(tmp_path, max_steps=2))
        monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 1 and "cannot write stdout (No space left on device)" in err
    db = sqlite_utils.Database(tmp_path / "traces.db")
    (run_row,) = db["runs"].rows
    assert run_row["status"] == "interrupted"
    assert db["lines"].count == 0  # `lines` holds what was printed: nothing was
    (episode,) = db["episodes"].rows
    assert episode["status"] == "interrupted" and episode["ended_at"]


class CheckedStdout:
    """A stdout that, as each [STEP] line is written, reads the database from a connection of
    its own (as another process would) to see whether that line is recorded already; it can
    also break, as a pipe whose reader went away, at a given [STEP]."""

    def __init__(self, db: Path, break_at_step: int | None = None):
        self.db, self.break_at_step = db, break_at_step
        self.written: list[str] = []
        self.recorded_first: list[bool] = []

    def write(self, text: str) -> int:
        if text.startswith("[STEP]"):
            if len(self.recorded_first) + 1 == self.break_at_step:
                raise BrokenPipeError(32, "Broken pipe")
            conn = sqlite3.connect(self.db)
            (found,) = conn.execute(
                "select count(*) from lines where line = ?", [text[:-1]]
            ).fetchone()
            conn.close()
            self.recorded_first.append(found == self.written.count(text) + 1)
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_each_step_line_is_printed_only_once_it_is_recorded(tmp_path, monkeypatch):
    stdout = CheckedStdout(tmp_path / "traces.db")
    monkeypatch.setattr("sys.stdout", stdout)
    code = run(config(tmp_path, tasks=("alpha", "beta"), max_steps=4))
    monkeypatch.undo()
    assert code == 0
    assert stdout.recorded_first == [True] * 8  # a kill -9 at any moment loses nothing printed
    db = sqlite_utils.Database(tmp_path / "traces.db")
    assert [r["line"] + "\n" for r in db.query("select line from lines order by id")] == (
        stdout.written
    )  # in the order printed: the [STEP]s of an episode between its [START] and [END]


def test_a_stdout_that_breaks_at_a_step_takes_no_env_step_after_it(tmp_path, monkeypatch):
    stdout = CheckedStdout(tmp_path / "traces.db", break_at_step=2)
    monkeypatch.setattr("sys.stdout", stdout)
    monkeypatch.setattr("tracer.runner.discard_stdout", lambda: None)  # stays ours to read
    code = run(config(tmp_path, tasks=("alpha",), max_steps=5))
    monkeypatch.undo()
    assert code == 1
    db = sqlite_utils.Database(tmp_path / "traces.db")
    printed = [r["line"] + "\n" for r in db.query("select line from lines order by id")]
    assert printed == stdout.written and len(printed) == 2  # [START], [STEP] 1: what was printed
    (episode,) = db["episodes"].rows
    assert episode["status"] == "interrupted"
    assert db["steps"].count == 2  # the step whose line broke was taken; none after it


def test_trace_db_that_cannot_be_written_is_a_configuration_error_too(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT, inference_env, unprivileged

    Store(tmp_path / "traces.db").close()
    (tmp_path / "traces.db").chmod(0o444)
    result = subprocess.run(
        unprivileged([sys.executable, str(ROOT / "inference.py")]),
        env=inference_env(tmp_path, MAX_STEPS="1"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert (
        f"configuration error: TRACE_DB={tmp_path / 'traces.db'}: cannot write (no "
        "permission to write the file)"
    ) in result.stderr


def test_trace_db_that_is_a_directory_is_a_configuration_error(tmp_path, capsys):
    assert main({"TRACE_DB": str(tmp_path)}) == 2
    out, err = capsys.readouterr()
    assert out == "" and "TRACE_DB" in err


def picky_env():
    """An env that reports ``last_action_error`` when the message has no 'ok' in it."""
    from openenv.core.env_server.http_server import create_app
    from pydantic import Field

    from tracer.echo_env import EchoAction, EchoEnvironment, EchoObservation
    from tracer.servers import BackgroundServer

    class PickyObservation(EchoObservation):
        last_action_error: str | None = Field(default=None)

    class Picky(EchoEnvironment):
        def step(self, action):
            obs = super().step(action)
            error = None if "ok" in action.message else "message must say ok\nplease"
            return PickyObservation(**obs.model_dump(), last_action_error=error)

    return BackgroundServer(create_app(Picky, EchoAction, PickyObservation), "picky env")


def test_error_field_carries_the_envs_last_action_error(tmp_path, capsys):
    with picky_env() as env:
        code = run(config(tmp_path, env_base_url=env.url, max_steps=2))
    lines, _ = log_of(capsys)
    assert code == 0
    assert lines[1].error == "message must say ok\\nplease"  # escaped, still one line
    (step, _) = sqlite_utils.Database(tmp_path / "traces.db")["steps"].rows
    assert step["error"] == "message must say ok\nplease"  # the database keeps it raw


def test_a_failed_llm_attempt_is_retried_recorded_and_replayed_the_same(tmp_path, capsys):
    from click.testing import CliRunner

    from tracer.cli import cli
    from tracer.servers import BackgroundServer
    from tracer.standin import create_standin_app

    with BackgroundServer(create_standin_app(fail_first=1)) as flaky_llm:
        code = run(
            config(tmp_path, api_key=SECRET, api_base_url=flaky_llm.url + "/v1", max_steps=2)
        )
    recorded, _ = capsys.readouterr()
    assert code == 0
    db = sqlite_utils.Database(tmp_path / "traces.db")
    assert [
        (c["step"], c["status_code"])
        for c in db.query("select step, status_code from llm_calls order by position")
    ] == [(1, 500), (1, 200), (2, 200)]
    result = CliRunner().invoke(
        cli, ["replay", "latest", "--offline", "--db", str(tmp_path / "traces.db")]
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == recorded


def test_the_prompt_is_the_same_under_openenv_and_openenv_core():
    # openenv 0.10 sends an observation's empty metadata; openenv-core 0.3 left it out. A run
    # recorded under one must replay under the other, so the prompt may not show it.
    from tracer.agent import user_prompt

    assert user_prompt(1, {"echoed_message": "hi", "metadata": {}}, 0.0, []) == user_prompt(
        1, {"echoed_message": "hi"}, 0.0, []
    )
    assert '"metadata": {"source": "x"}' in user_prompt(1, {"metadata": {"source": "x"}}, 0.0, [])


def test_a_run_against_an_env_url_does_not_load_openenvs_server_side(
    tmp_path, llm_server, echo_env_server
):
    # OpenEnv's package __init__ imports FastAPI and fastmcp (1.2 s of every start), which a run
    # that only talks to an env never uses.
    import subprocess
    import sys

    from tests.conftest import ROOT, inference_env

    probe = (
        "import runpy, sys\nsys.argv = ['inference.py']\ntry:\n"
        f"    runpy.run_path({str(ROOT / 'inference.py')!r}, run_name='__main__')\n"
        "finally:\n    print('loaded:', *sorted(m for m in ('fastmcp', 'mcp', 'fastapi')"
        " if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=inference_env(
            tmp_path,
            HF_TOKEN=SECRET,
            API_BASE_URL=llm_server.url + "/v1",
            ENV_BASE_URL=echo_env_server.url,
            MAX_STEPS="2",
        ),
    )
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()] == [
        "[START]",
        "[STEP]",
        "[STEP]",
        "[END]",
    ]
    assert done.stderr.splitlines()[-1] == "loaded:"


def test_each_step_is_one_transaction_holding_its_llm_call_step_and_line(
    tmp_path, capsys, monkeypatch
):
    # One commit per step (not one per row), and the line is in it: printed means committed.
    statements: list[str] = []
    connect = Store._connect

    def traced(self, writable):
        conn = connect(self, writable)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(Store, "_connect", traced)
    assert run(config(tmp_path, max_steps=3)) == 0
    lines, _ = log_of(capsys)
    transactions, current = [], []
    for sql in statements:
        if sql == "BEGIN IMMEDIATE":
            current = []
        elif sql == "COMMIT":
            transactions.append(current)
        else:
            current.append(sql.split("(")[0].split()[2] if sql.startswith("insert") else sql)
    steps = [t for t in transactions if "[steps]" in t]
    assert steps == [["[llm_calls]", "[steps]", "[lines]"]] * 3
    db = sqlite_utils.Database(tmp_path / "traces.db")
    assert [
        r["line"] for r in db.query("select line from lines where line like '[STEP]%' order by id")
    ] == [line.format() for line in lines[1:4]]
