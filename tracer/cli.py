"""The ``tracer`` command line: a thin click layer over the library.

Each command parses options, imports its library module inside the function (so ``tracer list``
never loads openai, openenv, httpx or jsonschema), calls it and formats the result. Every command
takes ``--db``. A ``TraceError`` or SQLite error from any command becomes one ``Error: ...`` line
on stderr and exit 2, in ``TracerGroup.invoke`` only. A new command is one decorated function:

    @cli.command()
    @db_option
    def replay(db_path: str) -> None: ...
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

import click

if TYPE_CHECKING:
    from tracer.store import Store

DEFAULT_DB = "traces/traces.db"  # tracer.store.DEFAULT_DB, kept here so --help imports no store


class TracerGroup(click.Group):
    """A click group that turns every ``TraceError`` into ``Error: <message>`` and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        import sqlite3

        from tracer.store import TraceError

        try:
            return super().invoke(ctx)
        except TraceError as exc:
            fail(str(exc))
        except sqlite3.Error as exc:
            fail(f"database error: {exc}")
        except BrokenPipeError:
            # The reader (head, less) went away: stop quietly, as cat does.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(1)


def fail(message: str) -> NoReturn:
    """Print ``Error: <message>`` on stderr and exit 2."""
    click.echo(f"Error: {message}", err=True)
    raise click.exceptions.Exit(2)


