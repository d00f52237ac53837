"""The trace database: opening, migrating, and every write, with secrets redacted.

Every row goes through ``Store.insert_rows``/``Store._update``, which encode it as
``tracer.tables`` describes, redact secrets and commit at once (WAL, ``BEGIN IMMEDIATE``, a busy timeout), so a crash loses nothing already
written and several processes can record into one file.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import secrets as _secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tracer.checkpoint import Checkpointer
from tracer.hidden_imports import hidden

# sqlite-utils imports pandas and numpy when installed (gradio, an OpenEnv dependency,
# installs them) only to map their types on insert, which we never do: 0.4 s of every start.
with hidden("pandas", "numpy"):
    import sqlite_utils

from tracer.migrations import MIGRATIONS, MIGRATIONS_TABLE
from tracer.processes import process_identity
from tracer.tables import dumps, encode

REDACTED = "[REDACTED]"
SECRET_ENV_VARS = ("HF_TOKEN", "API_KEY", "OPENAI_API_KEY")
MIN_SECRET_LENGTH = 8  # real keys are 20+ characters; shorter values are placeholders
BUSY_TIMEOUT_MS = 30_000
WAL_CHECKPOINT_PAGES = 4000


class TraceError(Exception):
    """A problem the CLI reports in one line and exits 2 for."""


def now() -> str:
    """Return the current UTC time as ISO 8601 with microseconds."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def new_run_id() -> str:
    """Return a new run id that sorts by creation time (ms timestamp + random)."""
    return f"{int(time.time() * 1000):012x}{_secrets.token_hex(4)}"


def secrets_from_environ(
    environ: Mapping[str, str] | None = None, *, api_key: str | None = None
) -> list[str]:
    """Return the secret values to redact: HF_TOKEN, API_KEY, ... and ``api_key`` if given.

    A value shorter than ``MIN_SECRET_LENGTH`` is a placeholder (``HF_TOKEN=x``), not a key:
    redacting it would change every ``x`` of the record and of stdout, so it is left alone,
    and said on stderr (call this once per process or run).
    """
    environ = os.environ if environ is None else environ
    named = [(k, environ.get(k, "")) for k in SECRET_ENV_VARS]
    if api_key and api_key not in (v for _, v in named):
        named.append(("the API key", api_key))
    for name, value in named:
        if value and len(value) < MIN_SECRET_LENGTH:
            print(
                f"tracer: {name} is shorter than {MIN_SECRET_LENGTH} characters: taken for a "
                "placeholder, not a key, and not redacted",
                file=sys.stderr,
                flush=True,
            )
    return [value for _, value in named if len(value) >= MIN_SECRET_LENGTH]


