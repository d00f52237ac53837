"""Replaying many runs at once: worker processes, each recording into one database it keeps open.

Every worker opens the trace database read-only, replays the runs it is handed one at a time
with ``tracer.replay.replay_run`` (its own env per run, as recorded, or the shared
``--env-url``), and records every one of them into one database opened once: the first worker
into the target itself, each other into its own shard next to the target. The driver hands
out runs as workers free up, prints each run's stdout lines in the order of the runs (so the
log is the one a single process prints), and merges the shards into the target at the end
with ``tracer.merge``. A worker that dies mid-run costs that run only: it is reported as
failed and a new worker takes the next run. Ctrl-C (or SIGTERM) stops every worker at a
safe point, keeps what finished, and still merges.
"""

from __future__ import annotations

import contextlib
import gc
import io
import multiprocessing
import os
import shutil
import signal
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracer.replay import ReplayReport

from tracer.replay import ReplayReport
from tracer.signals import deferred

STOP_TIMEOUT_S = 30  # how long a stopped worker may take to finish its episode's [END]


@dataclass
class RunResult:
    """One run's replay as a worker saw it: its report (None if it failed) and stdout lines."""

    run_id: str
    report: ReplayReport | None
    lines: list[str] = field(default_factory=list)
    error: str | None = None  # why there is no report: an error, a crash, an interrupt
    notes: str = ""  # what the replay wrote on stderr (why an episode stopped, ...)

    @property
    def failed(self) -> bool:
        return self.report is None


@dataclass
class Options:
    """The replay options every worker uses (those of ``tracer replay``)."""

    offline: bool = False
    env_url: str | None = None
    lenient: bool = False
    record: bool = True
    secrets: list[str] = field(default_factory=list)
    through_client: bool = False
    cwd: str | None = None
    env_schemas: dict[str, Any] = field(default_factory=dict)  # env URL -> /schema, checked

    def replay(
        self,
        source: Any,
        run_id: str,
        emit: Callable[[str], None],
        *,
        into: Any = None,
        recording: Any = None,
    ) -> ReplayReport:
        """Replay ``run_id`` from ``source`` with these options (``tracer.replay.replay_run``)."""
        from tracer.replay import replay_run

        return replay_run(
            source,
            run_id,
            offline=self.offline,
            env_url=self.env_url,
            lenient=self.lenient,
            record=self.record,
            emit=emit,
            into=into,
            through_client=self.through_client,
            cwd=self.cwd,
            recording=recording,
            env_schemas=self.env_schemas,
        )


def replay_one(source: Any, shard: Any, run_id: str, options: Options) -> RunResult:
    """Replay one run from ``source`` recording into ``shard``; errors become a failed result."""
    from tracer.agent import Interrupted
    from tracer.store import TraceError

    lines: list[str] = []
    # Printed by the driver with the run's lines, in the order of runs. A text stream with a
    # .buffer, as sys.stderr has: a tracer run recording's replay tees its command's stderr there.
    caught = io.BytesIO()
    notes = io.TextIOWrapper(caught, encoding="utf-8", errors="replace", write_through=True)
    report, error = None, None
    try:
        with contextlib.redirect_stderr(notes):
            report = options.replay(source, run_id, lines.append, into=shard)
    except Interrupted:
        error = "interrupted"
    except TraceError as exc:
        error = str(exc)
    return RunResult(run_id, report, lines, error, caught.getvalue().decode("utf-8", "replace"))


@contextmanager
def worker_stores(db_path: str, shard_path: str | None, options: Options) -> Iterator[tuple]:
    """Open the recordings read-only and the worker's shard (None: ``--no-record``)."""
    from tracer.store import Store

    source = Store(db_path, create=False)
    shard = Store(shard_path, secrets=options.secrets) if shard_path else None
    try:
        yield source, shard
    finally:
        source.close()
        if shard is not None:
            shard.close()  # checkpoints the WAL: the shard file alone holds everything


