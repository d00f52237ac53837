"""How `tracer replay --all --workers N` (and `--ray`) scale against one process.

Records one run of ``--episodes-per-run`` 8-step episodes with the real recorder (embedded
echo env, local stand-in model), copies it under ``--runs`` run ids (each copy a shard merged
with ``tracer merge``), then replays every run offline, recording the replays, each time
from a fresh copy of that database:

- one process: ``replay_run`` run after run, as ``--workers 1`` does (the baseline);
- ``replay_in_workers`` with N processes (``--workers``, default: the number of cores);
- with ``--ray``: the same through Ray actors on a local instance, timed from the actors
  being ready to the shards merged (``ray.init`` with the actors' start, and ``ray.shutdown``,
  are printed apart: Ray's start-up, paid once).

Prints episodes/s and the ratio to one process (the target is 0.8 x N), the CPU per episode of
the process jobs (this process and its workers: what a loaded machine's wall times hide), and
checks that every run replayed with no divergence and that each database got one replay per
run.
Alternated rounds (``--rounds``, default 3): the median rate and the median of the paired
ratios. Run: ``python bench/bench_workers.py [--runs 40] [--episodes-per-run 25] [--workers N]
[--rounds 3] [--ray] [--through-client]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tracer.config import Config
from tracer.merge import merge
from tracer.replay import replay_run
from tracer.runner import run
from tracer.store import Store
from tracer.workers import Options, replay_in_workers


def build(tmp: Path, runs: int, episodes: int) -> Path:
    """Record one run, then merge ``runs`` copies of it under new ids; return the database."""
    template = tmp / "template.db"
    with (
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        code = run(
            Config(
                tasks=tuple(f"echo-{i:03d}" for i in range(episodes)),
                max_steps=8,
                trace_db=str(template),
            )
        )
    if code != 0:
        raise SystemExit(f"recording failed: exit code {code}")
    copies = []
    for n in range(runs):
        copy = tmp / f"copy-{n}.db"
        shutil.copy(template, copy)
        with sqlite3.connect(copy) as conn:
            (old,) = conn.execute("select id from runs").fetchone()
            new = f"{old[:12]}{n:08x}"
            for table in ("episodes", "steps", "llm_calls", "lines"):
                conn.execute(f"update {table} set run_id = ?", [new])
            conn.execute(
                "update runs set id = ?, started_at = started_at || ? ", [new, f"-{n:04d}"]
            )
        conn.close()
        copies.append(copy)
    merge(tmp / "recordings.db", copies)
    for copy in [template, *copies]:
        copy.unlink()
    return tmp / "recordings.db"


def run_ids(db: Path) -> list[str]:
    store = Store(db, create=False)
    try:
        return [
            r["id"]
            for r in store.db.query(
                "select id from runs where replay_of is null order by started_at, id"
            )
        ]
    finally:
        store.close()


def replays(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("select count(*) from runs where replay_of is not null").fetchone()[0]


def one_process(db: Path, ids: list[str], options: Options) -> list[bool]:
    store = Store(db, create=False)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return [
                replay_run(
                    store, run_id, offline=True, through_client=options.through_client
                ).diverged
                for run_id in ids
            ]
    finally:
        store.close()


def independent(
    db: Path, ids: list[str], workers: int, options: Options
) -> tuple[list[bool], int, float]:
    """The machine's ceiling: ``workers`` processes forked from this one (imports done), each
    replaying its share of the runs from a copy of its own into that copy, with nothing
    shared: no hand-out, no shard, no merge; the ratio no pool can beat on these cores.
    Return the verdicts, the replays the copies got, and the time to leave out: the copies
    made and the processes forked before their release."""
    import multiprocessing

    start = time.perf_counter()
    context = multiprocessing.get_context("fork")
    copies = [db.with_name(f"{db.stem}-alone-{n}.db") for n in range(workers)]
    for copy in copies:
        shutil.copy(db, copy)
    go, results = context.Event(), context.Queue()

    def work(n: int) -> None:
        go.wait()
        results.put(one_process(copies[n], ids[n::workers], options))

    children = [context.Process(target=work, args=(n,)) for n in range(workers)]
    for child in children:
        child.start()
    time.sleep(0.2)  # every child forked and waiting
    released = time.perf_counter()
    go.set()
    verdicts = [v for _ in children for v in results.get()]
    for child in children:
        child.join()
    replayed = sum(replays(copy) for copy in copies) - workers * replays(db)
    for copy in copies:
        copy.unlink()
    return verdicts, replayed, released - start


def in_workers(db: Path, ids: list[str], workers: int, options: Options) -> list[bool]:
    results, _ = replay_in_workers(str(db), ids, workers, options)
    return [r.report is None or r.report.diverged for r in results]


def on_ray(
    db: Path, ids: list[str], workers: int, options: Options
) -> tuple[list[bool], int, float]:
    """Replay through Ray actors; return the verdicts, the replays recorded and the start-up
    time to leave out: ``ray.init``, the actors' start (a process each, importing tracer) and
    ``ray.shutdown``."""
    import ray

    from tracer.ray_workers import RayPool, connect
    from tracer.workers import merge_shards, shard_dir

    start = time.perf_counter()
    connect(ray, None)
    pool = RayPool(ray, str(db), options, workers)
    started = time.perf_counter() - start
    STARTS["ray.init + actors ready"].append(started)
    try:
        directory = shard_dir(str(db))
        results, shards, _ = pool.replay(ids, directory)
    finally:
        stop = time.perf_counter()
        ray.shutdown()
        stopped = time.perf_counter() - stop
        STARTS["ray.shutdown"].append(stopped)
    merge_shards(str(db), shards, directory, options)
    return [r.report is None or r.report.diverged for r in results], replays(db), started + stopped


def cpu_seconds() -> float:
    """Return the CPU time of this process and of its children that have ended."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


