"""The trace tables, described once: columns, types, which hold JSON and of what shape.

The description drives the encode on write (``encode``: JSON columns always as JSON text, so
an observation that is a plain string reads back as that string), the decode on read
(``decode``, ``check_numbers``), the export mapping (``exported``) and the export schema
(``tracer.schemas_gen``). The schema itself is made by the migrations (``tracer.migrations``);
a test checks that a migrated database has exactly these columns, so a change here is always
a new migration too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tracer.sse import data_events

# How a column's value is stored.
TEXT, INTEGER, FLOAT = "TEXT", "INTEGER", "REAL"
BOOL = "BOOL"  # true or false, stored as 1 or 0
JSON = "JSON"  # any JSON value, stored as its JSON text (a plain string too)
BODY = "BODY"  # an HTTP body as received: text kept as is, a decoded JSON value as JSON text


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Shape:
    """What a JSON column's value must be (when not null), and its JSON Schema."""

    name: str  # as said in an error: "a JSON object"
    fits: Callable[[Any], bool]
    schema: dict[str, Any]


ANY = Shape("any JSON value", lambda v: True, {})
OBJECT = Shape("a JSON object", lambda v: isinstance(v, dict), {"type": ["object", "null"]})
STRINGS = Shape(
    "a list of strings",
    lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v),
    {"type": ["array", "null"], "items": {"type": "string"}},
)
NUMBERS = Shape(
    "a list of numbers",
    lambda v: isinstance(v, list) and all(r is None or _is_number(r) for r in v),
    {"type": ["array", "null"], "items": {"type": ["number", "null"]}},
)
OBJECTS = Shape(
    "a list of objects", lambda v: isinstance(v, list) and all(isinstance(m, dict) for m in v), {}
)


@dataclass(frozen=True)
class Column:
    """One column of a trace table."""

    name: str
    type: str  # TEXT, INTEGER, REAL (SQLite types), BOOL (INTEGER), JSON or BODY (TEXT)
    doc: str = ""
    shape: Shape = ANY  # JSON columns: what the value must be
    members: dict[str, Shape] = field(default_factory=dict)  # JSON objects: their members'
    key: bool = False  # orders and matches rows (diff sorts by it): whole numbers only
    exported: bool = True  # part of a jsonl export (pid and derived values are not)
    derived: Callable[[dict[str, Any]], Any] | None = None  # computed on write from the row
    schema: dict[str, Any] | None = None  # in the export schema, when not as its type says

    @property
    def sql(self) -> str:
        """The column's SQLite type."""
        return {JSON: TEXT, BODY: TEXT, BOOL: INTEGER}.get(self.type, self.type)


# -- token counts, kept as columns so stats need not read every response ------------------


def usage(response: Any, stream: Any) -> dict[str, Any]:
    """Return the ``usage`` object of a response: a chat.completion body (decoded or as text),
    or a raw SSE stream's last chunk that carries one; {} when there is none."""
    if isinstance(response, JSONText) and response.value is not None:
        response = response.value
    elif isinstance(response, str):
        if stream:
            found: dict[str, Any] = {}
            for _, chunk in data_events(response):
                if isinstance(chunk.get("usage"), dict):
                    found = chunk["usage"]
            return found
        try:
            response = json.loads(response)
        except ValueError:
            return {}  # a non-JSON body (an HTML error page, say)
    if isinstance(response, dict) and isinstance(response.get("usage"), dict):
        return response["usage"]
    return {}


def _tokens(name: str) -> Callable[[dict[str, Any]], Any]:
    def count(row: dict[str, Any]) -> int | None:
        value = usage(row.get("response"), row.get("stream")).get(name)
        return (
            value
            if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
            else None
        )

    return count


def _id(name: str = "id", type: str = INTEGER) -> Column:
    return Column(name, type, exported=False)


_RUN_ID = Column("run_id", TEXT, exported=False)
_EPISODE_ID = Column("episode_id", INTEGER, exported=False)

