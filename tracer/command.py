"""Recording any team's own script: ``tracer run -- CMD``.

The command runs unchanged. Its LLM calls reach a local proxy (``API_BASE_URL``), its env
calls optionally another (``ENV_BASE_URL``), and its stdout is teed: each line is recorded,
then passed on byte for byte. Protocol lines become ``episodes`` and ``steps`` rows, and each
LLM or env exchange is attached to the episode and step open when it began.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import urlsplit

from tracer.proxy import Slot, same_key
from tracer.sse import redact_stream
from tracer.store import MIN_SECRET_LENGTH, REDACTED, Store, TraceError, now, secrets_from_environ
from tracer.transport import Exchange, decode_body, request_hash

#: Variables that point a script at its LLM endpoint; each is set to the proxy.
LLM_URL_VARS = ("API_BASE_URL", "OPENAI_BASE_URL")
#: Variables that point a script at its env server; each is set to the env proxy.
ENV_URL_VARS = ("ENV_BASE_URL", "ENV_URL")
#: Variables real scripts read their key from.
KEY_VARS = ("HF_TOKEN", "API_KEY", "OPENAI_API_KEY")
#: What a script gets as its key when none is given (the stand-in and a replay check none),
#: in the contract's variables only: a script may act differently when OPENAI_API_KEY is set.
PLACEHOLDER_KEY = "tracer-placeholder-key"
PLACEHOLDER_VARS = ("HF_TOKEN", "API_KEY")
#: Settings scripts commonly read from the environment: recorded (never a key), and set again
#: on replay, so a replay runs as the recording did.
RECORDED_VARS = ("MODEL_NAME", "TASK_NAME", "TASKS", "TASK", "BENCHMARK", "MAX_STEPS",
                 "MAX_TOKENS", "TEMPERATURE", "SEED", "MODEL_PROVIDER", "LOCAL_IMAGE_NAME",
                 "IMAGE_NAME")
READ_SIZE = 1 << 16


def note(message: str) -> None:
    """Print one of tracer's own messages on stderr: stdout is the child's."""
    print(f"tracer: {message}", file=sys.stderr, flush=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _integer(text: str | None) -> int | None:
    return int(text) if text is not None and re.fullmatch(r"[0-9]{1,18}", text) else None


def _flag(text: str | None) -> bool | None:
    return {"true": True, "false": False, "1": True, "0": False}.get((text or "").lower())


@dataclass
class EpisodeState:
    """An episode being printed: its row, its steps so far, its LLM call positions."""

    id: int | None
    position: int
    task: str
    steps: int = 0
    llm_calls: int = 0
    ended: bool = False
    score: float | None = None


@dataclass
class Tally:
    """What the grader checks need, counted as the run goes."""

    llm_calls: int = 0
    failed_calls: list[tuple[str, int]] = field(default_factory=list)  # (request hash, #)
    recovered: set[str] = field(default_factory=set)
    keys_given: int = 0
    keys_other: int = 0
    keys_missing: int = 0
    step_lines: int = 0
    env_exchanges: int = 0
    env_failed: int = 0
    other_lines: int = 0


class CommandRecorder:
    """Records one command run; thread-safe (stdout is read in one thread, proxies in another).

    With ``store=None`` nothing is written, but lines are still parsed for the checks.
    A failing write is reported once and stops recording; the command goes on.
    """

    def __init__(self, store: Store | None, given_keys: Iterable[str] = ()):
        self.store = store
        self.given_keys = [k for k in given_keys if k]
        self.run_id: str | None = None
        self.lock = threading.RLock()
        self.episodes: list[EpisodeState] = []
        self.episode: EpisodeState | None = None
        self.outside_calls = 0  # LLM calls made outside any episode
        self.env_position = 0
        self.env_steps: deque[dict[str, Any]] = deque()  # env step exchanges not yet printed
        self.tally = Tally()
        self.tasks: list[str] = []
        self.model: str | None = None
        self.sync: Callable[[], None] = lambda: None  # takes in stdout printed so far
        self.lines: list[str] = []  # as printed (secrets redacted), for a replay's comparison
        self.env_answers: dict[tuple[int, int], dict[str, Any]] = {}  # (episode, step): env step

    # -- writing ----------------------------------------------------------------------

    def _write(self, operation: Callable[[Store], Any]) -> Any:
        if self.store is None:
            return None
        try:
            return operation(self.store)
        except (sqlite3.Error, TraceError, OSError) as exc:
            note(f"recording stopped, could not write to {self.store.path}: {exc}")
            self.store = None
            return None

    def start(self, **fields: Any) -> str | None:
        """Record the start of the run; return its id (None when not recording)."""
        self.run_id = self._write(lambda s: s.start_run(**fields))
        return self.run_id

    def redact_text(self, text: str) -> str:
        return self.store.redact(text) if self.store is not None else text

    # -- stdout -----------------------------------------------------------------------

    def on_lines(self, lines: list[str]) -> None:
        """Record a batch of stdout lines (without newlines) and what they say, at once."""
        with self.lock:
            if self.store is None or not self.run_id:
                for line in lines:
                    self._parse(line, None)
                return
            self._write(lambda store: self._record_lines(store, lines))

    def _record_lines(self, store: Store, lines: list[str]) -> None:
        with store.transaction():
            for line in lines:
                self._parse(line, store)
            if self._tasks_changed:
                store.update_run(cast(str, self.run_id), tasks=self.tasks, model=self.model)
                self._tasks_changed = False

    _tasks_changed = False

    def _parse(self, line: str, store: Store | None) -> None:
        from validator.lines import read_fields

        self.lines.append(line)
        read = read_fields(line.rstrip("\r"), anywhere=True)
        kind, values = read if read else (None, {})
        if kind == "START":
            self._end_unfinished("a new [START] came before its [END]")
            task = values.get("task") or "?"
            position = len(self.episodes) + 1
            episode_id = store.start_episode(
                cast(str, self.run_id), position, task=task, benchmark=values.get("env"),
                model=values.get("model")) if store else None
            self.episode = EpisodeState(episode_id, position, task)
            self.episodes.append(self.episode)
            self.tasks.append(task)
            self.model = self.model or values.get("model")
            self._tasks_changed = True
        episode = self.episode
        if store:
            store.record_line(cast(str, self.run_id), episode.id if episode else None, line)
        if kind == "STEP":
            self.tally.step_lines += 1
            if episode is None:
                return
            episode.steps += 1
            env = self._env_step_for(episode)
            if env:
                self.env_answers[(episode.position, episode.steps)] = env
            if store and episode.id:
                error = values.get("error")
                # The env's own reward and done when it was proxied; else what was printed.
                reward = env.get("reward") if _is_number(env.get("reward")) else _number(
                    values.get("reward"))
                done = env["done"] if isinstance(env.get("done"), bool) else _flag(
                    values.get("done"))
                store.record_step(
                    cast(str, self.run_id), episode.id,
                    step=_integer(values.get("step")) or episode.steps,
                    action_text=values.get("action"), action=env.get("action"),
                    observation=env.get("observation"), reward=reward, done=done,
                    error=None if error in (None, "null", "None", "") else error,
                    latency_ms=env.get("latency_ms"), started_at=env.get("started_at") or now())
        elif kind == "END" and episode is not None:
            rewards = [_number(r) for r in (values.get("rewards") or "").split(",") if r]
            episode.ended, episode.score = True, _number(values.get("score"))
            if store and episode.id:
                store.update_episode(
                    episode.id, ended_at=now(), status="completed",
                    success=_flag(values.get("success")),
                    steps=_integer(values.get("steps")) or episode.steps,
                    score=episode.score, rewards=rewards)
            self.episode = None
        elif kind is None:
            self.tally.other_lines += 1

    def _env_step_for(self, episode: EpisodeState) -> dict[str, Any]:
        """Return the oldest env step taken in this episode (or before any), not yet printed;
        one taken in an earlier episode that printed no [STEP] for it is dropped."""
        while self.env_steps:
            env = self.env_steps.popleft()
            if env["episode"] in (None, episode.position):
                return env
        return {}

    def _end_unfinished(self, why: str, status: str = "failed") -> None:
        episode = self.episode
        if episode is None:
            return
        self.episode = None
        if self.store is not None and episode.id:
            self._write(lambda s: s.update_episode(cast(int, episode.id), ended_at=now(),
                                                   status=status, steps=episode.steps, error=why))

    # -- LLM proxy --------------------------------------------------------------------

    def note_key(self, key: str | None) -> None:
        """Count how a call was keyed; a key other than the given ones is redacted too."""
        with self.lock:
            if key is None:
                self.tally.keys_missing += 1
            elif same_key(key, self.given_keys):
                self.tally.keys_given += 1
            else:
                self.tally.keys_other += 1
                if (self.store is not None and key != PLACEHOLDER_KEY
                        and len(key) >= MIN_SECRET_LENGTH):
                    self.store.add_secret(key)

    def llm_slot(self) -> Slot:
        """Return where an LLM call that begins now belongs."""
        self.sync()
        with self.lock:
            episode = self.episode
            if episode is None:
                self.outside_calls += 1
                return Slot(None, None, self.outside_calls, now())
            episode.llm_calls += 1
            return Slot(episode.id, episode.steps + 1, episode.llm_calls, now(), episode.position)

    def record_llm(self, slot: Slot, exchange: Exchange) -> None:
        """Record one LLM exchange as ``inference.py`` records it."""
        with self.lock:
            self.tally.llm_calls += 1
            digest = request_hash(exchange.request)
            failed = exchange.error is not None or (exchange.status_code or 0) >= 400
            if failed:
                self.tally.failed_calls.append((digest, self.tally.llm_calls))
            else:
                self.tally.recovered.add(digest)
            if self.store is None or not self.run_id:
                return
            response = exchange.response
            if exchange.stream and isinstance(response, str):
                response = redact_stream(response, self.store.secrets, REDACTED)
            row = dict(run_id=self.run_id, episode_id=slot.episode_id, step=slot.step,
                       position=slot.position, method=exchange.method, url=exchange.url,
                       request_hash=digest, request=exchange.request,
                       status_code=exchange.status_code, response=response,
                       stream=int(exchange.stream), latency_ms=round(exchange.latency_ms, 3),
                       error=exchange.error, started_at=slot.started_at)
            self._write(lambda s: s.record_llm_call(**row))

    # -- env proxy --------------------------------------------------------------------

    def env_slot(self) -> Slot:
        self.sync()
        with self.lock:
            self.env_position += 1
            episode = self.episode
            return Slot(episode.id if episode else None,
                        episode.steps + 1 if episode else None, self.env_position, now(),
                        episode.position if episode else None)

    def record_env(self, slot: Slot, *, session: int | None, method: str, path: str,
                   request: Any, status_code: int | None, response: str | None,
                   latency_ms: float, error: str | None) -> None:
        """Record one env exchange (its answer as the exact text sent back); a step's answer
        waits for its [STEP] line."""
        parsed = decode_body(response.encode()) if response is not None else None
        with self.lock:
            self.tally.env_exchanges += 1
            if error or (status_code or 0) >= 500 or (
                    isinstance(parsed, dict) and parsed.get("type") == "error"):
                self.tally.env_failed += 1
            step = _env_step(method, path, request, parsed)
            if step is not None:
                self.env_steps.append({**step, "latency_ms": latency_ms,
                                       "started_at": slot.started_at, "episode": slot.episode})
            if self.store is None or not self.run_id:
                return
            row = dict(run_id=self.run_id, episode_id=slot.episode_id, step=slot.step,
                       position=slot.position, session=session, method=method, path=path,
                       request=request, status_code=status_code, response=response,
                       latency_ms=latency_ms, error=error, started_at=slot.started_at)
            self._write(lambda s: s.insert_rows([("env_messages", row)]))

    # -- the end ----------------------------------------------------------------------

    def finish(self, status: str, exit_code: int, error: str | None,
               checks: dict[str, Any] | None) -> None:
        with self.lock:
            self._end_unfinished("the command ended before the episode's [END]",
                                 "interrupted" if status == "interrupted" else "failed")
            if self.run_id:
                self._write(lambda s: s.update_run(cast(str, self.run_id), checks=checks))
                self._write(lambda s: s.finish_run(cast(str, self.run_id), status, exit_code,
                                                   error))


def _env_step(method: str, path: str, request: Any, response: Any) -> dict[str, Any] | None:
    """Return the action and what the env answered, when an exchange is an env step."""
    if method == "WS" and isinstance(request, dict) and request.get("type") == "step":
        data = response.get("data") if isinstance(response, dict) else None
        action = request.get("data")
    elif method == "POST" and path.rstrip("/").endswith("/step"):
        data = response
        action = request.get("action", request) if isinstance(request, dict) else request
    else:
        return None
    data = data if isinstance(data, dict) else {}
    return {"action": action, "observation": data.get("observation"),
            "reward": data.get("reward"), "done": data.get("done")}


# -- running the command --------------------------------------------------------------


@dataclass
class CommandOptions:
    """How ``tracer run`` runs a command."""

    argv: list[str]
    db_path: str | None
    upstream: str | None = None
    env_url: str | None = None
    env_vars: tuple[str, ...] = ()
    port: int = 0
    env_port: int = 0
    seed: int | None = None
    keep_vars: tuple[str, ...] = ()  # more variables to record (their values) for a replay
    variables: dict[str, str] | None = None  # a replay: the recorded variables, set again
    key_variables: list[str] | None = None  # a replay: the key variables the recording had
    check: bool = False
    cwd: str | None = None
    replay_of: str | None = None


class CommandError(Exception):
    """The command cannot be run; ``exit_code`` follows the shell (126, 127) or is 2."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def resolve_command(argv: list[str], cwd: str | None = None) -> str:
    """Return the program ``argv[0]`` names, or raise ``CommandError`` saying why not."""
    if not argv:
        raise CommandError("no command given: tracer run -- CMD [ARGS...]")
    program = argv[0]
    if os.sep in program:
        path = Path(cwd or ".", program)
        if not path.exists():
            raise CommandError(f"{program}: no such file", 127)
        if path.is_dir() or not os.access(path, os.X_OK):
            raise CommandError(f"{program}: not an executable file", 126)
        return str(path)
    found = shutil.which(program)
    if found is None:
        raise CommandError(f"{program}: command not found", 127)
    return found