def strict_json(value: Any, **options: Any) -> str:
    """Return ``value`` as JSON any parser reads: NaN and infinities, which Python writes
    bare (an env may send them), become the strings "NaN", "Infinity" and "-Infinity"."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, **options)
    except ValueError:  # rare: walk the value only then
        return json.dumps(_finite(value), ensure_ascii=False, allow_nan=False, **options)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """Return ``value`` (text, bytes, or JSON-able data as JSON text) with each secret replaced:
    the one redaction of everything recorded, exported or printed."""
    if isinstance(value, (dict, list)):
        value = dumps(value)
    if isinstance(value, bytes):  # a child's stdout, passed on as it came
        for secret in secrets:
            if secret and secret.encode() in value:
                value = value.replace(secret.encode(), REDACTED.encode())
    elif isinstance(value, str):
        for secret in secrets:
            if secret and secret in value:
                value = value.replace(secret, REDACTED)
    return value


class Store:
    """A trace database file, migrated to the current schema."""

    def __init__(
        self, path: str | os.PathLike, *, secrets: Iterable[str] = (), create: bool = True
    ):
        """Open (``create``: create and migrate) a trace database.

        An existing file (``create=False``) is opened read-only, so reading it changes
        nothing, not even a WAL left by a killed writer; the first write reopens it."""
        if str(path) == ":memory:":
            raise TraceError(f"{path}: SQLite's in-memory database keeps nothing; give a file")
        self.path = Path(path)
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._insert_sql: dict[tuple, str] = {}
        self._depth = 0  # transactions open; inner ones join the outermost
        self._copy: tempfile.TemporaryDirectory | None = None  # see _read_only_uri
        self._checkpointer = Checkpointer(self.path, BUSY_TIMEOUT_MS / 1000)
        # To write, an existing path must be a file too: SQLite would wait on a FIFO forever.
        if not create or (self.path.exists() and not self.path.is_file()):
            _check_existing(self.path)
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TraceError(
                    f"{self.path}: cannot create its directory ({exc.strerror}: {exc.filename})"
                ) from None
        self._open(writable=create)

    def _open(self, writable: bool) -> None:
        # Processes that create one new file at once can find it locked with no wait (SQLite
        # gives up at once where waiting would deadlock; 3 of ~50 runs of the four processes of
        # test_several_processes_record_into_one_file_and_lose_nothing, here): each
        # such one lets go of the file and tries again, until the busy timeout.
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                return self._open_once(writable)
            except _Locked:
                if time.monotonic() > deadline:
                    raise TraceError(
                        f"{self.path}: cannot open the database (database is locked)"
                    ) from None
                time.sleep(0.01 + random.random() * 0.04)

    def _open_once(self, writable: bool) -> None:
        conn = None
        try:
            conn = self._connect(writable)
            self.db = sqlite_utils.Database(conn)
            self.writable = writable
            self._migrate(write=writable)
            if writable:  # only once the file is known to be a trace database
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                # Checkpoints are made in a thread (tracer.checkpoint); this one, every 4,000
                # pages, not SQLite's 1,000, is the backstop: a step writes 8 pages, mostly the
                # same ones, so a checkpoint copies each once for 4x as many steps. The WAL
                # then grows to 16 MB at most; past a checkpoint it is cut back to that.
                conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
                conn.execute(f"PRAGMA journal_size_limit={WAL_CHECKPOINT_PAGES * 4096}")
        except sqlite3.OperationalError as exc:  # no permission, a read-only directory, ...
            if "locked" in str(exc):
                if conn is not None:
                    conn.close()
                raise _Locked() from None
            raise TraceError(f"{self.path}: cannot open the database ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise TraceError(f"{self.path}: not a trace database ({exc})") from None

    def _connect(self, writable: bool) -> sqlite3.Connection:
        options: dict[str, Any] = dict(
            isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
        )
        if writable:
            if self.path.exists() and not os.access(self.path, os.W_OK):
                # SQLite would open it read-only without a word, and fail at the first write
                raise TraceError(f"{self.path}: cannot write (no permission to write the file)")
            conn = sqlite3.connect(self.path, **options)
        else:
            conn = sqlite3.connect(self._read_only_uri(), uri=True, **options)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return conn

    def _read_only_uri(self) -> str:
        """Return the URI that reads the database as it is, whoever writes it meanwhile.

        ``mode=ro`` reads the -wal and takes SQLite's locks, so a writer may commit and
        checkpoint while we read; it needs a -shm file, which it makes (with an empty -wal)
        where the directory lets it. Where it does not (read-only media), a database with no
        -wal is read ``immutable``: nothing can be writing it. A -wal with no -shm there is
        read from a private copy of the two files, so its rows are not lost.
        """
        wal, shm = Path(f"{self.path}-wal"), Path(f"{self.path}-shm")
        if os.access(self.path.parent, os.W_OK) or (wal.exists() and shm.exists()):
            return f"{self.path.absolute().as_uri()}?mode=ro"
        if not wal.exists():
            return f"{self.path.absolute().as_uri()}?immutable=1"
        if self._copy is None:
            self._copy = tempfile.TemporaryDirectory(prefix="tracer-")
            try:
                for source in (self.path, wal):
                    shutil.copyfile(source, Path(self._copy.name, source.name))
            except OSError as exc:
                raise TraceError(f"{self.path}: cannot read ({exc.strerror})") from None
        return f"{Path(self._copy.name, self.path.name).as_uri()}?mode=ro"

    # -- schema -----------------------------------------------------------------------

    def _applied(self) -> list[str]:
        if not self.db[MIGRATIONS_TABLE].exists():
            return []
        return [r["name"] for r in self.db.query(f"select name from [{MIGRATIONS_TABLE}]")]

    def _migrate(self, write: bool) -> None:
        known = [m.__name__ for m in MIGRATIONS]
        applied = self._applied()
        unknown = [name for name in applied if name not in known]
        if unknown:
            raise TraceError(
                f"{self.path}: written by a newer openenv-tracer (schema {unknown[-1]}); upgrade"
            )
        if len(applied) == len(known):
            return
        if not write:
            raise TraceError(f"{self.path}: not a trace database (no tracer schema)")
        with self.transaction():
            applied = self._applied()  # another process may have migrated meanwhile
            if not applied and self.db.table_names():
                # Someone else's SQLite file: refused before anything in it changes.
                raise TraceError(f"{self.path}: not a trace database (no tracer schema)")
            for migration in MIGRATIONS:
                if migration.__name__ not in applied:
                    migration(self.db)
                    self.db.table(MIGRATIONS_TABLE).insert(
                        {"name": migration.__name__, "applied_at": now()}, pk="name"
                    )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block in one write transaction, taken up front so it never deadlocks.

        A transaction opened inside another joins it: the outermost one commits."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        if not self.writable:  # opened for reading: the first write reopens it for writing
            self.db.conn.close()
            self._open(writable=True)
        self.db.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self.db.conn.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0
        self.db.conn.execute("COMMIT")
        self._checkpointer.committed()

    # -- writes -----------------------------------------------------------------------

    def redact(self, value: Any) -> Any:
        """Return ``value`` with every known secret replaced by ``[REDACTED]``."""
        return redact(value, self.secrets)

    def add_secret(self, secret: str) -> None:
        """Redact ``secret`` too from now on (a key first seen in a request header)."""
        if secret and secret not in self.secrets:
            self.secrets = sorted({*self.secrets, secret}, key=len, reverse=True)

    def insert_rows(self, rows: list[tuple[str, dict[str, Any]]]) -> list[int]:
        """Insert ``(table, row)`` pairs in one committed transaction; return their rowids.

        Plain prepared INSERTs: sqlite-utils' ``insert`` inspects the table on every call
        (about seven statements a row), which made recording cost 2.3x as much.
        """
        ids: list[int] = []
        with self.transaction():
            execute = self.db.conn.execute
            for table, row in rows:
                row = encode(table, row)  # JSON columns as JSON, token counts computed
                key = (table, *row)
                sql = self._insert_sql.get(key)
                if sql is None:
                    columns = ", ".join(f"[{c}]" for c in row)
                    sql = self._insert_sql[key] = (
                        f"insert into [{table}] ({columns}) values ({', '.join('?' * len(row))})"
                    )
                ids.append(execute(sql, self._redacted(row.values())).lastrowid)  # type: ignore[arg-type]  # an INSERT's is an int
        return ids

    def _redacted(self, values: Iterable[Any]) -> list[Any]:
        """Return a row's encoded values (``tables.encode``) with every secret replaced.

        It runs on every value of every row recorded: only text can hold a secret."""
        secrets = self.secrets
        if not secrets:
            return list(values)
        return [redact(value, secrets) if isinstance(value, str) else value for value in values]

    def delete_row(self, table: str, rowid: int) -> None:
        """Delete one row (a line the recorder wrote, then could not print)."""
        with self.transaction():
            self.db.conn.execute(f"delete from [{table}] where [id] = ?", [rowid])

    def _insert(self, table: str, row: dict[str, Any]) -> int:
        return self.insert_rows([(table, row)])[0]

    def _update(self, table: str, pk: Any, row: dict[str, Any]) -> None:
        row = encode(table, row)
        assignments = ", ".join(f"[{c}] = ?" for c in row)
        with self.transaction():
            self.db.conn.execute(
                f"update [{table}] set {assignments} where [id] = ?",
                [*self._redacted(row.values()), pk],
            )

    def start_run(self, **fields: Any) -> str:
        """Insert a run with status ``running``; return its id."""
        run_id = fields.pop("id", None) or new_run_id()
        self._insert(
            "runs",
            {
                "id": run_id,
                "started_at": now(),
                "status": "running",
                "pid": os.getpid(),
                "process": process_identity(),
                "kind": "inference",
                **fields,
            },
        )
        return run_id

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set fields of a run (for example ``env_schema`` once the env is up)."""
        self._update("runs", run_id, fields)

    def finish_run(
        self, run_id: str, status: str, exit_code: int, error: str | None = None
    ) -> None:
        """Mark a run ended with ``status`` (completed, failed or interrupted)."""
        self._update(
            "runs",
            run_id,
            {"ended_at": now(), "status": status, "exit_code": exit_code, "error": error},
        )

    def start_episode(self, run_id: str, position: int, **fields: Any) -> int:
        """Insert an episode with status ``running``; return its id."""
        return self._insert(
            "episodes",
            {
                "run_id": run_id,
                "position": position,
                "started_at": now(),
                "status": "running",
                "steps": 0,
                **fields,
            },
        )

    def update_episode(self, episode_id: int, **fields: Any) -> None:
        """Set fields of an episode (reset observation, final outcome, ...)."""
        self._update("episodes", episode_id, fields)

    def record_step(self, run_id: str, episode_id: int, **fields: Any) -> int:
        """Insert one env step as it happens."""
        return self._insert("steps", {"run_id": run_id, "episode_id": episode_id, **fields})

    def record_llm_call(self, **fields: Any) -> int:
        """Insert one LLM HTTP exchange."""
        return self._insert("llm_calls", fields)

    def record_line(self, run_id: str, episode_id: int | None, line: str) -> None:
        """Insert one stdout protocol line, as printed."""
        self._insert(
            "lines", {"run_id": run_id, "episode_id": episode_id, "line": line, "printed_at": now()}
        )

    def close(self) -> None:
        self._checkpointer.close()
        self.db.conn.close()
        if self._copy is not None:
            self._copy.cleanup()
            self._copy = None


class _Locked(Exception):
    """The file was locked as it was opened; opening it again may succeed."""


def _check_existing(path: Path) -> None:
    if not path.exists():
        raise TraceError(f"{path}: no such trace database")
    if path.is_dir():
        raise TraceError(f"{path}: is a directory, not a trace database")
    if not path.is_file():  # reading a FIFO would wait for a writer forever
        raise TraceError(f"{path}: not a regular file, not a trace database")
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except OSError as exc:
        raise TraceError(f"{path}: cannot read ({exc.strerror})") from None
    if header and header != b"SQLite format 3\x00":
        raise TraceError(f"{path}: not a trace database (not an SQLite file)")