def _not_empty(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse ``--db ""``: it would silently mean the default database."""
    if value == "":
        raise click.BadParameter("is empty: give a trace database file", ctx, param)
    return value


def _db_path(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A command's own --db wins, then ``tracer --db PATH COMMAND``, then TRACE_DB, the default."""
    from click.core import ParameterSource

    _not_empty(ctx, param, value)
    before = ctx.find_root().params.get("db_path")
    if before and ctx.get_parameter_source(param.name) is not ParameterSource.COMMANDLINE:
        return before
    return value


db_option = click.option(
    "--db", "db_path", default=DEFAULT_DB, envvar="TRACE_DB", show_default=True,
    metavar="PATH", callback=_db_path, help="Trace database file (or set TRACE_DB).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


@contextmanager
def naming(db_path: str) -> Iterator[None]:
    """Put the database path in front of any database or trace error raised in the block."""
    import sqlite3

    from tracer.store import TraceError

    try:
        yield
    except (TraceError, sqlite3.Error) as exc:
        message = str(exc)
        # The store names the file as a Path does (./t.db as t.db): name it once, as given.
        for name in (db_path, str(Path(db_path))):
            if message.startswith(f"{name}: "):
                message = message[len(name) + 2:]
                break
        raise TraceError(f"{db_path}: {message}") from None


@contextmanager
def reading(db_path: str) -> Iterator[Store]:
    """Open an existing database read-only; name it in every error that happens meanwhile."""
    from tracer.queries import open_store

    with naming(db_path):
        store = open_store(db_path)
        try:
            yield store
        finally:
            store.close()


_secrets: dict[tuple, list[str]] = {}


def secrets() -> list[str]:
    """Return the environment's secrets, longest first (read once: a short one is named once)."""
    from tracer.store import SECRET_ENV_VARS, secrets_from_environ

    key = tuple(os.environ.get(name) for name in SECRET_ENV_VARS)
    if key not in _secrets:
        _secrets[key] = sorted(secrets_from_environ(), key=len, reverse=True)
    return _secrets[key]


def out(text: str = "", **kwargs: Any) -> None:
    """Echo text with any secret from the environment blanked (the store already redacts)."""
    for secret in secrets():
        text = text.replace(secret, "[REDACTED]")
    if "file" in kwargs:
        return click.echo(text, **kwargs)
    try:
        click.echo(text, **kwargs)
    except BrokenPipeError:
        raise  # the reader went away: TracerGroup stops quietly
    except OSError as exc:  # a full disk: say so once, and spare Python's flush at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        fail(f"cannot write stdout ({exc.strerror})")  # about stdout, not the database


def out_json(value: Any) -> None:
    from tracer.store import strict_json

    out(strict_json(value, indent=2))


def table(headers: list[str], body: Iterable[list[Any]]) -> None:
    """Echo rows as left-aligned columns under upper-case headers."""
    body = [["-" if v is None else str(v) for v in row] for row in body]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    for row in [[h.upper() for h in headers], *body]:
        out("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def clip(value: Any, width: int) -> str:
    text = "-" if value is None else " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def when(iso: str | None) -> str:
    return "-" if not iso else iso[:19].replace("T", " ")


def flag(value: bool | None) -> str:
    return "-" if value is None else str(bool(value)).lower()


@click.group(cls=TracerGroup)
@click.version_option(package_name="openenv-tracer", prog_name="tracer")
@click.option("--db", "db_path", metavar="PATH", callback=_not_empty,
              help="Trace database file for the command (its own --db wins).")
def cli(db_path: str | None) -> None:
    """Record, replay and inspect OpenEnv agent episodes."""


@cli.command(context_settings={"ignore_unknown_options": True,
                               "allow_interspersed_args": False})
@db_option
@click.option("--upstream", metavar="URL",
              help="Where LLM calls go (default: $API_BASE_URL; without it and a key, the "
                   "local stand-in model).")
@click.option("--env-url", metavar="URL",
              help="Record the env too: proxy this env server, as $ENV_BASE_URL and $ENV_URL.")
@click.option("--env-var", "env_vars", multiple=True, metavar="NAME",
              help="Another variable the script reads its env URL from (repeatable).")
@click.option("--port", type=click.IntRange(0, 65535), default=0,
              help="Port of the LLM proxy on 127.0.0.1 (default: a free one).")
@click.option("--env-port", type=click.IntRange(0, 65535), default=0,
              help="Port of the env proxy (default: a free one; fix it when the script prints "
                   "its env URL and replays must print the same).")
@click.option("--keep-var", "keep_vars", multiple=True, metavar="NAME",
              help="Also record this variable's value, set again on replay (repeatable; "
                   "MODEL_NAME, TASKS, MAX_STEPS... are always kept).")
@click.option("--seed", type=int, help="Seed the script's random and numpy at start-up.")
@click.option("--check", is_flag=True,
              help="Exit 1 when a grader check fails and the command exited 0.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(db_path: str, upstream: str | None, env_url: str | None, env_vars: tuple[str, ...],
        port: int, env_port: int, keep_vars: tuple[str, ...], seed: int | None, check: bool,
        command: tuple[str, ...]) -> None:
    """Run COMMAND (a team's own inference.py) and record it: its LLM calls through a local
    proxy at $API_BASE_URL, its stdout lines as episodes and steps, its env calls with
    --env-url. stdout is the command's, unchanged; exit code is the command's.

    \b
    tracer run -- python inference.py
    tracer run --env-url http://127.0.0.1:8000 -- python inference.py
    """
    from tracer.command import CommandError, CommandOptions, run_command

    options = CommandOptions(list(command), db_path, upstream=upstream, env_url=env_url,
                             env_vars=env_vars, port=port, env_port=env_port, seed=seed,
                             keep_vars=keep_vars, check=check)
    try:
        code, _ = run_command(options)
    except CommandError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise click.exceptions.Exit(exc.exit_code) from None
    raise click.exceptions.Exit(code)


@cli.command("list")
@db_option
@click.option("--limit", "-n", default=20, show_default=True, help="How many runs (0: all).")
@json_option
def list_(db_path: str, limit: int, as_json: bool) -> None:
    """List runs, newest first."""
    from tracer import queries

    with reading(db_path) as store:
        runs = queries.list_runs(store, limit or None)
    if as_json:
        return out_json(runs)
    table(
        ["id", "started", "tasks", "model", "episodes", "steps", "score", "status"],
        ([r["id"], when(r["started_at"]), clip(",".join(r["tasks"] or []), 30),
          clip(r["model"], 30), r["episodes"], r["steps"], num(r["score"]), r["status"]]
         for r in runs),
    )


@cli.command()
@db_option
@click.argument("run")
@click.option("--full", is_flag=True, help="Print prompts and completions whole, not clipped.")
@json_option
def show(db_path: str, run: str, full: bool, as_json: bool) -> None:
    """Show each episode and step of RUN (an id, a unique prefix, or 'latest')."""
    from tracer import queries

    with reading(db_path) as store:
        data = queries.show_run(store, queries.resolve_run(store, run))
    if as_json:
        return out_json(data)
    width = sys.maxsize if full else 200
    tasks = ",".join(data["tasks"] or [])
    out(f"run {data['id']}  {data['status']}  model {data['model'] or '-'}  "
        f"started {when(data['started_at'])}  tasks {tasks or '-'}")
    if data["replay_of"]:
        out(f"replay of {data['replay_of']}")
    if data.get("kind") == "command":
        import shlex

        out(f"command {shlex.join(data['command'] or [])}  in {data['cwd']}  "
            f"exit {'-' if data['exit_code'] is None else data['exit_code']}")
        source: dict[str, Any] = data["env_source"] or {}
        out("env " + {"proxied": f"{source.get('url')} (proxied: steps have the env's answers)",
                      "offline": "served from the recording"}.get(
            source.get("kind", ""), "not proxied (in-process, or reached directly): steps are "
                                "recorded from stdout and LLM traffic alone"))
    if data["error"]:
        out(f"error {clip(data['error'], width)}")
    for ep in data["episodes"]:
        out(f"\nepisode {ep['position']}  task {ep['task'] or '-'}  {ep['status']}  "
            f"success {flag(ep['success'])}  steps {ep['step_count']}  score {num(ep['score'])}")
        if ep["error"]:
            out(f"  error {clip(ep['error'], width)}")
        for s in ep["steps"]:
            out(f"  step {s['step']}  reward {num(s['reward'])}  done {flag(s['done'])}  "
                f"error {clip(s['error'], width)}  env {num(s['latency_ms'], 1)} ms")
            for call in s["llm_calls"]:
                _show_call(call, width)
            out(f"    action      {clip(s['action_text'], width)}")
        for call in ep["other_llm_calls"]:
            out(f"  llm call {call['position']} (step {call['step'] or '-'}, no env step)")
            _show_call(call, width)


def _show_call(call: dict[str, Any], width: int) -> None:
    out(f"    prompt      {clip(call['prompt'], width)}")
    out(f"    completion  {clip(call['completion'], width)}")
    tokens = f"{call['prompt_tokens'] or '-'}+{call['completion_tokens'] or '-'}"
    status = f"  http {call['status_code']}" if call["status_code"] not in (None, 200) else ""
    error = f"  error {clip(call['error'], width)}" if call["error"] else ""
    out(f"    llm         {num(call['latency_ms'], 1)} ms  tokens {tokens}{status}{error}")


@cli.command()
@db_option
@click.argument("run", required=False)
@click.option("--all", "all_runs", is_flag=True, help="Export every run, oldest first.")
@click.option("--format", "fmt",
              type=click.Choice(["jsonl", "log", "messages", "call-messages", "trace", "collect"]),
              default="jsonl", show_default=True,
              help="jsonl: one episode per line; log: stdout lines as printed; messages: one SFT "
                   "chat row per episode; call-messages: one chat row per LLM call; trace: one "
                   "{request, response} row per LLM call (TRL); collect: OpenEnv collect's "
                   "results.jsonl and metadata.json, into -o DIR.")
@click.option("-o", "--output", type=click.Path(), help="Write to FILE (DIR for collect), not stdout.")
def export(db_path: str, run: str | None, all_runs: bool, fmt: str, output: str | None) -> None:
    """Export RUN (or --all runs) as jsonl episodes, the stdout log, or training rows."""
    from tracer import export as exports
    from tracer import queries
    from tracer.store import strict_json

    if bool(run) == all_runs:
        raise click.UsageError("give one RUN or --all")
    if fmt == "collect":
        return _export_collect(db_path, run, all_runs, output)
    _not_the_database(output, db_path)
    rows = {"log": exports.log_lines, "messages": exports.message_rows,
            "call-messages": exports.call_message_rows, "trace": exports.trace_rows}
    with _output(output) as write, reading(db_path) as store:
        run_ids = (queries.all_run_ids(store) if all_runs
                   else [queries.resolve_run(store, cast(str, run))])
        for run_id in run_ids:
            items: Iterable[Any] = rows.get(fmt, exports.episode_records)(store, run_id)
            for item in items:
                write(item if isinstance(item, str) else strict_json(item))


def _export_collect(db_path: str, run: str | None, all_runs: bool, directory: str | None) -> None:
    """Write OpenEnv collect's layout: DIR/results.jsonl, then DIR/metadata.json."""
    from tracer import export as exports
    from tracer import queries
    from tracer.store import TraceError

    if directory is None:
        raise click.UsageError("--format collect writes a directory: give -o DIR")
    results, metadata = (os.path.join(directory, name) for name in ("results.jsonl", "metadata.json"))
    _not_the_database(results, db_path)
    with reading(db_path) as store:
        run_ids = (queries.all_run_ids(store) if all_runs
                   else [queries.resolve_run(store, cast(str, run))])
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise TraceError(f"{directory}: cannot create the directory ({exc.strerror})") from None
        collected = 0
        with _output(results) as write:
            for run_id in run_ids:
                for record in exports.collect_records(store, run_id):
                    write(json.dumps(record, ensure_ascii=False))
                    collected += 1
        about = exports.collect_metadata(store, run_ids, collected)
    with _output(metadata) as write:
        write(json.dumps(about, ensure_ascii=False, indent=2))


def _not_the_database(output: str | None, db_path: str) -> None:
    """Refuse an output file that is the database (or its WAL), by any name or link."""
    from tracer.store import TraceError

    for path in (db_path, f"{db_path}-wal", f"{db_path}-shm"):
        try:
            same = output is not None and os.path.samefile(output, path)
        except OSError:  # one of them does not exist
            continue
        if same:
            raise TraceError(f"{output}: is the trace database {db_path}; export to another file")


@contextmanager
def _output(path: str | None) -> Iterator[Any]:
    """Yield a line writer to stdout, or to ``path``.

    A regular file (or a new one) appears only if the export succeeds: it is written aside and
    renamed over ``path``. Anything else (a symlink, a device, a FIFO, ``/dev/stdout``) is
    written through, as ``>`` would: renaming over it would replace it with a file.
    """
    if path is None:
        yield out
        return
    import stat

    from tracer.store import TraceError

    try:
        whole_file = stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        whole_file = True
    except OSError as exc:
        raise TraceError(f"{path}: cannot write ({exc.strerror})") from None
    target = f"{path}.partial" if whole_file else path
    try:
        with open(target, "w", encoding="utf-8") as f:
            yield lambda line: out(line, file=f)
        if whole_file:
            os.replace(target, path)
    except BaseException as exc:
        if whole_file:
            with suppress(OSError):
                os.unlink(target)
        if isinstance(exc, OSError):  # no directory or permission, a full disk or device, ...
            raise TraceError(f"{path}: cannot write ({exc.strerror})") from None
        raise


@cli.command("import")
@db_option
@click.argument("file", type=click.Path(dir_okay=False))
def import_(db_path: str, file: str) -> None:
    """Import a jsonl export into the database, keeping run ids.

    Every line is checked against the schema before anything is written, and the import is one
    transaction. A run whose id is already in the database is skipped, with a message.
    """
    from tracer import export as exports
    from tracer.store import Store

    records = exports.read_jsonl(file)
    with naming(db_path):
        store = Store(db_path, secrets=secrets())
        try:
            result = exports.import_jsonl(store, records)
        finally:
            store.close()
    for run_id in result.skipped:
        click.echo(f"skipped run {run_id}: already in {db_path}", err=True)
    out(f"imported {len(result.imported)} run(s), {result.episodes} episode(s) into {db_path}")


@cli.command()
@click.argument("target", type=click.Path(dir_okay=False))
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False))
def merge(target: str, shards: tuple[str, ...]) -> None:
    """Merge the trace databases SHARDS into TARGET (created if missing), keeping run ids.

    Each shard goes in as one transaction; a run already in TARGET is skipped, so an
    interrupted merge can be run again. Two different runs with one id: exit 2, nothing merged.
    """
    from tracer.merge import merge as merge_databases
    from tracer.store import secrets_from_environ

    result = merge_databases(target, shards, secrets=secrets_from_environ())
    for run_id in result.skipped:
        click.echo(f"skipped run {run_id}: already in {target}", err=True)
    rows = result.rows
    out(f"merged {len(result.merged)} run(s), {rows.get('episodes', 0)} episode(s), "
        f"{rows.get('steps', 0)} step(s) from {len(shards)} shard(s) into {target}")


@cli.command()
@db_option
@click.argument("a")
@click.argument("b", required=False)
@json_option
def diff(db_path: str, a: str, b: str | None, as_json: bool) -> None:
    """Compare runs A and B step by step; exit 0 if the same, 1 if they differ.

    Without B, A must be a replay and is compared with the run it replayed.
    """
    from tracer import queries

    with reading(db_path) as store:
        a = queries.resolve_run(store, a)
        if b is None:
            b = queries.run_row(store, a)["replay_of"]
            if not b:
                raise click.UsageError(f"run {a} is not a replay: give the run to compare with")
        result = queries.diff_runs(store, a, queries.resolve_run(store, b))
    if as_json:
        out_json(result)
    else:
        out(f"a {result['a']}\nb {result['b']}")
        table(
            ["ep", "step", "a action", "b action", "a reward", "b reward", "a done", "b done",
             "differs"],
            ([row["position"], row["step"], *_pair(row, "action_text", lambda v: clip(v, 24)),
              *_pair(row, "reward", num), *_pair(row, "done", flag), ",".join(row["differs"])]
             for row in result["steps"]),
        )
        first = result["first_difference"]
        if first:
            out(f"first difference: episode {first['position']} step {first['step']}: "
                + ", ".join(first["differs"]))
        else:
            out(f"same: {len(result['steps'])} step(s) compared")
    raise click.exceptions.Exit(0 if result["same"] else 1)


def _pair(row: dict[str, Any], field: str, fmt: Any) -> list[str]:
    return [fmt(row[side][field]) if row[side] else "(none)" for side in ("a", "b")]


@cli.command()
@db_option
@click.argument("run", required=False)
@click.option("--all", "all_runs", is_flag=True,
              help="Replay every recorded run that is not itself a replay (see filters).")
@click.option("--task", help="With --all: only runs that have an episode of this task.")
@click.option("--since", metavar="ISO-TIME", callback=lambda ctx, param, value: _iso_time(value),
              help="With --all: only runs started at or after this (UTC unless it says).")
@click.option("--status", type=click.Choice(["completed", "failed", "interrupted"]),
              help="With --all: only runs that ended so.")
@click.option("--offline", is_flag=True, help="Serve the recorded env responses too: no env needed.")
@click.option("--env-url", metavar="URL", help="Replay against this running env server instead.")
@click.option("--lenient", is_flag=True, help="Go on by position when a request differs; report it.")
@click.option("--through-client", is_flag=True,
              help="With --offline: send every LLM call through the openai client, for when the "
                   "client is under test (default: answered from the recording, several times "
                   "faster; requests are checked either way).")
@click.option("--no-record", is_flag=True, help="Do not record the replay as a new run.")
@click.option("--workers", type=click.IntRange(min=1), metavar="N",
              help="With --all: replay in N processes, each recording into a shard merged into "
                   "the database at the end (default: the number of cores; 1: in this process).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None,
              metavar="[ADDRESS]",
              help="With --all: run the workers as Ray actors on the cluster at ADDRESS "
                   "(without one: a running local cluster, or a new local instance).")
@click.option("--cwd", type=click.Path(file_okay=False), metavar="DIR",
              help="Run a recorded command (tracer run) here, not where it was recorded.")
def replay(db_path: str, run: str | None, all_runs: bool, task: str | None, since: str | None,
           status: str | None, offline: bool, env_url: str | None, lenient: bool,
           no_record: bool, workers: int | None, ray_address: str | None,
           through_client: bool, cwd: str | None) -> None:
    """Re-run a recorded run with no LLM: stdout is the protocol log, stderr the report.

    Exit 0 when nothing diverged, 1 when something did, 2 for errors.
    """
    from tracer.queries import open_store, resolve_run
    from tracer.replay import check_env, check_run, describe, replay_run, select_runs

    if bool(run) == all_runs:
        fail("give one RUN id (or 'latest') or --all")
    if not all_runs and (task or since or status or workers or ray_address is not None):
        fail("--task, --since, --status, --workers and --ray go with --all")
    if through_client and not offline:
        fail("--through-client goes with --offline (a live replay always uses the client)")
    if ray_address is not None:
        from tracer.ray_workers import import_ray

        ray = import_ray()  # not installed: say how, before anything else
    with naming(db_path):
        store = open_store(db_path)
        for secret in secrets():  # what the replay records is redacted too
            store.add_secret(secret)
        run_ids = (select_runs(store, task, since, status) if all_runs
                   else [resolve_run(store, cast(str, run))])
        # Every run is checked (one at a time: memory stays bounded) before any is replayed,
        # so bad input stops the command before it writes anything.
        envs = {check_run(store, run_id, offline=offline, env_url=env_url, cwd=cwd)
                for run_id in run_ids}
    for env in sorted(e for e in envs if e is not None):
        check_env(*env)
    options: dict[str, Any] = {"offline": offline, "env_url": env_url, "lenient": lenient,
                               "record": not no_record, "emit": click.echo,
                               "through_client": through_client, "cwd": cwd}
    if not all_runs:
        with naming(db_path):
            one = replay_run(store, run_ids[0], **options)
        for line in describe(one):
            click.echo(line, err=True)
        raise click.exceptions.Exit(1 if one.diverged else 0)
    from tracer.workers import RunResult

    if ray_address is not None:
        from tracer.ray_workers import connect

        connect(ray, ray_address or None)
    interrupted = False
    with naming(db_path), click.progressbar(length=len(run_ids), label="replaying",
                                            file=sys.stderr) as bar:
        from tracer.store import secrets_from_environ
        from tracer.workers import Options

        fan_out: dict[str, Any] = {
            "on_result": lambda result: bar.update(1), "emit": click.echo,
            "note": lambda text: click.echo(text, err=True, nl=False)}
        settings = Options(offline, env_url, lenient, not no_record, secrets_from_environ(),
                           through_client)
        if ray_address is not None:
            from tracer.ray_workers import replay_in_ray

            store.close()
            results, interrupted = replay_in_ray(db_path, run_ids, settings, workers,
                                                 **fan_out)
        elif (workers := min(workers or os.cpu_count() or 1, len(run_ids))) > 1:
            from tracer.workers import replay_in_workers

            store.close()
            results, interrupted = replay_in_workers(db_path, run_ids, workers, settings,
                                                     **fan_out)
        else:
            results = []
            for run_id in run_ids:
                results.append(RunResult(run_id, replay_run(store, run_id, **options)))
                bar.update(1)
    for result in results:
        report = result.report
        if report is None:
            verdict = f"FAILED: {result.error}"
        else:
            verdict = f"DIVERGED: {report.first_divergence}" if report.diverged else "same"
        episodes = "  -" if report is None else f"{len(report.episodes):>3}"
        click.echo(f"{result.run_id}  {episodes} episode(s)  {verdict}", err=True)
    diverged = sum(r.report is not None and r.report.diverged for r in results)
    failed = sum(r.failed for r in results)
    fast = any(r.report is not None and r.report.from_recording for r in results)
    click.echo(f"{len(results)} run(s) replayed, {diverged} diverged"
               + (f", {failed} failed" if failed else "")
               + (" (LLM calls answered from the recording, not through the openai client)"
                  if fast else ""), err=True)
    if interrupted:
        raise click.Abort()
    raise click.exceptions.Exit(2 if failed else 1 if diverged else 0)


def _iso_time(value: str | None) -> str | None:
    """Return an ISO date/time as UTC in the form runs.started_at is stored, or exit 2."""
    import datetime as dt

    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since {value!r} is not an ISO date/time (for example 2025-01-31 or "
             "2025-01-31T12:00:00+02:00)")
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)  # runs are recorded in UTC
    try:
        return when.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first UTC time Python has
        fail(f"--since {value!r} is out of range: in UTC it is before year 1 or after year 9999")


