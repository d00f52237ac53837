"""Replaying many runs on a Ray cluster: the same workers as ``tracer.workers``, as Ray actors.

The driver takes a consistent copy of the trace database and puts it in Ray's object store
once; each actor (one CPU) writes it to a local file and replays the runs it is handed with
``tracer.workers.replay_one``, recording them all into one shard it keeps open. The shard's
bytes come back to the driver every few seconds (``SHIP_EVERY_S``; a new shard is begun) and
when the actor has no run left, so a shard is made, sent and merged a few times per actor, not
once per run. A run's result counts (and its lines are printed) once its shard is on the
driver. An actor that dies costs only its current run (reported as failed): the runs it had
finished since its last shard are replayed again by a new actor, which takes the next runs.
The driver writes the shards next to the target and merges them with ``tracer.merge``.

Every machine of the cluster needs openenv-tracer installed (``pip install
'openenv-tracer[ray]'``), and, for runs replayed against a live env, to reach that env.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sqlite3
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tracer.signals import deferred
from tracer.store import TraceError
from tracer.workers import (
    STOP_TIMEOUT_S,
    InOrder,
    Options,
    RunResult,
    merge_shards,
    preload,
    replay_one,
    shard_dir,
)

INSTALL = "pip install 'openenv-tracer[ray]'"
CONNECT_TIMEOUT_S = 5
SHIP_EVERY_S = 5.0  # how long finished runs may wait on an actor before their shard comes back


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
        ray.init(
            address=address or None,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            configure_logging=True,
        )
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
        raise TraceError(
            f"--ray {address}: not a Ray address (HOST:PORT, ray://HOST:PORT or auto)"
        ) from None
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise TraceError(f"the Ray cluster at {address} could not be reached ({why})") from None


class RayWorker:
    """A Ray actor: the recordings in a local file, and one shard recording every run it
    replays, sent back (and a new one begun) every ``ship_every_s`` seconds and at the end."""

    def __init__(self, database: bytes, options: Options, ship_every_s: float = SHIP_EVERY_S):
        from tracer.store import Store

        self.options, self.ship_every_s = options, ship_every_s
        self.directory = tempfile.mkdtemp(prefix="tracer-ray-")
        path = Path(self.directory, "recordings.db")
        path.write_bytes(database)
        preload(options)
        self.source = Store(path, create=False)
        self.shard: Any = None
        self.shipped = time.monotonic()

    def replay(self, run_id: str) -> tuple[RunResult, bytes | None]:
        """Replay one run into the shard; return its result, and the shard's bytes when they
        are due (None: not yet, or ``--no-record``)."""
        from tracer.store import Store

        if self.options.record and self.shard is None:
            path = Path(self.directory, f"shard-{time.monotonic_ns()}.db")
            self.shard = Store(path, secrets=self.options.secrets)
        result = replay_one(self.source, self.shard, run_id, self.options)
        due = time.monotonic() - self.shipped >= self.ship_every_s
        return result, self.ship() if due else None

    def ship(self) -> bytes | None:
        """Close the shard and return its bytes (None: nothing recorded since the last)."""
        self.shipped = time.monotonic()
        if self.shard is None:
            return None
        path = self.shard.path
        self.shard.close()  # checkpoints the WAL: the file alone holds the runs
        self.shard = None
        data = path.read_bytes()
        path.unlink()
        return data


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

    def __init__(
        self,
        ray: Any,
        db_path: str,
        options: Options,
        count: int,
        ship_every_s: float = SHIP_EVERY_S,
    ):
        self.ray, self.options, self.ship_every_s = ray, options, ship_every_s
        self.database = ray.put(snapshot(db_path))
        self.actor_class = ray.remote(num_cpus=1, max_restarts=0)(RayWorker)
        self.actors = [self._actor() for _ in range(count)]
        try:
            ray.get([actor.__ray_ready__.remote() for actor in self.actors])
        except ray.exceptions.RayError as exc:  # an actor that cannot even start
            raise TraceError(f"the Ray workers could not start ({_why(exc)})") from None

    def _actor(self) -> Any:
        return self.actor_class.remote(self.database, self.options, self.ship_every_s)

    def replay(
        self,
        run_ids: list[str],
        directory: Path,
        on_result: Callable[[RunResult], None] = lambda result: None,
        emit: Callable[[str], None] = lambda line: None,
        note: Callable[[str], None] = lambda text: None,
    ) -> tuple[list[RunResult], list[str], bool]:
        """Replay ``run_ids``, writing the actors' shards into ``directory``; return the
        results in run order, the shards' paths and whether Ctrl-C stopped it.

        A run's result counts once its shard is here: an actor that dies costs its current
        run (failed) and sends the runs it had finished since its last shard to another."""
        job = _Job(self, run_ids, directory, InOrder(run_ids, on_result, emit, note))
        for actor in list(self.actors):
            job.submit(actor)
        try:
            while job.in_flight:
                (ready,), _ = self.ray.wait(list(job.in_flight), num_returns=1)
                with deferred():  # a Ctrl-C while an answer is taken in waits for it
                    job.answered(ready)
        except KeyboardInterrupt:
            job.stop()
            return job.collected.results(), job.shards, True
        return job.collected.results(), job.shards, False


class _Job:
    """One ``RayPool.replay``: what is in flight on which actor, and what waits for a shard."""

    def __init__(self, pool: RayPool, run_ids: list[str], directory: Path, collected: InOrder):
        self.pool, self.ray, self.directory, self.collected = pool, pool.ray, directory, collected
        self.pending = deque(run_ids)
        self.in_flight: dict[Any, tuple[Any, str | None]] = {}  # ref -> actor, run (None: ship)
        self.waiting: dict[Any, list[RunResult]] = {}  # actor -> finished, shard not here yet
        self.resent: set[str] = set()
        self.shards: list[str] = []
        self.stopping = False

    def submit(self, actor: Any) -> None:
        """Hand ``actor`` the next run; with none left, ask for its last shard."""
        if self.stopping:
            return
        if self.pending:
            run_id = self.pending.popleft()
            self.in_flight[actor.replay.remote(run_id)] = (actor, run_id)
        elif self.waiting.get(actor):
            self.in_flight[actor.ship.remote()] = (actor, None)

    def answered(self, ref: Any) -> None:
        """Take in what ``ref`` brought (a run's result, a shard, or its actor's death)."""
        actor, run_id = self.in_flight.pop(ref)
        try:
            answer = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            self._lost(actor, run_id, exc)
            return
        result, data = answer if run_id is not None else (None, answer)
        if result is not None:
            self.waiting.setdefault(actor, []).append(result)
        if data is not None or not self.pool.options.record:
            self._arrived(actor, data)
        self.submit(actor)

    def _arrived(self, actor: Any, data: bytes | None) -> None:
        """A shard came back (None with ``--no-record``): its runs' results count now."""
        if data is not None:
            self.directory.mkdir(exist_ok=True)
            shard = self.directory / f"shard-{len(self.shards) + 1}.db"
            shard.write_bytes(data)
            self.shards.append(str(shard))
        for result in self.waiting.pop(actor, []):  # each counts: its rows are in the shard
            self.collected.add(result)

    def _lost(self, actor: Any, run_id: str | None, exc: Exception) -> None:
        """An actor died: its run fails, its unsent runs go to another actor (once each)."""
        if run_id is not None:
            self.collected.add(RunResult(run_id, None, [], f"its Ray worker failed ({_why(exc)})"))
        for result in reversed(self.waiting.pop(actor, [])):
            if self.stopping or result.run_id in self.resent:
                why = (
                    "interrupted"
                    if self.stopping
                    else "its Ray worker failed twice before the run's recording came back"
                )
                self.collected.add(RunResult(result.run_id, None, [], why))
            else:
                self.resent.add(result.run_id)
                self.pending.appendleft(result.run_id)
        self.ray.kill(actor)
        self.pool.actors.remove(actor)
        if self.pending and not self.stopping:
            self.pool.actors.append(replacement := self.pool._actor())
            self.submit(replacement)

    def stop(self) -> None:
        """After Ctrl-C: no new runs; the runs in flight and every actor's shard get
        ``STOP_TIMEOUT_S`` to come back; what does not is reported interrupted."""
        self.stopping = True
        if self.pool.options.record:  # each actor's shard, after its run in flight
            for actor in {a for a, _ in self.in_flight.values()} | set(self.waiting):
                self.in_flight[actor.ship.remote()] = (actor, None)
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: the rest is lost
            ready = set(
                self.ray.wait(
                    list(self.in_flight), num_returns=len(self.in_flight), timeout=STOP_TIMEOUT_S
                )[0]
            )
            for ref in [ref for ref in self.in_flight if ref in ready]:  # as submitted
                with deferred():
                    self.answered(ref)
        for run_id in [run_id for _, run_id in self.in_flight.values() if run_id] + [
            result.run_id for results in self.waiting.values() for result in results
        ]:
            self.collected.add(RunResult(run_id, None, [], "interrupted"))


def _why(exc: Exception) -> str:
    return " ".join(str(exc).split())[:160]


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