STARTS: dict[str, list[float]] = {"ray.init + actors ready": [], "ray.shutdown": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--episodes-per-run", type=int, default=25)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ray", action="store_true", help="also through Ray (local instance)")
    parser.add_argument(
        "--through-client",
        action="store_true",
        help="replay through the openai client (default: the fast offline path)",
    )
    args = parser.parse_args()
    options = Options(offline=True, through_client=args.through_client)
    episodes = args.runs * args.episodes_per_run
    path = "through the openai client" if args.through_client else "answered from the recording"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        source = build(tmp, args.runs, args.episodes_per_run)
        ids = run_ids(source)
        print(
            f"recorded {args.runs} runs x {args.episodes_per_run} episodes x 8 steps "
            f"({episodes} episodes) in {time.perf_counter() - start:.1f} s; LLM calls {path}; "
            f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
        )
        # each: the verdicts, the replays recorded, and seconds of its own start-up to leave out
        jobs: dict[str, Callable[[Path], tuple[list[bool], int, float]]] = {
            "1 process": lambda db: (one_process(db, ids, options), replays(db), 0.0),
            f"{args.workers} workers": lambda db: (
                in_workers(db, ids, args.workers, options),
                replays(db),
                0.0,
            ),
            f"{args.workers} alone (ceiling)": lambda db: independent(
                db, ids, args.workers, options
            ),
        }
        if args.ray:
            jobs[f"ray, {args.workers} actors"] = lambda db: on_ray(db, ids, args.workers, options)
        names = list(jobs)
        rates: dict[str, list[float]] = {name: [] for name in names}
        ratios: dict[str, list[float]] = {name: [] for name in names[1:]}
        cpus: dict[str, list[float]] = {name: [] for name in names}
        problems = []
        for round_ in range(args.rounds):  # alternated: the load of other processes drifts
            for name in names if round_ % 2 == 0 else names[::-1]:
                db = tmp / "work.db"
                for leftover in tmp.glob("work.db*"):
                    leftover.unlink()
                shutil.copy(source, db)
                t0, cpu0 = time.perf_counter(), cpu_seconds()
                verdicts, recorded, left_out = jobs[name](db)
                took = time.perf_counter() - t0 - left_out
                rates[name].append(episodes / took)
                cpus[name].append((cpu_seconds() - cpu0) / episodes)
                if any(verdicts) or len(verdicts) != len(ids) or recorded != len(ids):
                    problems.append(
                        f"{name}: {sum(verdicts)} diverged or failed, "
                        f"{recorded} replays recorded for {len(ids)} runs"
                    )
            for name in names[1:]:
                ratios[name].append(rates[name][-1] / rates[names[0]][-1])
        for name in names:
            ratio = statistics.median(ratios[name]) if name in ratios else 1.0
            print(
                f"{name:<20} {statistics.median(rates[name]):7.1f} episodes/s (median of "
                f"{args.rounds})  {ratio:5.2f}x one process (median of paired rounds)"
            )
        ceiling = f"{args.workers} alone (ceiling)"
        pool = statistics.median(
            w / c for w, c in zip(rates[f"{args.workers} workers"], rates[ceiling])
        )
        print(
            f"{args.workers} workers against {args.workers} processes alone: {pool:.2f}x (median of "
            "paired rounds): what the pool's hand-out and merge leave of what these cores allow"
        )
        for name in names:  # on a loaded machine, what the wall-time ratios cannot show
            if not name.startswith("ray"):
                print(
                    f"{name:<20} CPU {1000 * statistics.median(cpus[name]):.2f} ms per episode, "
                    "this process and its workers (median)"
                )
        for what, seconds in STARTS.items():
            if seconds:
                print(f"{what} (not counted above): {statistics.median(seconds):.1f} s")
        print(
            f"target: >= {0.8 * args.workers:.1f}x with {args.workers} workers; load now "
            f"{os.getloadavg()[0]:.1f}"
        )
        print(
            "every run replayed the same, one replay recorded per run"
            if not problems
            else "PROBLEM: " + "; ".join(problems)
        )
        sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