def upstream_for(options: CommandOptions, environ: dict[str, str]) -> str | None:
    """Return where LLM calls go: --upstream, the caller's API_BASE_URL, the default
    router when a key is set, or None (the local stand-in model)."""
    from tracer.config import DEFAULT_API_BASE_URL

    if options.upstream:
        return options.upstream
    for name in LLM_URL_VARS:
        if environ.get(name, "").strip():
            return environ[name].strip()
    if any(environ.get(k, "").strip() for k in KEY_VARS):
        return DEFAULT_API_BASE_URL
    return None


def given_keys(environ: dict[str, str]) -> list[str]:
    return [environ[k].strip() for k in KEY_VARS if environ.get(k, "").strip()]


class Tee:
    """Reads a child's pipe; hands each batch of complete lines on, then writes them out.

    ``drain()`` takes in whatever the pipe holds right now: the proxies call it before
    placing an exchange, because a script that printed ``[STEP] 2`` and then called its LLM
    has the line in the pipe before the request reaches the proxy.
    """

    def __init__(self, pipe: IO[bytes], out: IO[bytes], secrets: Callable[[], list[str]],
                 on_lines: Callable[[list[str]], None] | None = None,
                 on_bytes: Callable[[bytes], None] | None = None):
        self.pipe, self.out, self.secrets = pipe, out, secrets
        self.on_lines, self.on_bytes = on_lines, on_bytes
        self.out_failed = False
        self.lock = threading.Lock()
        self.tail = b""
        self.eof = False
        self.fd = pipe.fileno()
        os.set_blocking(self.fd, False)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Tee:
        self.thread.start()
        return self

    def _run(self) -> None:
        import select

        while not self.eof:
            select.select([self.fd], [], [])
            self.drain()
        self.pipe.close()

    def drain(self) -> None:
        """Read and pass on what the pipe holds now, without waiting for more."""
        with self.lock:
            if self.eof:
                return
            data = self.tail
            while True:
                try:
                    chunk = os.read(self.fd, READ_SIZE)
                except BlockingIOError:
                    break
                if not chunk:
                    self.eof = True
                    break
                data += chunk
            cut = len(data) if self.eof else data.rfind(b"\n") + 1
            self.tail = data[cut:]
            if cut:
                self._pass(data[:cut])

    def _pass(self, data: bytes) -> None:
        for secret in self.secrets():
            data = data.replace(secret.encode(), REDACTED.encode())
        if self.on_lines is not None:
            text = data.decode("utf-8", "replace")
            self.on_lines(text[:-1].split("\n") if text.endswith("\n") else text.split("\n"))
        if self.on_bytes is not None:
            self.on_bytes(data)
        if self.out_failed:
            return
        try:
            self.out.write(data)
            self.out.flush()
        except (OSError, ValueError):
            self.out_failed = True  # our reader went away: go on recording

    def join(self) -> None:
        self.thread.join()


