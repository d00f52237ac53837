"""`tracer replay` of runs recorded by `tracer run`: the same scripts, no LLM, byte for byte."""

from __future__ import annotations

import shutil
import sys

import pytest

from tests.test_command_run import SCRIPTS, db_rows, script, tracer_run
from tracer.cli import cli

SEED_LIKE_RUN_ARGS = ("--", sys.executable, "seed_like.py")


def replay(tmp_path, *args, env=None):
    from click.testing import CliRunner

    return CliRunner().invoke(
        cli,
        ["--db", str(tmp_path / "t.db"), "replay", *args],
        env={
            "HF_TOKEN": None,
            "API_KEY": None,
            "OPENAI_API_KEY": None,
            "API_BASE_URL": None,
            **(env or {}),
        },
        catch_exceptions=False,
    )


def echo_env(scale: float = 1.0):
    """The bundled echo env served on 127.0.0.1, its rewards multiplied by ``scale``."""
    from openenv.core.env_server.http_server import create_app

    from tracer.echo_env import EchoAction, EchoEnvironment, EchoObservation
    from tracer.servers import BackgroundServer

    class Scaled(EchoEnvironment):
        def step(self, action):
            observation = super().step(action)
            observation.reward = observation.reward * scale
            return observation

    return BackgroundServer(create_app(Scaled, EchoAction, EchoObservation, env_name="echo"))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Record the test scripts once (an LLM server and an env server that then stop)."""
    from tracer.servers import BackgroundServer
    from tracer.standin import create_standin_app

    tmp_path = tmp_path_factory.mktemp("recorded")
    shutil.copy(SCRIPTS / "seed_like.py", tmp_path)
    runs = {}
    with BackgroundServer(create_standin_app()) as llm, echo_env() as env:
        upstream = {"API_BASE_URL": llm.url + "/v1", "HF_TOKEN": "hf_recording_key_123"}
        for name in ("seed_like.py", "async_two_calls.py", "streaming.py", "debug_lines.py"):
            where = ["--env-url", env.url] if name == "seed_like.py" else []
            argv = (
                ["--", sys.executable, name]
                if name == "seed_like.py"
                else ["--", sys.executable, str(SCRIPTS / name)]
            )
            result = tracer_run(tmp_path, *where, *argv, env={**upstream, "API_KEY": "k" * 12})
            assert result.exit_code == 0, result.stderr
            (run_id,) = db_rows(tmp_path, "select id from runs order by started_at desc limit 1")[0]
            runs[name] = (run_id, result.stdout_bytes)
        env_url = env.url
    return tmp_path, runs, env_url


@pytest.mark.parametrize("name", ["async_two_calls.py", "streaming.py", "debug_lines.py"])
def test_a_recorded_script_replays_byte_for_byte_with_the_llm_gone(recorded, name):
    tmp_path, runs, _ = recorded
    run_id, stdout = runs[name]
    result = replay(tmp_path, run_id)
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == stdout
    assert f"replay of {run_id}: " in result.stderr and "no divergence" in result.stderr
    (new_run, replay_of) = db_rows(
        tmp_path, "select id, replay_of from runs order by started_at desc limit 1"
    )[0]
    assert replay_of == run_id

    def answers(run):  # the replay records each call it answered, as the recording has it
        return sorted(
            db_rows(
                tmp_path,
                "select status_code, stream, response from llm_calls where run_id = ?",
                (run,),
            )
        )

    assert answers(new_run) == answers(run_id) != []


def test_recorded_scripts_replay_in_two_workers_with_no_traceback(recorded, tmp_path):
    # A worker's stdout is the process's own (a command's is not sent back through the
    # driver): run as a process, the lines come out, in the order the workers print them.
    import os
    import subprocess

    source, _, _ = recorded
    out = {}
    for workers in ("1", "2"):
        db = tmp_path / f"w{workers}.db"
        shutil.copy(source / "t.db", db)
        argv = ["--db", str(db), "replay", "--all", "--offline", "--workers", workers]
        out[workers] = subprocess.run(
            [sys.executable, "-m", "tracer.cli", *argv],
            check=False,
            capture_output=True,
            env={k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "API_KEY")},
            timeout=120,
        )
    assert out["2"].returncode == out["1"].returncode == 0, out["2"].stderr
    assert b"Traceback" not in out["2"].stderr
    assert sorted(out["2"].stdout.splitlines()) == sorted(out["1"].stdout.splitlines())


def test_a_seed_like_script_replays_live_and_offline(recorded):
    tmp_path, runs, env_url = recorded
    run_id, stdout = runs["seed_like.py"]
    with echo_env() as env:  # the env is up again, at another address
        live = replay(tmp_path, run_id, "--env-url", env.url, "--no-record")
    assert live.exit_code == 0, live.stderr
    assert live.stdout_bytes == stdout
    offline = replay(tmp_path, run_id, "--offline", "--no-record")  # no LLM, no env
    assert offline.exit_code == 0, offline.stderr
    assert offline.stdout_bytes == stdout
    gone = replay(tmp_path, run_id, "--no-record")  # the recorded env is down: an error
    assert gone.exit_code == 2
    assert f"Error: the env at {env_url} could not be reached" in gone.stderr


def test_a_changed_env_diverges_at_the_first_step_whose_reward_changed(recorded):
    tmp_path, runs, _ = recorded
    run_id, _ = runs["seed_like.py"]
    with echo_env(scale=2.0) as env:
        result = replay(tmp_path, run_id, "--env-url", env.url, "--no-record")
    assert result.exit_code == 1
    (recorded,) = db_rows(
        tmp_path,
        "select reward from steps s join episodes e on "
        "e.id = s.episode_id where e.run_id = ? and s.step = 1 "
        "and e.position = 1",
        [run_id],
    )[0]
    assert (
        f"replay of {run_id} diverged: episode 1 (alpha): step 1: reward {recorded:.2f} -> "
        f"{2 * recorded:.2f}"
    ) in result.stderr.splitlines()
    assert "[STEP] step=1" in result.stdout


def test_a_script_edited_to_change_its_prompt_diverges_naming_the_field(recorded):
    tmp_path, runs, _ = recorded
    run_id, _ = runs["seed_like.py"]
    script = tmp_path / "seed_like.py"
    original = script.read_text()
    script.write_text(original.replace("Send a short message.", "Send a long message."))
    try:
        result = replay(tmp_path, run_id, "--offline", "--no-record")
    finally:
        script.write_text(original)
    assert result.exit_code == 1
    assert "step 1: LLM request #1 differs from the recording:" in result.stderr
    assert (
        "messages[0].content: at character 8: 'Send a short message.' -> "
        "'Send a long message.'" in result.stderr
    )
    lenient = replay(
        tmp_path, run_id, "--offline", "--no-record", "--lenient", env={"PROMPT": "Say more."}
    )
    assert lenient.exit_code == 1 and "[STEP] step=3" in lenient.stdout  # went on by position


def test_bad_replays_are_one_line_and_write_nothing(recorded, tmp_path):
    from tracer.store import Store

    db, runs, _ = recorded
    run_id, _ = runs["seed_like.py"]
    shutil.copy(db / "t.db", tmp_path / "t.db")
    before = db_rows(tmp_path, "select count(*) from runs")
    elsewhere = replay(tmp_path, run_id, "--cwd", str(tmp_path), "--offline")
    assert elsewhere.exit_code == 2
    assert f"the recorded script seed_like.py is not in {tmp_path}" in elsewhere.stderr
    gone = replay(tmp_path, run_id, "--cwd", str(tmp_path / "gone"), "--offline")
    assert gone.exit_code == 2 and "working directory" in gone.stderr

    store = Store(tmp_path / "t.db")  # a command run with no LLM call
    store.start_run(id="nollm", kind="command", command=["true"], cwd=str(tmp_path))
    store.close()
    nothing = replay(tmp_path, "nollm")
    assert nothing.exit_code == 2 and "has no recorded LLM calls to replay" in nothing.stderr
    assert db_rows(tmp_path, "select count(*) from runs") == [(before[0][0] + 1,)]
    assert "Traceback" not in elsewhere.stderr + gone.stderr + nothing.stderr


def test_an_exported_command_run_imports_elsewhere_and_replays_offline(recorded, tmp_path):
    from click.testing import CliRunner

    db, runs, _ = recorded
    run_id, stdout = runs["seed_like.py"]
    exported = tmp_path / "run.jsonl"
    runner = CliRunner()
    assert (
        runner.invoke(
            cli, ["--db", str(db / "t.db"), "export", run_id, "-o", str(exported)]
        ).exit_code
        == 0
    )
    imported = runner.invoke(cli, ["--db", str(tmp_path / "t.db"), "import", str(exported)])
    assert imported.exit_code == 0, imported.output
    result = replay(tmp_path, run_id, "--offline", "--no-record", "--cwd", str(db))
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == stdout


def test_seed_makes_an_unseeded_random_env_replay_identically(tmp_path):
    argv = ["--", sys.executable, str(SCRIPTS / "random_env.py")]
    seeded = tracer_run(tmp_path, "--seed", "7", *argv)
    unseeded = tracer_run(tmp_path, *argv)
    assert seeded.exit_code == unseeded.exit_code == 0
    (seeded_id,), (unseeded_id,) = db_rows(tmp_path, "select id from runs order by started_at")
    again = replay(tmp_path, seeded_id, "--no-record")
    assert again.exit_code == 0, again.stderr
    assert again.stdout_bytes == seeded.stdout_bytes
    drifted = replay(tmp_path, unseeded_id, "--no-record")
    assert drifted.exit_code == 1
    assert f"replay of {unseeded_id} diverged: episode 1 (dice): step 1: reward " in drifted.stderr


def test_a_replay_sets_the_recorded_settings_again(tmp_path):
    argv = ["--", sys.executable, str(SCRIPTS / "async_two_calls.py")]
    recorded = tracer_run(tmp_path, *argv, env={"MODEL_NAME": "grader-model"})
    assert recorded.exit_code == 0
    (run_id,) = db_rows(tmp_path, "select id from runs")[0]
    unset = replay(tmp_path, run_id, "--no-record", env={"MODEL_NAME": None})
    assert unset.exit_code == 0, unset.stderr
    other = replay(tmp_path, run_id, "--no-record", env={"MODEL_NAME": "another"})
    assert other.exit_code == 0, other.stderr
    assert "MODEL_NAME: the recorded value 'grader-model' is used, not 'another'" in other.stderr


def test_a_live_replay_needs_no_openenv_schema_from_a_teams_env_server(tmp_path):
    from tests.test_command_run import a_plain_http_env

    with a_plain_http_env() as env:
        recorded = tracer_run(
            tmp_path, "--env-url", env.url, "--", sys.executable, str(SCRIPTS / "http_env.py")
        )
        assert recorded.exit_code == 0
        (run_id,) = db_rows(tmp_path, "select id from runs")[0]
        live = replay(tmp_path, run_id, "--no-record")
    assert live.exit_code == 0, live.stderr
    assert live.stdout_bytes == recorded.stdout_bytes
    offline = replay(tmp_path, run_id, "--no-record", "--offline")
    assert offline.exit_code == 0, offline.stderr
    assert offline.stdout_bytes == recorded.stdout_bytes


def test_a_live_replay_of_an_offline_replay_reaches_the_env_the_origin_recorded(
    tmp_path, llm_server
):
    from click.testing import CliRunner

    shutil.copy(SCRIPTS / "seed_like.py", tmp_path)
    upstream = {"API_BASE_URL": llm_server.url + "/v1", "TASKS": "alpha", "MAX_STEPS": "2"}
    with echo_env() as env:
        recorded = tracer_run(tmp_path, "--env-url", env.url, *SEED_LIKE_RUN_ARGS, env=upstream)
        assert recorded.exit_code == 0, recorded.stderr
        (origin,) = db_rows(tmp_path, "select id from runs")[0]
        offline = replay(tmp_path, "latest", "--offline")
        assert offline.exit_code == 0, offline.stderr
        live = replay(tmp_path, "latest")  # the offline replay: it has no env URL of its own
        assert live.exit_code == 0, live.stderr
        assert live.stdout_bytes == recorded.stdout_bytes
    (offline_id,) = db_rows(tmp_path, "select id from runs where replay_of = ?", (origin,))[0]
    (env_url, replay_of) = db_rows(
        tmp_path, "select env_url, replay_of from runs order by started_at desc limit 1"
    )[0]
    assert (env_url, replay_of) == (env.url, offline_id)  # the replay, replayed live
    # Without the origin (the replay alone exported and imported elsewhere): one line, exit 2.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    runner = CliRunner()
    assert (
        runner.invoke(
            cli,
            ["--db", str(tmp_path / "t.db"), "export", offline_id, "-o", str(tmp_path / "r.jsonl")],
        ).exit_code
        == 0
    )
    assert (
        runner.invoke(
            cli, ["--db", str(elsewhere / "t.db"), "import", str(tmp_path / "r.jsonl")]
        ).exit_code
        == 0
    )
    alone = replay(elsewhere, offline_id, "--cwd", str(tmp_path))
    assert alone.exit_code == 2
    assert alone.stderr == (
        f"Error: {elsewhere / 't.db'}: run {offline_id}: is an offline "
        f"replay of run {origin}, which is not in this database to say "
        "where its env was: give --env-url URL (or replay --offline)\n"
    )
    assert (
        replay(elsewhere, offline_id, "--cwd", str(tmp_path), "--offline", "--no-record").exit_code
        == 0
    )


def test_a_line_only_one_log_has_is_named_in_the_note(recorded, tmp_path):
    import sqlite3

    db, runs, _ = recorded
    run_id, _ = runs["debug_lines.py"]
    source, copy = sqlite3.connect(db / "t.db"), sqlite3.connect(tmp_path / "t.db")
    source.backup(copy)  # the WAL too: other tests of the module write replays into it
    source.close()
    with copy:  # the recording lost its last line
        copy.execute("delete from lines where run_id = ? and line = 'Done.'", (run_id,))
    copy.close()
    result = replay(tmp_path, run_id, "--no-record")
    assert result.exit_code == 0, result.stderr  # not a protocol line: a note
    assert (
        "  note: other stdout lines differ (not protocol lines: a note, not a divergence): "
        "#4: (missing) -> 'Done.'\n"
    ) in result.stderr, result.stderr


def test_protocol_lines_behind_a_logging_prefix_are_compared_on_replay(tmp_path):
    shutil.copy(SCRIPTS / "logged_lines.py", tmp_path)
    recorded = tracer_run(tmp_path, "--", sys.executable, "logged_lines.py")
    assert recorded.exit_code == 0, recorded.stderr
    (run_id,) = db_rows(tmp_path, "select id from runs")[0]
    same = replay(tmp_path, run_id, "--no-record")
    assert same.exit_code == 0, same.stderr
    assert f"replay of {run_id}: 1 episode(s), 2 step(s), no divergence" in same.stderr
    script = tmp_path / "logged_lines.py"
    script.write_text(script.read_text().replace("reward=0.50 done", "reward=1.00 done"))
    changed = replay(tmp_path, run_id, "--no-record")
    assert changed.exit_code == 1
    assert (
        f"replay of {run_id} diverged: episode 1 (logged): step 1: reward 0.50 -> 1.00"
        in changed.stderr.splitlines()
    )


def test_an_env_request_is_recorded_and_answered_offline_with_its_query_string(tmp_path):
    from tests.test_command_run import a_plain_http_env

    shutil.copy(SCRIPTS / "query_env.py", tmp_path)
    with a_plain_http_env() as env:
        recorded = tracer_run(tmp_path, "--env-url", env.url, "--", sys.executable, "query_env.py")
    assert recorded.exit_code == 0, recorded.stderr
    assert db_rows(
        tmp_path, "select path from env_messages where method = 'POST' order by position"
    ) == [("/reset?task=alpha",), ("/step",), ("/reset?task=beta",), ("/step",)]
    (run_id,) = db_rows(tmp_path, "select id from runs")[0]
    script = tmp_path / "query_env.py"
    script.write_text(script.read_text().replace('("alpha", "beta")', '("beta", "alpha")'))
    swapped = replay(tmp_path, run_id, "--offline", "--no-record", "--lenient")
    assert "[STEP] step=1 action=beta ready " in swapped.stdout  # beta's own reset answered


def test_a_request_that_differs_is_named_by_the_step_it_was_made_at(tmp_path):
    shutil.copy(SCRIPTS / "debug_lines.py", tmp_path)
    recorded = tracer_run(tmp_path, "--", sys.executable, "debug_lines.py")
    assert recorded.exit_code == 0, recorded.stderr
    (run_id,) = db_rows(tmp_path, "select id from runs")[0]
    script = tmp_path / "debug_lines.py"  # step 1 now asks what step 2 asked, and so does step 2
    script.write_text(script.read_text().replace('"content": str(step)', '"content": "2"'))
    result = replay(tmp_path, run_id, "--no-record")
    assert result.exit_code == 1
    assert (
        "step 2: LLM request #2 differs from the recording (the closest recorded request is "
        "step 1's):" in result.stderr
    )
    assert "messages[0].content: at character 1: '1' -> '2'" in result.stderr


def test_a_replay_that_stops_early_names_the_first_line_it_did_not_print(tmp_path):
    shutil.copy(SCRIPTS / "debug_lines.py", tmp_path)
    recorded = tracer_run(tmp_path, "--", sys.executable, "debug_lines.py")
    assert recorded.exit_code == 0, recorded.stderr
    (run_id,) = db_rows(tmp_path, "select id from runs")[0]
    script = tmp_path / "debug_lines.py"  # step 2 asks something new: the script stops there
    script.write_text(
        script.read_text().replace(
            '"content": str(step)', '"content": str(step if step == 1 else 9)'
        )
    )
    result = replay(tmp_path, run_id, "--no-record")
    assert result.exit_code == 1
    (debug_2,) = [line for line in recorded.stdout.splitlines() if line.startswith("[DEBUG]")][1:]
    assert (
        f"other stdout lines differ (not protocol lines: a note, not a divergence): "
        f"#3: {debug_2!r} -> (missing)"
    ) in result.stderr


def test_an_episode_printed_without_task_is_named_as_the_recording_names_it(tmp_path):
    shutil.copy(SCRIPTS / "bare_tags.py", tmp_path)
    recorded = tracer_run(tmp_path, "--", sys.executable, "bare_tags.py")
    assert recorded.exit_code == 0, recorded.stderr
    (run_id,) = db_rows(tmp_path, "select id from runs")[0]
    script = tmp_path / "bare_tags.py"
    script.write_text(script.read_text().replace('print("[END]"', 'print("[STEP]")\nprint("[END]"'))
    result = replay(tmp_path, run_id, "--no-record")
    assert result.exit_code == 1
    assert "  episode 1 (?): diverged, 2 steps recorded, 3 replayed" in result.stderr


def test_a_script_that_lists_the_models_first_is_answered_by_the_stand_in_and_replays(tmp_path):
    recorded = tracer_run(tmp_path, "--", *script("lists_models.py"))  # no upstream, no key
    assert recorded.exit_code == 0, recorded.stderr
    assert "[START] task=models env=demo model=openenv-tracer-stand-in" in recorded.stdout
    assert "ok    llm failures: 0 of 2 exchange(s) failed" in recorded.stderr
    (run_id,) = db_rows(tmp_path, "select id from runs")[0]
    offline = replay(tmp_path, run_id, "--offline", "--no-record")
    assert offline.exit_code == 0, offline.stderr
    assert offline.stdout_bytes == recorded.stdout_bytes