@cli.command()
@db_option
@click.argument("runs", nargs=-1, metavar="[RUN [B]]")
@click.option("--all", "all_runs", is_flag=True, help="Score per task across every run.")
@click.option("--task", help="With --all: only this task.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write to FILE [default: run-RUN.html, diff-A-B.html or runs.html].")
def view(db_path: str, runs: tuple[str, ...], all_runs: bool, task: str | None,
         output: str | None) -> None:
    """Write one self-contained HTML page: a run, two runs side by side, or --all runs.

    A replay given alone is compared with the run it replayed. The page loads nothing from
    the network. Its path is printed on stderr.
    """
    from tracer import queries
    from tracer import view as pages
    from tracer.store import secrets_from_environ

    if all_runs == bool(runs) or len(runs) > 2:
        fail("give RUN, RUN B, or --all")
    if task and not all_runs:
        fail("--task filters --all")
    _not_the_database(output, db_path)
    secrets = secrets_from_environ()
    with reading(db_path) as store:
        ids = [queries.resolve_run(store, ref) for ref in runs]
        if len(ids) == 1 and queries.run_row(store, ids[0])["replay_of"]:
            ids.insert(0, queries.resolve_run(store, queries.run_row(store, ids[0])["replay_of"]))
        if all_runs:
            html, name = pages.runs_page(store, task, secrets), "runs"
        elif len(ids) == 2:
            html = pages.compare_page(store, ids[0], ids[1], secrets)
            name = f"diff-{ids[0]}-{ids[1]}"
        else:
            html, name = pages.run_page(store, ids[0], secrets), f"run-{ids[0]}"
    output = output or f"{name}.html"
    with _output(output) as write:
        write(html.rstrip("\n"))
    click.echo(f"{output}: {len(html.encode()) // 1024 + 1} KB", err=True)