def child_environ(environ: dict[str, str], options: CommandOptions, llm_url: str,
                  env_proxy_url: str | None, placeholders: Iterable[str] = ()
                  ) -> tuple[dict[str, str], list[str]]:
    """Return the child's environment and the names of the variables tracer set in it."""
    child = dict(environ)
    names = [*LLM_URL_VARS, "PYTHONUNBUFFERED"]
    for name in LLM_URL_VARS:
        child[name] = llm_url
    child["PYTHONUNBUFFERED"] = "1"  # lines and LLM calls interleave as they happened
    if env_proxy_url:
        for name in (*ENV_URL_VARS, *options.env_vars):
            child[name] = env_proxy_url
            names.append(name)
    for name in placeholders:  # scripts crash without a key; the stand-in and a replay check none
        if not child.get(name, "").strip():
            child[name] = PLACEHOLDER_KEY
            names.append(name)
    for name, value in (options.variables or {}).items():  # a replay: as recorded
        if child.get(name) != value:
            if name in child:
                note(f"{name}: the recorded value {value!r} is used, not {child[name]!r}")
            child[name] = value
            names.append(name)
    if options.seed is not None:
        from tracer.seeding import seed_environ

        names += seed_environ(child, options.seed)
    return child, list(dict.fromkeys(names))


