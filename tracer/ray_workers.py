"""Replaying many runs on a Ray cluster: the same workers as ``tracer.workers``, as Ray actors.

The driver takes a consistent copy of the trace database and puts it in Ray's object store
once; each actor (one CPU) writes it to a local file and replays the runs it is handed with
``tracer.workers.replay_one``, each into a fresh shard whose bytes go back to the driver with
the run's result. So a run that finished is on the driver the moment it finishes, and an
actor that dies costs only its current run (reported as failed; a new actor takes the next).
The driver writes the shards next to the target and merges them with ``tracer.merge``.

Every machine of the cluster needs openenv-tracer installed (``pip install
'openenv-tracer[ray]'``), and, for runs replayed against a live env, to reach that env.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import tempfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tracer.store import TraceError
from tracer.workers import InOrder, Options, RunResult, merge_shards, preload, replay_one, shard_dir

INSTALL = "pip install 'openenv-tracer[ray]'"
CONNECT_TIMEOUT_S = 5


def import_ray() -> Any:
    """Return the ``ray`` module, or raise ``TraceError`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise TraceError(f"--ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


def connect(ray: Any, address: str | None) -> None:
    """Join the Ray cluster at ``address`` (None: a running local one, or a new local one)."""
    if address and address != "auto" and not address.startswith("ray://"):
        _check_reachable(address)
    try:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, configure_logging=True)
    except Exception as exc:  # noqa: BLE001  # Ray raises ConnectionError, RuntimeError, ...
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
        where = f"at {address}" if address else "(local)"
        raise TraceError(f"the Ray cluster {where} could not be reached ({why})") from None


def _check_reachable(address: str) -> None:
    """Fail in one line, at once, when nothing listens at host:port (Ray retries for long)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), CONNECT_TIMEOUT_S):
            pass
    except ValueError:
        raise TraceError(f"--ray {address}: not a Ray address (HOST:PORT, ray://HOST:PORT "
                         "or auto)") from None
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise TraceError(f"the Ray cluster at {address} could not be reached ({why})") from None


class RayWorker:
    """A Ray actor: the recordings in a local file, and one fresh shard per run replayed."""

    def __init__(self, database: bytes, options: Options):
        from tracer.store import Store

        self.options = options
        self.directory = tempfile.mkdtemp(prefix="tracer-ray-")
        path = Path(self.directory, "recordings.db")
        path.write_bytes(database)
        preload(options)
        self.source = Store(path, create=False)

    def replay(self, run_id: str) -> tuple[RunResult, bytes | None]:
        """Replay one run; return its result and its shard's bytes (None: ``--no-record``)."""
        from tracer.store import Store

        if not self.options.record:
            return replay_one(self.source, None, run_id, self.options), None
        path = Path(self.directory, f"{run_id}.db")
        shard = Store(path, secrets=self.options.secrets)
        try:
            result = replay_one(self.source, shard, run_id, self.options)
        finally:
            shard.close()  # checkpoints the WAL: the file alone holds the run
        data = path.read_bytes()
        path.unlink()
        return result, data


def snapshot(db_path: str) -> bytes:
    """Return a consistent copy of the database file (a writer may be adding runs)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp, "copy.db")
        source = sqlite3.connect(f"{Path(db_path).absolute().as_uri()}?mode=ro", uri=True)
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        return copy.read_bytes()


class RayPool:
    """Ray actors that each hold a copy of the recordings, ready to replay runs.

    Starting them (a Python process each, importing tracer, openai and OpenEnv) is Ray's
    start-up, paid once; ``replay`` hands out runs as actors free up."""

    def __init__(self, ray: Any, db_path: str, options: Options, count: int):
        self.ray, self.options = ray, options
        self.database = ray.put(snapshot(db_path))
        self.actor_class = ray.remote(num_cpus=1, max_restarts=0)(RayWorker)
        self.actors = [self.actor_class.remote(self.database, options) for _ in range(count)]
        try:
            ray.get([actor.__ray_ready__.remote() for actor in self.actors])
        except ray.exceptions.RayError as exc:  # an actor that cannot even start
            why = " ".join(str(exc).split())[:160]
            raise TraceError(f"the Ray workers could not start ({why})") from None

    def replay(
        self,
        run_ids: list[str],
        directory: Path,
        on_result: Callable[[RunResult], None] = lambda result: None,
        emit: Callable[[str], None] = lambda line: None,
        note: Callable[[str], None] = lambda text: None,
    ) -> tuple[list[RunResult], list[str], bool]:
        """Replay ``run_ids``, writing each run's shard into ``directory``; return the results
        in run order, the shards' paths and whether Ctrl-C stopped it."""
        ray = self.ray
        shards: list[str] = []
        collected = InOrder(run_ids, on_result, emit, note)
        pending = deque(run_ids)
        in_flight: dict[Any, tuple[Any, str]] = {}

        def submit(actor: Any) -> None:
            if pending:
                run_id = pending.popleft()
                in_flight[actor.replay.remote(run_id)] = (actor, run_id)

        for actor in self.actors:
            submit(actor)
        try:
            while in_flight:
                (ready,), _ = ray.wait(list(in_flight), num_returns=1)
                actor, run_id = in_flight.pop(ready)
                try:
                    result, data = ray.get(ready)
                except ray.exceptions.RayError as exc:
                    why = " ".join(str(exc).split())[:160]
                    result, data = RunResult(run_id, None, [], f"its Ray worker failed ({why})"), None
                    ray.kill(actor)
                    self.actors.remove(actor)
                    actor = self.actor_class.remote(self.database, self.options)
                    self.actors.append(actor)
                if data is not None:
                    directory.mkdir(exist_ok=True)
                    shard = directory / f"run-{len(shards) + 1}.db"
                    shard.write_bytes(data)
                    shards.append(str(shard))
                collected.add(result)
                submit(actor)
        except KeyboardInterrupt:  # what finished is kept; runs in flight are dropped
            for _, run_id in in_flight.values():
                collected.add(RunResult(run_id, None, [], "interrupted"))
            return collected.results(), shards, True
        return collected.results(), shards, False


def replay_in_ray(
    db_path: str,
    run_ids: list[str],
    options: Options,
    workers: int | None = None,
    on_result: Callable[[RunResult], None] = lambda result: None,
    emit: Callable[[str], None] = lambda line: None,
    note: Callable[[str], None] = lambda text: None,
) -> tuple[list[RunResult], bool]:
    """Replay ``run_ids`` on Ray actors (``workers``, default: the cluster's CPUs); merge
    their shards into ``db_path``. Return the results in run order and whether interrupted.

    Call ``connect`` first; this disconnects at the end."""
    ray = import_ray()
    directory = shard_dir(db_path)
    shards: list[str] = []
    try:
        count = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        pool = RayPool(ray, db_path, options, min(count, len(run_ids)))
        results, shards, interrupted = pool.replay(run_ids, directory, on_result, emit, note)
    except KeyboardInterrupt:  # while the actors start: nothing replayed yet
        results = [RunResult(run_id, None, [], "interrupted") for run_id in run_ids]
        interrupted = True
    finally:
        ray.shutdown()
    if shards:
        merge_shards(db_path, shards, directory, options)
    return results, interrupted