def _serve(db_path: str, shard_path: str | None, options: Options, conn: Connection) -> None:
    """A worker process: replay each run id received, send back its result; None stops it."""
    from tracer.agent import Interrupted
    from tracer.runner import signals_end_episodes

    # Ctrl-C reaches the whole process group: the driver alone decides, and sends SIGTERM,
    # which ends the current episode at a safe point (its [END] printed and recorded).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with signals_end_episodes(), worker_stores(db_path, shard_path, options) as (source, shard):
            while (run_id := conn.recv()) is not None:
                conn.send(replay_one(source, shard, run_id, options))
    except (Interrupted, EOFError, BrokenPipeError):  # stopped, or the driver is gone
        pass


def preload(options: Options) -> None:
    """Import what every replay uses once, before forking: N workers importing openai and
    openenv at the same time on N busy cores took 10 s here before their first step."""
    import openai  # noqa: F401

    if not options.offline:
        from tracer.openenv_import import import_openenv

        import_openenv()
        import openenv.core.generic_client  # noqa: F401

        if not options.env_url:  # runs recorded with the embedded env start it again
            import tracer.echo_env
            import tracer.servers  # noqa: F401


@dataclass
class _Worker:
    process: Any
    conn: Connection
    run_id: str | None = None


class InOrder:
    """Collects results as runs end; prints each run's notes and lines in the order of runs."""

    def __init__(
        self,
        run_ids: list[str],
        on_result: Callable[[RunResult], None],
        emit: Callable[[str], None],
        note: Callable[[str], None],
    ):
        self.run_ids, self.on_result, self.emit, self.note = run_ids, on_result, emit, note
        self.found: dict[str, RunResult] = {}
        self.printed = 0

    def add(self, result: RunResult) -> None:
        self.found[result.run_id] = result
        self.on_result(result)
        while self.printed < len(self.run_ids) and self.run_ids[self.printed] in self.found:
            done = self.found[self.run_ids[self.printed]]
            if done.notes:
                self.note(done.notes)
            for line in done.lines:
                self.emit(line)
            self.printed += 1

    def results(self) -> list[RunResult]:
        """Return the results in the order of runs; runs never replayed are left out."""
        return [self.found[r] for r in self.run_ids if r in self.found]


def shard_dir(db_path: str) -> Path:
    """Return the directory next to the target where this process's workers keep shards."""
    db = Path(db_path)
    return db.parent / f".{db.name}.shards-{os.getpid()}"


def replay_in_workers(
    db_path: str,
    run_ids: list[str],
    workers: int,
    options: Options,
    on_result: Callable[[RunResult], None] = lambda result: None,
    emit: Callable[[str], None] = lambda line: None,
    note: Callable[[str], None] = lambda text: None,
) -> tuple[list[RunResult], bool]:
    """Replay ``run_ids`` in ``workers`` processes; merge their shards into ``db_path``.

    ``on_result`` is called as each run ends (for a progress bar); ``emit`` gets every stdout
    line and ``note`` what each run wrote on stderr, run by run in the order of ``run_ids``.
    Return the results in that order (runs not replayed after an interrupt left out) and
    whether the job was interrupted."""
    context = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    )
    if context.get_start_method() == "fork":
        preload(options)
    directory = shard_dir(db_path)
    pending = deque(run_ids)
    shards: list[str] = []
    started: list[_Worker] = []
    collected = InOrder(run_ids, on_result, emit, note)
    finished = collected.add

    def start() -> _Worker:
        # The first worker records into the target itself: one shard fewer to write, check
        # and copy at the end, which is work no other worker can share.
        shard = None
        if options.record and not started:
            shard = db_path
        elif options.record:
            directory.mkdir(exist_ok=True)
            shards.append(shard := str(directory / f"worker-{len(shards) + 1}.db"))
        ours, theirs = context.Pipe()
        # typeshed's BaseContext lacks Process; every concrete context (fork, spawn) has it
        process = context.Process(  # type: ignore[attr-defined]
            target=_serve,
            args=(db_path, shard, options, theirs),
            daemon=True,
            name=f"tracer-replay-{len(started) + 1}",
        )
        # Frozen, the parent's objects are not walked by a worker's collector, which would
        # copy every page they are on (fork shares them): 6% of the workers' CPU here.
        gc.freeze()
        try:
            process.start()
        finally:
            gc.unfreeze()
        theirs.close()
        started.append(worker := _Worker(process, ours))
        return worker

    def hand_out(worker: _Worker) -> None:
        worker.run_id = pending.popleft() if pending else None
        try:
            worker.conn.send(worker.run_id)
        except (BrokenPipeError, OSError):
            pass  # it died meanwhile: its sentinel says so next

    interrupted = False
    busy: list[_Worker] = []
    try:
        for _ in range(min(workers, len(run_ids))):
            busy.append(worker := start())
            hand_out(worker)
        while busy:
            _collect(busy, finished, hand_out, start, pending)
    except KeyboardInterrupt:
        interrupted = True
        pending.clear()
        for worker in busy:
            if worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGTERM)
        _drain(busy, finished)
    finally:
        for worker in busy:
            worker.process.kill()
    if shards:
        merge_shards(db_path, shards, directory, options)
    return collected.results(), interrupted


