"""tracer list, show, diff and stats: reading a trace database, as a user would."""

import json
import subprocess
import sys

import test_cli_fixtures
from test_cli_fixtures import record_run, run_cli

from tracer import cli as cli_module
from tracer.store import DEFAULT_DB, Store

db = test_cli_fixtures.db  # the shared fixture: two recorded runs


def ids(db_path):
    return [r["id"] for r in json.loads(run_cli(db_path, "list", "--json").stdout)]


def test_list_shows_runs_newest_first_with_totals_from_episodes(db):
    result = run_cli(db, "list")
    assert result.exit_code == 0
    header, newest, _ = result.stdout.splitlines()
    assert header.split() == ["ID", "STARTED", "TASKS", "MODEL", "EPISODES", "STEPS", "SCORE",
                              "STATUS"]
    assert newest.split()[3:] == ["echo,shout", "stand-in", "2", "4", "0.50", "completed"]
    runs = json.loads(run_cli(db, "list", "--json").stdout)
    assert [r["replay_of"] for r in runs] == [runs[1]["id"], None]
    assert runs[0]["tasks"] == ["echo", "shout"] and runs[0]["steps"] == 4


def test_list_limit_and_trace_db_from_the_environment(db):
    from click.testing import CliRunner

    result = CliRunner().invoke(cli_module.cli, ["list", "--json", "--limit", "1"],
                                env={"TRACE_DB": str(db)})
    assert result.exit_code == 0
    assert len(json.loads(result.stdout)) == 1


def test_a_run_whose_process_is_gone_is_listed_as_interrupted(tmp_path):
    store = Store(tmp_path / "t.db")
    run_id = record_run(store, finish=False)
    store.update_run(run_id, pid=2**22 + 12345)  # no such process
    assert json.loads(run_cli(tmp_path / "t.db", "list", "--json").stdout)[0]["status"] == \
        "interrupted"
    shown = json.loads(run_cli(tmp_path / "t.db", "show", run_id, "--json").stdout)
    assert shown["episodes"][0]["status"] == "interrupted"


def test_a_run_that_has_not_ended_counts_the_steps_it_recorded(tmp_path):
    db = tmp_path / "t.db"
    store = Store(db)
    record_run(store, ("echo",), ("hello", "big", "world"), finish=False)  # as if killed
    store.close()
    assert [r["steps"] for r in json.loads(run_cli(db, "list", "--json").stdout)] == [3]
    assert "steps 3" in run_cli(db, "show", "latest").stdout
    assert json.loads(run_cli(db, "stats", "--json").stdout)["tasks"][0]["steps"] == 3


def test_db_may_come_before_the_command_and_the_commands_own_wins(db, tmp_path):
    from click.testing import CliRunner

    def runs(*args, **env):
        result = CliRunner().invoke(cli_module.cli, args, env=env)
        assert result.exit_code == 0, result.stderr
        return len(json.loads(result.stdout))

    elsewhere = str(tmp_path / "nope.db")
    assert runs("--db", str(db), "list", "--json") == 2
    assert runs("--db", elsewhere, "list", "--json", "--db", str(db)) == 2
    assert runs("--db", str(db), "list", "--json", TRACE_DB=elsewhere) == 2


def test_show_prints_each_step_with_prompt_completion_action_and_tokens(db):
    result = run_cli(db, "show", "latest")
    assert result.exit_code == 0
    text = result.stdout
    assert "episode 2  task shout  completed  success true  steps 2  score 0.50" in text
    assert "  step 2  reward 0.50  done true  error -  env 4.0 ms" in text
    assert "    prompt      Step 2: say a word" in text
    assert "    completion  there" in text
    assert "    action      there" in text
    assert "    llm         102.0 ms  tokens 22+3" in text


def test_show_json_has_every_step_and_the_llm_call_that_chose_it(db):
    shown = json.loads(run_cli(db, "show", "latest", "--json").stdout)
    step = shown["episodes"][0]["steps"][1]
    assert step["action"] == {"message": "there"} and step["done"] is True
    assert step["llm_calls"] == [{
        "position": 2, "step": 2, "prompt": "Step 2: say a word", "completion": "there",
        "prompt_tokens": 22, "completion_tokens": 3, "latency_ms": 102.0, "status_code": 200,
        "error": None,
    }]


