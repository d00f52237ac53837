"""tracer replay --all --workers N: the same replay as one process, in N processes."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
import sqlite_utils

from tests.conftest import free_port
from tests.test_cli_fixtures import snapshot
from tests.test_replay import record, replay


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    """Three recorded runs; the third's second LLM request was changed, so it diverges."""
    tmp = tmp_path_factory.mktemp("recordings")
    for tasks in (("alpha",), ("beta", "gamma"), ("delta",)):
        record(tmp, tasks=tasks)
    db = tmp / "traces.db"
    with sqlite3.connect(db) as conn:
        (third,) = conn.execute(
            "select id from runs order by started_at limit 1 offset 2"
        ).fetchone()
        conn.execute(
            "update llm_calls set request = replace(request, 'Step: 2', 'Step: two'), "
            "request_hash = 'changed' where run_id = ? and position = 2",
            [third],
        )
    conn.close()
    return db


def copy(db: Path, tmp_path: Path, name: str) -> str:
    shutil.copy(db, tmp_path / name)
    return str(tmp_path / name)


def summary(stderr: str) -> list[str]:
    """The per-run verdicts and the total, without the progress bar."""
    return [line for line in stderr.splitlines() if not line.startswith("replaying")]


def replays(db: str) -> list[tuple[str, str]]:
    """Each replay run's recorded stdout lines, by the run it replayed."""
    database = sqlite_utils.Database(db)
    return sorted(
        (r["replay_of"], r["log"])
        for r in database.query(
            "select runs.replay_of, group_concat(line, char(10)) as log from runs join lines "
            "on lines.run_id = runs.id where replay_of is not null group by runs.id order by lines.id"
        )
    )


def recorded_ids(db: str) -> list[str]:
    """The recorded runs' ids, oldest first."""
    return [
        r["id"] for r in sqlite_utils.Database(db).query("select id from runs order by started_at")
    ]


def test_two_workers_replay_as_one_process_does(recordings, tmp_path):
    one, two = copy(recordings, tmp_path, "one.db"), copy(recordings, tmp_path, "two.db")
    single = replay(one, "--all", "--offline", "--workers", "1")
    double = replay(two, "--all", "--offline", "--workers", "2")
    assert single.exit_code == double.exit_code == 1, double.output
    assert double.stdout == single.stdout and single.stdout.count("[END]") == 4
    assert summary(double.stderr) == summary(single.stderr)
    assert summary(double.stderr)[-1] == (
        "3 run(s) replayed, 1 diverged (LLM calls answered "
        "from the recording, not through the openai client)"
    )
    assert replays(two) == replays(one) and len(replays(two)) == 3
    assert not [name for name in os.listdir(tmp_path) if ".shards-" in name]  # merged, gone


def test_a_worker_that_dies_fails_its_run_only(recordings, tmp_path, monkeypatch):
    import tracer.replay

    db = copy(recordings, tmp_path, "traces.db")
    victim = (
        sqlite_utils.Database(db)
        .execute("select id from runs order by started_at limit 1 offset 1")
        .fetchone()[0]
    )
    real = tracer.replay.replay_run

    def dies_on_the_victim(store, run_id, **options):
        if run_id == victim:
            os._exit(3)  # the worker process dies mid-run, as with an OOM kill or a segfault
        return real(store, run_id, **options)

    monkeypatch.setattr(tracer.replay, "replay_run", dies_on_the_victim)
    result = replay(db, "--all", "--offline", "--workers", "2")
    assert result.exit_code == 2, result.output
    lines = summary(result.stderr)
    assert f"{victim}    - episode(s)  FAILED: its worker process died (exit code 3)" in lines
    assert lines[-1].startswith("3 run(s) replayed, 1 diverged, 1 failed")
    assert result.stdout.count("[END]") == 2  # the other runs' episodes, in order
    assert len(replays(db)) == 2