TABLES: dict[str, tuple[Column, ...]] = {
    "runs": (
        Column("id", TEXT, schema={"type": "string", "minLength": 1}),
        Column("started_at", TEXT, schema={"$ref": "#/$defs/time"}),
        Column("ended_at", TEXT),
        Column("status", TEXT, schema={"$ref": "#/$defs/status"}),
        Column("exit_code", INTEGER),
        Column("error", TEXT),
        Column("tasks", JSON, shape=STRINGS),
        Column("benchmark", TEXT),
        Column("model", TEXT),
        Column("api_base_url", TEXT),
        Column("env_source", JSON, '{"kind": "embedded"|"url"|"image", ...}', OBJECT),
        Column("env_schema", JSON, "The env's /schema (action, observation, state).", OBJECT),
        Column("config", JSON, "The run's configuration, secrets removed.", OBJECT),
        Column("config_fingerprint", TEXT),
        Column("versions", JSON, shape=OBJECT),
        Column("replay_of", TEXT, "The id of the run this run replayed."),
        Column("pid", INTEGER, exported=False),  # means nothing on another machine
        Column(
            "kind",
            TEXT,
            "inference (inference.py or its replay) or command (tracer run).",
            schema={"enum": ["inference", "command", None]},
        ),
        Column("command", JSON, "A command run's argv.", STRINGS),
        Column("cwd", TEXT),
        Column(
            "env_vars", JSON, "Names (never values) of the variables tracer set for it.", STRINGS
        ),
        Column("upstream_url", TEXT),
        Column("env_url", TEXT),
        Column("seed", INTEGER),
        Column("checks", JSON, "The grader checks of a command run.", OBJECT),
        Column("process", TEXT, exported=False),  # boot id and start time of the recorder
    ),
    "episodes": (
        _id(),
        _RUN_ID,
        Column(
            "position",
            INTEGER,
            "1-based order of the episode within its run.",
            key=True,
            schema={"type": "integer", "minimum": 1},
        ),
        Column("task", TEXT),
        Column("benchmark", TEXT),
        Column("model", TEXT),
        Column("started_at", TEXT),
        Column("ended_at", TEXT),
        Column("status", TEXT, schema={"$ref": "#/$defs/status"}),
        Column("success", BOOL),
        Column("steps", INTEGER, schema={"type": ["integer", "null"], "minimum": 0}),
        Column("score", FLOAT),
        Column("rewards", JSON, shape=NUMBERS),
        Column("error", TEXT),
        Column("reset_args", JSON, "The arguments sent to env.reset().", OBJECT),
        Column("reset_observation", JSON, "The reset response data.", OBJECT),
        Column("reset_latency_ms", FLOAT),
    ),
    "steps": (
        _id(),
        _EPISODE_ID,
        _RUN_ID,
        Column("step", INTEGER, key=True, schema={"type": "integer"}),
        Column("action", JSON, "The JSON payload sent to env.step()."),
        Column("action_text", TEXT, "The action as printed in action=."),
        Column("observation", JSON, "The observation returned."),
        Column("reward", FLOAT),
        Column("done", BOOL),
        Column("error", TEXT),
        Column("latency_ms", FLOAT),
        Column("started_at", TEXT),
    ),
    "llm_calls": (
        _id(),
        _RUN_ID,
        _EPISODE_ID,
        Column("step", INTEGER, "The step this call chose an action for.", key=True),
        Column("position", INTEGER, "1-based order of the exchange within the episode.", key=True),
        Column("method", TEXT),
        Column("url", TEXT),
        Column("request_hash", TEXT),
        Column(
            "request",
            JSON,
            "The body sent: for POST {base}/chat/completions a JSON object; "
            "to other endpoints any JSON value, or the text of a body that is not JSON.",
            ANY,
            {"messages": OBJECTS},
        ),
        Column("status_code", INTEGER),
        Column(
            "response",
            BODY,
            "The JSON response body (or the text of a stream or of a body that is not JSON).",
            exported=False,
        ),  # exported as response/response_text
        Column("stream", BOOL, schema={"type": "boolean"}),
        Column("latency_ms", FLOAT),
        Column("error", TEXT),
        Column("started_at", TEXT),
        Column("prompt_tokens", INTEGER, exported=False, derived=_tokens("prompt_tokens")),
        Column("completion_tokens", INTEGER, exported=False, derived=_tokens("completion_tokens")),
    ),
    "lines": (
        _id(),
        _RUN_ID,
        _EPISODE_ID,
        Column(
            "line",
            TEXT,
            "Exactly as printed on stdout, without the newline.",
            schema={"type": "string"},
        ),
        Column("printed_at", TEXT),
    ),
    "env_messages": (
        _id(),
        _RUN_ID,
        _EPISODE_ID,
        Column("step", INTEGER, "The step being taken (1 + the [STEP] lines printed so far)."),
        Column("position", INTEGER, "1-based order within the run.", schema={"type": "integer"}),
        Column("session", INTEGER, "The WebSocket connection (null: plain HTTP)."),
        Column(
            "method", TEXT, "HTTP method, or WS for a WebSocket message.", schema={"type": "string"}
        ),
        Column("path", TEXT, schema={"type": "string"}),
        Column("request", JSON, "The JSON body or message sent to the env."),
        Column("status_code", INTEGER),
        Column(
            "response",
            BODY,
            "The body or message the env answered: JSON, or the text sent.",
            schema={},
        ),
        Column("latency_ms", FLOAT),
        Column("error", TEXT),
        Column("started_at", TEXT),
    ),
}