def test_show_reads_streamed_completions(tmp_path):
    store = Store(tmp_path / "t.db")
    record_run(store, stream=True)
    call = json.loads(run_cli(tmp_path / "t.db", "show", "latest", "--json").stdout)[
        "episodes"][0]["steps"][0]["llm_calls"][0]
    assert (call["completion"], call["prompt_tokens"], call["completion_tokens"]) == \
        ("hello", 30, 4)


def test_ids_accept_unique_prefixes_and_latest(db):
    newest, oldest = ids(db)
    assert json.loads(run_cli(db, "show", oldest[:-3], "--json").stdout)["id"] == oldest
    assert json.loads(run_cli(db, "show", "latest", "--json").stdout)["id"] == newest


def test_an_unknown_id_is_one_line_naming_it_and_exit_2(db):
    result = run_cli(db, "show", "nosuchrun")
    assert result.exit_code == 2
    assert result.stderr == f"Error: {db}: no run 'nosuchrun'\n"


def test_an_ambiguous_prefix_names_the_candidates_and_exits_2(db):
    newest, oldest = ids(db)
    prefix = newest[: next(i for i, (a, b) in enumerate(zip(newest, oldest)) if a != b)]
    result = run_cli(db, "show", prefix)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert f"run id '{prefix}' is ambiguous" in result.stderr
    assert newest in result.stderr and oldest in result.stderr


def test_diff_finds_the_first_divergent_step_and_exits_1(db):
    newest, oldest = ids(db)
    result = run_cli(db, "diff", oldest, newest)
    assert result.exit_code == 1
    assert "first difference: episode 1 step 2: action_text, observation" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("1   2"))
    assert row.split() == ["1", "2", "world", "there", "0.50", "0.50", "true", "true",
                           "action_text,observation"]


def test_diff_of_a_replay_defaults_to_its_original(db):
    newest, oldest = ids(db)
    result = json.loads(run_cli(db, "diff", newest, "--json").stdout)
    assert (result["a"], result["b"], result["same"]) == (newest, oldest, False)
    assert result["first_difference"]["differs"] == ["action_text", "observation"]


def test_diff_of_identical_runs_exits_0(tmp_path):
    store = Store(tmp_path / "t.db")
    a, b = record_run(store), record_run(store)
    result = run_cli(tmp_path / "t.db", "diff", a, b)
    assert result.exit_code == 0
    assert result.stdout.endswith("same: 2 step(s) compared\n")


def test_diff_reports_steps_one_run_does_not_have(tmp_path):
    store = Store(tmp_path / "t.db")
    a, b = record_run(store, messages=("a", "b", "c")), record_run(store, messages=("a", "b"))
    result = json.loads(run_cli(tmp_path / "t.db", "diff", a, b, "--json").stdout)
    assert result["first_difference"]["step"] == 2  # done differs before the missing step
    assert result["steps"][-1]["b"] is None and result["steps"][-1]["differs"] == ["missing"]


def test_stats_counts_tokens_latency_and_outcomes_per_task(db):
    data = json.loads(run_cli(db, "stats", "--json").stdout)
    assert {k: data[k] for k in ("runs", "episodes", "steps", "llm_calls")} == \
        {"runs": 2, "episodes": 4, "steps": 8, "llm_calls": 8}
    assert data["tokens"] == {"prompt": 4 * (21 + 22), "completion": 8 * 3, "total": 196}
    assert data["latency_ms"]["llm_call"] == {"count": 8, "p50": 101.0, "p90": 102.0,
                                              "p99": 102.0}
    assert data["latency_ms"]["env_step"]["p50"] == 3.0
    assert [(t["task"], t["episodes"], t["mean_score"]) for t in data["tasks"]] == \
        [("echo", 2, 0.5), ("shout", 2, 0.5)]
    text = run_cli(db, "stats").stdout
    assert "tokens  prompt 172  completion 24  total 196" in text


def test_the_cli_default_database_is_the_store_default():
    assert cli_module.DEFAULT_DB == DEFAULT_DB


def test_importing_the_cli_loads_no_heavy_module():
    code = ("import tracer.cli, sys; "
            "assert not any(m in sys.modules for m in ('openai','openenv','jsonschema','httpx'))")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_list_loads_no_heavy_module(db):
    code = ("import sys; from tracer.cli import cli; "
            f"sys.argv = ['tracer', 'list', '--db', {str(db)!r}]\n"
            "try:\n    cli()\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('openai','openenv','jsonschema','httpx','pandas','numpy') "
            "if m in sys.modules]\nassert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