@cli.command()
@db_option
@json_option
def stats(db_path: str, as_json: bool) -> None:
    """Count runs, episodes, steps and LLM calls; sum tokens; latency percentiles; per task."""
    from tracer import queries

    with reading(db_path) as store:
        data = queries.stats(store)
    if as_json:
        return out_json(data)
    out(f"runs {data['runs']}  episodes {data['episodes']}  steps {data['steps']}  "
        f"llm calls {data['llm_calls']}")
    t = data["tokens"]
    out(f"tokens  prompt {t['prompt']}  completion {t['completion']}  total {t['total']}\n")
    table(["latency ms", "count", "p50", "p90", "p99"],
          ([name.replace("_", " "), v["count"], num(v["p50"], 1), num(v["p90"], 1),
            num(v["p99"], 1)] for name, v in data["latency_ms"].items()))
    out()
    table(["task", "episodes", "steps", "mean score", "mean reward", "success"],
          ([r["task"], r["episodes"], r["steps"], num(r["mean_score"]), num(r["mean_reward"]),
            num(r["success_rate"])] for r in data["tasks"]))


@cli.command()
@click.option("--format", "fmt", default="jsonl", show_default=True,
              type=click.Choice(["jsonl", "messages", "call-messages", "trace", "collect",
                                 "collect-metadata"]),
              help="The export format whose rows the schema describes (collect-metadata: the "
                   "metadata.json of --format collect).")
def schema(fmt: str) -> None:
    """Print the JSON Schema of one row of an export (a jsonl line by default)."""
    from tracer.export import FORMAT_SCHEMAS, schema_path

    click.echo(schema_path(FORMAT_SCHEMAS.get(fmt, fmt)).read_text(encoding="utf-8"), nl=False)


if __name__ == "__main__":
    cli()