def test_a_ray_replay_on_a_local_instance_gives_the_same_verdicts(recordings, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'openenv-tracer[ray]'")
    one, ray = copy(recordings, tmp_path, "one.db"), copy(recordings, tmp_path, "ray.db")
    single = replay(one, "--all", "--offline", "--workers", "1")
    on_ray = replay(ray, "--all", "--offline", "--ray", "--workers", "2")
    assert on_ray.exit_code == single.exit_code == 1, on_ray.output
    assert on_ray.stdout == single.stdout
    assert summary(on_ray.stderr) == summary(single.stderr)
    assert replays(ray) == replays(one)


def test_an_unreachable_ray_address_is_one_line(recordings, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'openenv-tracer[ray]'")
    db = copy(recordings, tmp_path, "traces.db")
    address = f"127.0.0.1:{free_port()}"
    result = replay(db, "--all", "--offline", "--ray", address)
    assert result.exit_code == 2
    assert (
        result.stderr == f"Error: the Ray cluster at {address} could not be reached "
        "(Connection refused)\n"
    )


def test_ray_not_installed_says_how_to_install_it(recordings, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as without the extra
    db = copy(recordings, tmp_path, "traces.db")
    before = snapshot(Path(db))
    result = replay(db, "--all", "--offline", "--ray")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: --ray needs Ray, which is not installed: pip install 'openenv-tracer[ray]'\n"
    )
    assert snapshot(Path(db)) == before


def test_an_interrupt_stops_the_workers_and_keeps_what_finished(recordings, tmp_path):
    from tracer.queries import open_store, show_run
    from tracer.workers import Options, replay_in_workers

    db = copy(recordings, tmp_path, "traces.db")
    ids = recorded_ids(db)

    seen = []

    def ctrl_c_after_the_first_run(result):
        seen.append(result)
        if len(seen) == 1:  # Ctrl-C in the driver as it counts a run, the other worker busy
            os.kill(os.getpid(), signal.SIGINT)

    results, interrupted = replay_in_workers(
        db, ids, 2, Options(offline=True), on_result=ctrl_c_after_the_first_run
    )
    assert interrupted
    assert ids[2] not in [r.run_id for r in results]  # never handed out
    assert seen[0].report is not None and seen[0] in results  # the run it came on counts
    database = sqlite_utils.Database(db)
    store = open_store(db)  # as list and show see them: a run whose worker is gone ended
    shown = [
        show_run(store, r["id"])
        for r in database.query("select id from runs where replay_of is not null")
    ]
    store.close()
    assert ids[2] not in [run["replay_of"] for run in shown] and 1 <= len(shown) <= 2
    for run in shown:
        assert run["status"] in ("completed", "failed", "interrupted")
        assert {e["status"] for e in run["episodes"]} <= {"completed", "failed", "interrupted"}
    assert not [name for name in os.listdir(tmp_path) if ".shards-" in name]


class CtrlCAsRead:
    """Pickled by a worker, it sends the driver SIGINT while the driver reads the answer:
    a Ctrl-C that lands as a worker's result is being taken in."""

    def __init__(self, driver: int):
        self.driver = driver

    def __reduce__(self):
        return (os.kill, (self.driver, signal.SIGINT))


def test_a_ctrl_c_as_a_result_is_read_still_counts_that_run(recordings, tmp_path, monkeypatch):
    import tracer.workers
    from tracer.workers import Options, replay_in_workers

    db = copy(recordings, tmp_path, "traces.db")
    ids = recorded_ids(db)
    real, driver = tracer.workers.replay_one, os.getpid()

    def answer_with_a_ctrl_c(source, shard, run_id, options):
        result = real(source, shard, run_id, options)
        if run_id == ids[0]:
            result.notes = CtrlCAsRead(driver)  # read back as None, with a SIGINT
        return result

    monkeypatch.setattr(tracer.workers, "replay_one", answer_with_a_ctrl_c)  # forked as is
    results, interrupted = replay_in_workers(db, ids, 2, Options(offline=True))
    assert interrupted
    assert results[0].run_id == ids[0] and results[0].report is not None  # not lost
    assert ids[0] in [replay_of for replay_of, _ in replays(db)]
    assert ids[2] not in [r.run_id for r in results]  # the Ctrl-C came before its hand-out


def test_a_ray_worker_that_dies_fails_its_run_and_its_finished_runs_are_replayed_again(
    recordings, tmp_path
):
    ray = pytest.importorskip(
        "ray", reason="Ray is an optional extra: pip install 'openenv-tracer[ray]'"
    )
    from tracer.ray_workers import replay_in_ray
    from tracer.workers import Options

    db = copy(recordings, tmp_path, "traces.db")
    ids = recorded_ids(db)
    victim = ids[1]

    def dies_on_the_victim():  # runs in every Ray worker process as it starts
        import tracer.replay

        real = tracer.replay.replay_run

        def replay_run(store, run_id, **options):
            if run_id == victim:
                os._exit(3)  # the actor's process dies mid-run, as with an OOM kill
            return real(store, run_id, **options)

        tracer.replay.replay_run = replay_run

    ray.init(
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"worker_process_setup_hook": dies_on_the_victim},
    )
    # One actor: the first run has finished, its shard not yet sent, when the actor dies.
    results, interrupted = replay_in_ray(db, ids, Options(offline=True), workers=1)
    assert not interrupted
    assert [r.run_id for r in results] == ids
    assert results[1].error.startswith("its Ray worker failed")
    assert results[0].report is not None and not results[0].report.diverged
    assert results[2].report is not None and results[2].report.diverged
    assert results[0].lines[-1].startswith("[END]") and not results[1].lines
    assert sorted(replay_of for replay_of, _ in replays(db)) == sorted([ids[0], ids[2]])
    assert not [name for name in os.listdir(tmp_path) if ".shards-" in name]


def test_an_interrupt_of_a_ray_replay_keeps_what_finished(recordings, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'openenv-tracer[ray]'")
    from tracer.ray_workers import connect, import_ray, replay_in_ray
    from tracer.workers import Options

    db = copy(recordings, tmp_path, "traces.db")
    ids = recorded_ids(db)
    seen = []

    def ctrl_c_after_the_first_run(result):
        seen.append(result)
        if len(seen) == 1:  # Ctrl-C in the driver as it counts a run, another actor busy
            os.kill(os.getpid(), signal.SIGINT)

    connect(import_ray(), None)
    results, interrupted = replay_in_ray(
        db, ids, Options(offline=True), workers=2, on_result=ctrl_c_after_the_first_run
    )
    assert interrupted
    assert sorted(r.run_id for r in results) == sorted(ids)
    finished = sorted(r.run_id for r in results if r.report is not None)
    assert finished and sorted(replay_of for replay_of, _ in replays(db)) == finished
    assert not [name for name in os.listdir(tmp_path) if ".shards-" in name]