COLUMNS: dict[str, dict[str, Column]] = {t: {c.name: c for c in cs} for t, cs in TABLES.items()}
_DERIVED = {t: [c for c in cs if c.derived] for t, cs in TABLES.items()}
_BOOLS = {t: [c.name for c in cs if c.type == BOOL] for t, cs in TABLES.items()}


def exported(table: str) -> tuple[str, ...]:
    """Return the columns of ``table`` a jsonl export carries as they are, in order."""
    return tuple(c.name for c in TABLES[table] if c.exported)


def json_columns(table: str) -> tuple[str, ...]:
    """Return the columns of ``table`` that hold JSON."""
    return tuple(c.name for c in TABLES[table] if c.type == JSON)


# -- write --------------------------------------------------------------------------------


# One encoder for every write: json.dumps with options builds a new one on each call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def dumps(value: Any) -> str:
    """Return compact JSON, keeping non-ASCII text readable (escaped only where the text holds
    a lone surrogate, as JSON from an env may: SQLite stores UTF-8, which cannot carry one)."""
    text = _ENCODER.encode(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"), default=str)
    return text


class JSONText(str):
    """Text that already is the JSON to store (a body as it was sent): stored as it is.

    ``value`` is what it decodes to, when the writer has it: derived columns read it rather
    than decoding the text again."""

    value: Any

    def __new__(cls, text: str, value: Any = None) -> JSONText:  # noqa: PYI034 (py310: no typing.Self)
        new = super().__new__(cls, text)
        new.value = value
        return new


def encode(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """Return ``row`` as stored: JSON columns as JSON text, bodies as text, booleans as 0/1,
    and the derived columns (token counts) computed from what they derive from."""
    columns = COLUMNS[table]
    out = {}
    for name, value in row.items():
        column = columns.get(name)
        kind = column.type if column else None
        if value is None or type(value) is JSONText:
            pass
        elif kind == JSON or (kind == BODY and not isinstance(value, str)):
            value = dumps(value)
        elif isinstance(value, bool):
            value = int(value)
        elif kind is None and isinstance(value, (dict, list)):  # a column this tracer lacks
            value = dumps(value)
        out[name] = value
    for column in _DERIVED[table]:
        if "response" in row:  # the one source derived columns have today
            out[column.name] = column.derived(row)  # type: ignore[misc]
    return out


# -- read ---------------------------------------------------------------------------------


def _clip(text: str, width: int = 40) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def decode(value: str | None, table: str, row_id: Any, column: str) -> Any:
    """Return a JSON column's value, or raise ``TraceError`` naming the corrupt row."""
    from tracer.store import TraceError

    if value is None:
        return None
    try:
        decoded = json.loads(value)
    except (TypeError, ValueError):
        raise TraceError(f"{table} row {row_id}: column {column} is not valid JSON") from None
    described = COLUMNS[table][column]
    if decoded is not None and not described.shape.fits(decoded):
        raise TraceError(
            f"{table} row {row_id}: column {column} is not {described.shape.name}: {_clip(value)}"
        )
    for key, shape in described.members.items():
        member = decoded.get(key) if isinstance(decoded, dict) else None
        if member is not None and not shape.fits(member):
            raise TraceError(
                f"{table} row {row_id}: column {column}: {key} is not {shape.name}: "
                f"{_clip(json.dumps(member, ensure_ascii=False))}"
            )
    return decoded


def decode_row(table: str, row: dict[str, Any], key: str = "id") -> dict[str, Any]:
    """Return ``row`` with its JSON columns decoded and its numbers checked."""
    for column in json_columns(table):
        if column in row:
            row[column] = decode(row[column], table, row[key], column)
    for column in _BOOLS[table]:
        if row.get(column) is not None:
            row[column] = bool(row[column])
    return check_numbers(row, table, key)


def check_numbers(row: dict[str, Any], table: str, key: str = "id") -> dict[str, Any]:
    """Return ``row`` after checking its number columns, or raise ``TraceError`` naming one."""
    from tracer.store import TraceError

    for column in TABLES[table]:
        value = row.get(column.name)
        if value is None:
            continue
        if column.type == FLOAT and not _is_number(value):
            raise TraceError(
                f"{table} row {row[key]}: column {column.name} is not a number: "
                f"{_clip(repr(value))}"
            )
        if column.key and (not isinstance(value, int) or isinstance(value, bool)):
            raise TraceError(
                f"{table} row {row[key]}: column {column.name} is not an integer: "
                f"{_clip(repr(value))}"
            )
    return row
