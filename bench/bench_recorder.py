"""What recording costs: whole runs with and without ``TRACE``, and the store's write path alone.

    python bench/bench_recorder.py [--quick] [--episodes 20] [--steps 8] [--rounds 7]

In one process (imported once, warmed up), runs ``tracer.runner.run`` against the embedded echo
env and the local stand-in model (the fastest case, everything on 127.0.0.1) alternately with
recording on and off (``Config(trace=False)`` is ``TRACE=off``), and prints the median of the
recorded/unrecorded wall-time ratios. Then times the writes one step makes (``record_step``,
``record_line``, ``record_llm_call``, each its own committed transaction) on rows taken from the
run it just recorded, in microseconds and as a fraction of a step's unrecorded wall time.
Not a test: machines are noisy, so it prints ratios to baselines measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from tracer.config import Config
from tracer.runner import run
from tracer.store import Store, now

TARGET_OVERHEAD = 0.05  # recording may cost at most 5% of an episode's wall time


class LineClock(io.TextIOBase):
    """A null stdout that notes when the first ``[START]`` and the last ``[END]`` were printed."""

    def __init__(self) -> None:
        super().__init__()
        self.first_start: float | None = None
        self.last_end: float | None = None

    def write(self, text: str) -> int:
        if text.startswith("[START]") and self.first_start is None:
            self.first_start = time.perf_counter()
        elif text.startswith("[END]"):
            self.last_end = time.perf_counter()
        return len(text)


def timed_run(config: Config) -> tuple[float, float]:
    """Run ``config`` with its output discarded; return (whole run, its episodes) in seconds.

    The episodes' time runs from the first ``[START]`` to the last ``[END]`` line, leaving out
    what a run pays once (starting and stopping the two local servers, the run row).
    """
    clock = LineClock()
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(clock), \
            contextlib.redirect_stderr(sink):
        t0 = time.perf_counter()
        code = run(config)
        elapsed = time.perf_counter() - t0
    if code != 0 or clock.first_start is None or clock.last_end is None:
        raise SystemExit(f"run failed with exit code {code}")
    return elapsed, clock.last_end - clock.first_start


def recorded_rows(db: Path) -> tuple[list[dict], list[dict], list[str]]:
    """Return the steps, LLM calls and lines of the newest recorded run, as stored."""
    store = Store(db, create=False)
    run_id = next(store.db.query("select id from runs order by started_at desc limit 1"))["id"]
    steps = list(store.db.query("select * from steps where run_id = ? order by id", [run_id]))
    calls = list(store.db.query("select * from llm_calls where run_id = ? order by id", [run_id]))
    lines = [r["line"] for r in store.db.query(
        "select line from lines where run_id = ? order by id", [run_id])]
    store.close()
    return steps, calls, lines


def write_path_us(db: Path, steps: list[dict], calls: list[dict], lines: list[str],
                  repeat: int, rounds: int = 5) -> dict[str, float]:
    """Return µs per step for one step's three writes, three ways, best of ``rounds``.

    ``store``: through ``Store`` as a recorded step pays (sqlite-utils insert, one committed
    transaction per row). ``raw``: the same rows as prepared ``INSERT`` statements, still one
    committed transaction per row: the floor for this schema and durability. ``raw_step``: raw
    inserts, one transaction per step.
    """
    store = Store(db)
    conn = store.db.conn
    run_id = store.start_run(tasks=["echo"], benchmark="echo", model="bench")
    episode_id = store.start_episode(run_id, 1, task="echo")
    # Rows as the recorder hands them over: JSON columns decoded back to values.
    step_rows = [{k: (json.loads(s[k]) if k in ("action", "observation") else s[k])
                  for k in ("step", "action", "action_text", "observation", "reward", "done",
                            "error", "latency_ms")} for s in steps]
    call_rows = [{k: (json.loads(c[k]) if k in ("request", "response") else c[k])
                  for k in ("step", "position", "method", "url", "request_hash", "request",
                            "status_code", "response", "stream", "latency_ms", "error",
                            "started_at")} for c in calls]
    step_lines = [line for line in lines if line.startswith("[STEP]")] or lines
    n = min(len(step_rows), len(call_rows))

    def sql(table: str, row: dict[str, Any]) -> str:
        return (f"insert into [{table}] ({', '.join(row)}) "
                f"values ({', '.join('?' * len(row))})")

    ids = {"run_id": run_id, "episode_id": episode_id}
    step_sql = sql("steps", {**ids, **step_rows[0]})
    call_sql = sql("llm_calls", {**ids, **call_rows[0]})
    line_sql = sql("lines", {**ids, "line": "", "printed_at": ""})

    def raw_rows(i: int) -> list[tuple[str, list[Any]]]:
        step = [run_id, episode_id, *map(store.redact, step_rows[i % n].values())]
        call = [run_id, episode_id, *map(store.redact, call_rows[i % n].values())]
        line = [run_id, episode_id, step_lines[i % len(step_lines)], now()]
        return [(step_sql, step), (line_sql, line), (call_sql, call)]

    def through_store(i: int) -> None:
        store.record_step(run_id, episode_id, **step_rows[i % n])
        store.record_line(run_id, episode_id, step_lines[i % len(step_lines)])
        store.record_llm_call(**ids, **call_rows[i % n])

    def raw(i: int) -> None:
        for statement, params in raw_rows(i):
            with store.transaction():
                conn.execute(statement, params)

    def raw_step(i: int) -> None:
        with store.transaction():
            for statement, params in raw_rows(i):
                conn.execute(statement, params)

    ways = {"store": through_store, "raw": raw, "raw_step": raw_step}
    best = {name: float("inf") for name in ways}
    for write in ways.values():
        for i in range(20):  # warm up
            write(i)
    for _ in range(rounds):  # interleaved, so a busy moment hits every way alike
        for name, write in ways.items():
            t0 = time.perf_counter()
            for i in range(repeat):
                write(i)
            best[name] = min(best[name], (time.perf_counter() - t0) / repeat * 1e6)
    store.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 episodes, 3 rounds")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.quick:
        args.episodes, args.rounds = 5, 3
    tasks = ("echo",) * args.episodes
    steps_per_run = args.episodes * args.steps

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "traces.db"
        on = Config(tasks=tasks, max_steps=args.steps, trace=True, trace_db=str(db))
        off = Config(tasks=tasks, max_steps=args.steps, trace=False, trace_db=str(db))
        warm = Config(tasks=("echo",) * 2, max_steps=args.steps, trace_db=str(db))
        timed_run(warm)
        timed_run(replace(warm, trace=False))

        runs: dict[bool, list[float]] = {True: [], False: []}
        episodes: dict[bool, list[float]] = {True: [], False: []}
        ratios, run_ratios = [], []
        for i in range(args.rounds):
            order = (False, True) if i % 2 == 0 else (True, False)  # cancel drift
            pair = {trace: timed_run(on if trace else off) for trace in order}
            for trace, (whole, span) in pair.items():
                runs[trace].append(whole)
                episodes[trace].append(span)
            ratios.append(pair[True][1] / pair[False][1])
            run_ratios.append(pair[True][0] / pair[False][0])
            print(f"  round {i + 1}: episodes off {pair[False][1]:.2f} s, on {pair[True][1]:.2f} s,"
                  f" ratio {ratios[-1]:.3f}; whole runs ratio {run_ratios[-1]:.3f}", flush=True)

        t_off, t_on = statistics.median(episodes[False]), statistics.median(episodes[True])
        ratio = statistics.median(ratios)
        step_ms = t_off / steps_per_run * 1000
        steps, calls, lines = recorded_rows(db)
        writes = write_path_us(Path(tmp) / "writes.db", steps, calls, lines,
                               repeat=200 if args.quick else 1000)

    print(f"runs: {args.episodes} episodes x {args.steps} steps, embedded echo env + local "
          f"stand-in model, {args.rounds} rounds each way, {os.cpu_count()} cores")
    print(f"baseline TRACE=off: episodes {t_off:.2f} s per run (median, first [START] to last "
          f"[END]), {step_ms:.2f} ms per step; whole run {statistics.median(runs[False]):.2f} s")
    print(f"  recorded: episodes {t_on:.2f} s per run (median) = {t_on / t_off:.3f}x baseline; "
          f"median of paired ratios {ratio:.3f}x (range {min(ratios):.3f} to {max(ratios):.3f})")
    print(f"  recording overhead: {(ratio - 1) * 100:+.1f}% of an episode's wall time "
          f"(whole runs, with server start/stop: {(statistics.median(run_ratios) - 1) * 100:+.1f}%)")
    store_us = writes["store"]
    print(f"store write path per step (record_step + record_line + record_llm_call, best of 5): "
          f"{store_us:.0f} µs = {store_us / 1000 / step_ms * 100:.2f}% of a step's wall time")
    print(f"  baseline, the same rows as prepared INSERTs, one commit per row: "
          f"{writes['raw']:.0f} µs; Store = {store_us / writes['raw']:.2f}x baseline")
    print(f"  prepared INSERTs, one commit per step: {writes['raw_step']:.0f} µs "
          f"= {writes['raw_step'] / writes['raw']:.2f}x baseline")
    met = ratio - 1 <= TARGET_OVERHEAD
    print(f"target (recording <= {TARGET_OVERHEAD:.0%} of wall time):", "met" if met else "MISSED")


if __name__ == "__main__":
    main()