def recorded_variables(environ: dict[str, str], keep: Iterable[str] = ()) -> dict[str, Any]:
    """Return what a replay needs of the caller's environment: the values of the variables
    scripts read their settings from (never a key), and the names of the key variables set."""
    names = [*RECORDED_VARS, *keep]
    return {"variables": {n: environ[n] for n in names if n in environ and n not in KEY_VARS},
            "key_variables": [k for k in KEY_VARS if environ.get(k, "").strip()]}


def _proxy_base(upstream: str | None) -> str:
    """The proxy serves under the upstream's own path (``/v1``), so scripts that append to
    the base, or strip from it, reach the same upstream path they would without tracer."""
    path = urlsplit(upstream).path.rstrip("/") if upstream else "/v1"
    return path


class _Signals:
    """Passes SIGINT/SIGTERM on to the child once it runs (at once if one came before)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.child: subprocess.Popen | None = None
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received.append(signum)
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        if self.child is not None:
            try:
                self.child.send_signal(signum)
            except ProcessLookupError:
                pass

    def started(self, child: subprocess.Popen) -> None:
        self.child = child
        for signum in self.received:
            self._forward(signum)

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def run_command(options: CommandOptions, *, environ: dict[str, str] | None = None,
                responder: Any = None, env_responder: Any = None,
                stdout: IO[bytes] | None = None, checks: bool = True,
                ) -> tuple[int, CommandRecorder]:
    """Run the command with its LLM (and env) traffic and stdout recorded; return its exit
    code (or 1 when ``check`` is set, a check failed and it exited 0) and the recorder.

    ``responder``/``env_responder`` answer from a recording instead of forwarding (replay).
    """
    from tracer.checks import grader_checks, print_checks
    from tracer.envproxy import create_env_proxy
    from tracer.proxy import create_llm_proxy
    from tracer.recorder import versions
    from tracer.servers import BackgroundServer
    from validator.check import Checker

    environ = dict(os.environ if environ is None else environ)
    cwd = options.cwd or os.getcwd()
    program = resolve_command(options.argv, cwd)
    keys = given_keys(environ)
    upstream = None if responder else upstream_for(options, environ)
    # The caller's keys too: a replay gives the command none, but what it records is redacted.
    secrets = secrets_from_environ({**os.environ, **environ})  # too short to be a key: left
    store = None
    if options.db_path:
        try:
            store = Store(options.db_path, secrets=secrets)
        except (TraceError, OSError, sqlite3.Error) as exc:
            note(f"nothing will be recorded: {exc}")
    recorder = CommandRecorder(store, keys)
    checker = Checker("<stdout>", "openenv", False, False)
    signals = _Signals()  # before anything starts: a Ctrl-C now still ends cleanly
    with ExitStack() as stack:
        stack.callback(signals.restore)
        if responder is None and upstream is None:
            from tracer.standin import STANDIN_MODEL, create_standin_app

            standin = stack.enter_context(BackgroundServer(create_standin_app(), "stand-in model"))
            note(f"no API_BASE_URL and no key: the local stand-in model '{STANDIN_MODEL}' "
                 "answers, not a real LLM (--upstream URL to use one)")
            target: str | None = standin.url + "/v1"
        else:
            target = upstream
        base = _proxy_base(upstream)
        llm_app = create_llm_proxy(recorder, base_path=base, upstream=target, responder=responder)
        llm_url = _serve(stack, llm_app, "LLM proxy", options.port)
        env_proxy_url = None
        if options.env_url or env_responder:
            env_app = create_env_proxy(recorder, upstream=(options.env_url or "").rstrip("/"),
                                       responder=env_responder)
            env_proxy_url = _serve(stack, env_app, "env proxy", options.env_port)
        placeholders: Iterable[str] = ()
        if responder is not None or not keys:
            placeholders = options.key_variables or PLACEHOLDER_VARS
            if responder is None:
                note(f"no key set: the command gets '{PLACEHOLDER_KEY}' in "
                     f"{' and '.join(placeholders)}")
        child_env, names = child_environ(environ, options, llm_url + base, env_proxy_url,
                                         placeholders)
        source = ({"kind": "offline"} if env_responder else
                  {"kind": "proxied", "url": options.env_url} if options.env_url else
                  {"kind": "not proxied"})
        run_id = recorder.start(
            kind="command", command=options.argv, cwd=cwd, env_vars=names,
            upstream_url=upstream, env_url=options.env_url, api_base_url=upstream,
            env_source=source, versions=versions(), seed=options.seed,
            replay_of=options.replay_of, tasks=[],
            config={**recorded_variables(environ if options.variables is None else child_env,
                                         options.keep_vars),
                    "env_url_vars": list(options.env_vars), "env_port": options.env_port})
        if run_id:
            note(f"recording run {run_id} into {options.db_path}")
        try:
            child = subprocess.Popen([program, *options.argv[1:]], cwd=cwd, env=child_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)  # signals reach it from us only
        except OSError as exc:
            recorder.finish("failed", 126, f"could not start: {exc.strerror or exc}", None)
            raise CommandError(f"{options.argv[0]}: could not start ({exc.strerror or exc})",
                               126) from None
        signals.started(child)
        assert child.stdout is not None and child.stderr is not None  # both are pipes
        current = lambda: store.secrets if store is not None else secrets
        tees = [Tee(child.stdout, stdout or sys.stdout.buffer, current, recorder.on_lines,
                    checker.feed).start(),
                Tee(child.stderr, sys.stderr.buffer, current).start()]
        recorder.sync = tees[0].drain
        returncode = child.wait()
        for tee in tees:
            tee.join()
        exit_code = returncode if returncode >= 0 else 128 - returncode
        report = checker.close()
        verdicts = grader_checks(recorder, report, keyed=bool(keys) and responder is None,
                                 env_proxied=bool(options.env_url) and env_responder is None)
        if checks:
            print_checks(verdicts, report)
        error: str | None
        if signals.received:
            status, error = "interrupted", f"interrupted by signal {signals.received[0]}"
        elif returncode < 0:
            status, error = "failed", f"killed by signal {-returncode}"
        else:
            status, error = ("completed", None) if returncode == 0 else (
                "failed", f"exited with code {returncode}")
        recorder.finish(status, exit_code, error, verdicts)
        if store is not None:
            store.close()
    if options.check and exit_code == 0 and not all(c["ok"] for c in verdicts["checks"]):
        return 1, recorder
    return exit_code, recorder


def _serve(stack: ExitStack, app: Any, name: str, port: int) -> str:
    """Serve ``app`` on 127.0.0.1 for the rest of the run; return its URL."""
    from tracer.servers import BackgroundServer

    try:
        return stack.enter_context(BackgroundServer(app, name, port=port)).url
    except OSError as exc:
        raise CommandError(f"cannot listen on 127.0.0.1:{port} for the {name} "
                           f"({exc.strerror or exc})") from None