def _collect(
    busy: list[_Worker], finished: Callable, hand_out: Callable, start: Callable, pending: deque
) -> None:
    """Wait for workers to answer or die, take that in, then hand out the next runs.

    A Ctrl-C while an answer is taken in waits for it to be counted (never a result read and
    lost), and one that came meanwhile stops the job before any worker gets a new run."""
    ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
    free: list[_Worker | None] = []  # answered, or None for one that died
    with deferred():
        for worker in list(busy):
            if worker.conn in ready or worker.conn.poll():
                try:
                    result = worker.conn.recv()
                except (EOFError, OSError):
                    _crashed(worker, busy, finished)
                    free.append(None)
                    continue
                worker.run_id = None  # answered: an interrupt now waits for nothing from it
                finished(result)
                free.append(worker)
            elif worker.process.sentinel in ready:
                _crashed(worker, busy, finished)
                free.append(None)
    for idle in free:
        with deferred():
            if idle is None:  # a new worker takes the next run
                if pending:
                    busy.append(replacement := start())
                    hand_out(replacement)
                continue
            hand_out(idle)
            if idle.run_id is None:  # no run left for it: let it go
                idle.process.join()
                busy.remove(idle)


def _crashed(worker: _Worker, busy: list[_Worker], finished: Callable) -> None:
    worker.process.join()
    busy.remove(worker)
    if worker.run_id is not None:
        finished(
            RunResult(
                worker.run_id,
                None,
                [],
                f"its worker process died (exit code {worker.process.exitcode})",
            )
        )


def _drain(busy: list[_Worker], finished: Callable) -> None:
    """After an interrupt: take the last result of each worker as it stops, then let it go."""
    for worker in busy:
        try:
            if worker.run_id is not None and worker.conn.poll(STOP_TIMEOUT_S):
                finished(worker.conn.recv())
            worker.conn.send(None)  # if it is still waiting for a run
        except (EOFError, OSError):
            pass  # it has stopped already
        worker.process.join(STOP_TIMEOUT_S)


def merge_shards(db_path: str, shards: list[str], directory: Path, options: Options) -> None:
    """Merge the shards into the target, then remove them; on failure, say where they are."""
    from tracer.merge import merge
    from tracer.store import TraceError

    # A worker stopped while it started may have left no shard, or an empty file.
    present = [s for s in shards if Path(s).exists() and Path(s).stat().st_size]
    try:
        merge(db_path, present, secrets=options.secrets)
    except TraceError as exc:
        raise TraceError(
            f"{exc} (the workers' shards are kept in {directory}: "
            f"tracer merge {db_path} {directory}/*.db)"
        ) from None
    shutil.rmtree(directory, ignore_errors=True)
