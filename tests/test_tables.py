"""The table description in tracer/tables.py: what the recorder writes reads back as written."""

from __future__ import annotations

import contextlib
import io
import json

from click.testing import CliRunner

from tests.conftest import scripted_env
from tracer.cli import cli
from tracer.config import Config
from tracer.runner import run


def tracer(db, *args: str):
    return CliRunner().invoke(cli, [*args, "--db", str(db)])


def test_an_observation_that_is_a_plain_string_reads_back_as_that_string(tmp_path):
    db = tmp_path / "traces.db"
    with scripted_env({"observation": "plain text"}, {"observation": 7}) as env, \
            contextlib.redirect_stdout(io.StringIO()):
        assert run(Config(trace_db=str(db), env_base_url=env.url, max_steps=2)) == 0
    shown = tracer(db, "show", "latest", "--json")
    assert shown.exit_code == 0, shown.stderr
    steps = json.loads(shown.stdout)["episodes"][0]["steps"]
    assert [s["observation"] for s in steps] == ["plain text", 7]
    exported = tracer(db, "export", "latest")
    assert exported.exit_code == 0, exported.stderr
    assert [s["observation"] for s in json.loads(exported.stdout)["steps"]] == ["plain text", 7]
