"""Exports of recorded runs and jsonl import.

A jsonl export is one self-contained JSON object per episode, checked against
``tracer/schemas/episode.schema.json``; ``import_jsonl`` reads such files back, checking every
line first and writing everything in one transaction, so a bad file leaves the database as it was.
The training formats (``messages``, ``call-messages``, ``trace``, ``collect``) are the shapes
OpenEnv and TRL read; each row is checked against its own schema in ``tracer/schemas/``.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from tracer import queries, tables
from tracer.store import Store, TraceError

SCHEMAS = Path(__file__).parent / "schemas"
SCHEMA_PATH = SCHEMAS / "episode.schema.json"
FORMAT = "openenv-tracer.episode/1"
#: The schema each format's rows are checked against (``log`` lines are the validator's).
FORMAT_SCHEMAS = {"jsonl": "episode", "messages": "messages", "call-messages": "call-messages",
                  "trace": "trace", "collect": "collect"}

RUN_FIELDS = tables.exported("runs")
STEP_FIELDS = tables.exported("steps")
CALL_FIELDS = tables.exported("llm_calls")  # the response goes as response or response_text
ENV_MESSAGE_FIELDS = tables.exported("env_messages")


def schema_text() -> str:
    """Return the episode JSON Schema exactly as shipped."""
    return SCHEMA_PATH.read_text(encoding="utf-8")


def schema_path(name: str) -> Path:
    """Return the path of a shipped schema: ``episode``, ``messages``, ``collect``..."""
    return SCHEMAS / f"{name}.schema.json"


@cache
def _validator(name: str = "episode") -> Any:
    import jsonschema  # only exports and imports pay for it

    schema = json.loads(schema_path(name).read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, format_checker=None)


def schema_error(record: Any, name: str = "episode") -> str | None:
    """Return why ``record`` fails the schema ``name`` in one line, or None if it passes."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(record))
    if error is None:
        return None
    message = " ".join(error.message.split())
    if len(message) > 200:
        message = message[:197] + "..."
    return f"{error.json_path}: {message}"


# -- jsonl ----------------------------------------------------------------------------


def episode_records(store: Store, run_id: str) -> Iterator[dict[str, Any]]:
    """Yield one schema-valid record per episode of a run, in position order."""
    run = queries.run_row(store, run_id)
    run_meta = {k: run[k] for k in RUN_FIELDS}
    episodes = queries.episode_rows(store, run_id, run["status"])
    lines = _run_lines(store, run_id, [ep["id"] for ep in episodes])
    orphan_calls = list(
        queries.rows(store, "select * from llm_calls where run_id = ? and episode_id is null "
                     "order by id", [run_id])
    )
    env_messages = _env_messages(store, run_id)
    for index, ep in enumerate(episodes):
        calls = queries.llm_call_rows(store, ep["id"])
        if index == 0:
            calls = [{**c, "run_level": True} for c in orphan_calls] + calls
        record = {
            "format": FORMAT,
            "run": run_meta,
            "position": ep["position"],
            "task": ep["task"],
            "benchmark": ep["benchmark"],
            "model": ep["model"],
            "started_at": ep["started_at"],
            "ended_at": ep["ended_at"],
            "status": ep["status"],
            "reset": {
                "args": ep["reset_args"],
                "observation": ep["reset_observation"],
                "latency_ms": ep["reset_latency_ms"],
            },
            "steps": [{k: s[k] for k in STEP_FIELDS} for s in queries.step_rows(store, ep["id"])],
            "llm_calls": [_export_call(c) for c in calls],
            "lines": lines.get(ep["id"], []),
            "env_messages": env_messages.get(ep["id"], []),
            "outcome": {
                "success": ep["success"],
                "steps": ep["steps"],
                "score": ep["score"],
                "rewards": ep["rewards"],
                "error": ep["error"],
            },
        }
        problem = schema_error(record)
        if problem:
            raise TraceError(
                f"run {run_id} episode {ep['position']}: export fails its schema: {problem}"
            )
        yield record


def _env_messages(store: Store, run_id: str) -> dict[int | None, list[dict[str, Any]]]:
    """Return a run's env exchanges by episode id; one outside episodes goes with the
    episode before it (or the first), marked ``run_level``."""
    out: dict[int | None, list[dict[str, Any]]] = {}
    episode_ids = [r["id"] for r in queries.rows(
        store, "select id from episodes where run_id = ? order by position", [run_id])]
    current = episode_ids[0] if episode_ids else None
    for message in queries.rows(store, "select * from env_messages where run_id = ? "
                                       "order by position", [run_id]):
        row = {k: message[k] for k in ENV_MESSAGE_FIELDS}
        row["request"] = queries.decode(message["request"], "env_messages", message["id"],
                                        "request")
        try:  # stored as the exact text the env sent: JSON, as a rule
            row["response"] = json.loads(message["response"] or "null")
        except ValueError:
            pass
        if message["episode_id"] is None:
            row["run_level"] = True
        else:
            current = message["episode_id"]
        out.setdefault(current, []).append(row)
    return out


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _export_call(call: dict[str, Any]) -> dict[str, Any]:
    out = {k: call[k] for k in CALL_FIELDS}
    out["request"] = queries.decode(call["request"], "llm_calls", call["id"], "request")
    out["stream"] = bool(call["stream"])
    # A JSON body is exported as JSON; a stream or non-JSON body as the exact text received.
    response = call["response"]
    try:
        # (a body with NaN, which JSON cannot carry, goes as its text: the export stays JSON)
        decoded = None if call["stream"] or response is None else json.loads(
            response, parse_constant=_not_json)
    except ValueError:
        decoded = None
    if isinstance(decoded, (dict, list)):
        out["response"] = decoded
    else:
        out["response_text"] = response
    if call.get("run_level"):
        out["run_level"] = True
    return out


def _run_lines(
    store: Store, run_id: str, episode_ids: list[int]
) -> dict[int, list[dict[str, Any]]]:
    """Return a run's stdout lines by episode id; a run-level line goes with the episode before it."""
    by_episode: dict[int, list[dict[str, Any]]] = {}
    if not episode_ids:
        return by_episode
    current = episode_ids[0]
    for row in queries.rows(
        store, "select episode_id, line, printed_at from lines where run_id = ? order by id",
        [run_id],
    ):
        line = {"line": row["line"], "printed_at": row["printed_at"]}
        if row["episode_id"] is None:
            line["run_level"] = True
        else:
            current = row["episode_id"]
        by_episode.setdefault(current, []).append(line)
    return by_episode


# -- log and messages -----------------------------------------------------------------


def log_lines(store: Store, run_id: str) -> Iterator[str]:
    """Yield a run's stdout protocol lines exactly as printed, in order."""
    for row in queries.rows(store, "select line from lines where run_id = ? order by id", [run_id]):
        yield row["line"]


def call_message_rows(store: Store, run_id: str) -> Iterator[dict[str, Any]]:
    """Yield one chat row per answered LLM call: its request messages plus the reply.

    Keys follow OpenEnv's collect ``EpisodeRecord`` (episode_id, messages, reward, done, task,
    extra) plus ``step``; ``reward`` and ``done`` are that step's, not the episode's.
    """
    for ep in _episodes(store, run_id):
        steps = {s["step"]: s for s in queries.step_rows(store, ep["id"])}
        for call, request, reply in _answered_calls(store, ep):
            step = steps.get(call["step"], {})
            row = {
                "episode_id": _episode_id(run_id, ep),
                "messages": [*(request.get("messages") or []), reply["message"]],
                "reward": step.get("reward"),
                "done": bool(step.get("done")),
                "task": ep["task"],
                "step": call["step"],
                "extra": {"run_id": run_id, "episode": ep["position"], "call": call["position"],
                          "model": request.get("model") or ep["model"]},
            }
            if request.get("tools"):
                row["tools"] = request["tools"]
            yield _checked(row, "call-messages", run_id, ep)


def message_rows(store: Store, run_id: str) -> Iterator[dict[str, Any]]:
    """Yield one SFT chat row per episode: the whole conversation and the episode's reward.

    ``reward`` is the episode's return (the sum of its step rewards), the number OpenEnv's SFT
    recipe filters on; ``tools`` is there when the model was offered tools. An episode with no
    answered LLM call has nothing to learn from and yields no row.
    """
    for ep in _episodes(store, run_id):
        calls = list(_answered_calls(store, ep))
        if not calls:
            continue
        steps = queries.step_rows(store, ep["id"])
        row = {
            "episode_id": _episode_id(run_id, ep),
            "messages": conversation(calls),
            "reward": episode_reward(steps),
            "done": bool(steps and steps[-1]["done"]),
            "task": ep["task"],
            "extra": _episode_extra(run_id, ep, calls),
        }
        tools = _tools_offered(calls)
        if tools:
            row["tools"] = tools
        yield _checked(row, "messages", run_id, ep)


def trace_rows(store: Store, run_id: str) -> Iterator[dict[str, Any]]:
    """Yield one ``{request, response, ...}`` row per answered LLM call.

    The shape of OpenEnv's proxy-trace ``TraceEntry``, which TRL reads: ``request`` is the body
    sent, ``response`` a chat.completion body (a stream put back together), ``reward`` the
    episode's return. No token ids: an OpenAI-compatible API does not return them, so those
    keys are left out rather than made up.
    """
    for ep in _episodes(store, run_id):
        steps = queries.step_rows(store, ep["id"])
        by_step = {s["step"]: s for s in steps}
        reward = episode_reward(steps)
        for call, request, reply in _answered_calls(store, ep):
            yield _checked({
                "request": request,
                "response": reply["body"],
                "finish_reason": reply["finish_reason"],
                "latency_s": None if call["latency_ms"] is None else call["latency_ms"] / 1000,
                "reward": reward,
                "metadata": {
                    "episode_id": _episode_id(run_id, ep), "run_id": run_id,
                    "episode": ep["position"], "task": ep["task"], "step": call["step"],
                    "call": call["position"], "model": request.get("model") or ep["model"],
                    "step_reward": by_step.get(call["step"], {}).get("reward"),
                    "stream": bool(call["stream"]),
                },
            }, "trace", run_id, ep)


def collect_records(store: Store, run_id: str) -> Iterator[dict[str, Any]]:
    """Yield one OpenEnv ``EpisodeRecord`` (as ``to_dict()`` gives it) per completed episode.

    As OpenEnv's ``collect`` writes only episodes that ran to their end, so do we; how many were
    left out is in ``collect_metadata``. ``tool_trace`` holds each MCP tool call and its result.
    """
    for ep in _episodes(store, run_id):
        if ep["status"] != "completed":
            continue
        calls = list(_answered_calls(store, ep))
        steps = queries.step_rows(store, ep["id"])
        yield _checked({
            "episode_id": _episode_id(run_id, ep),
            "messages": conversation(calls),
            "reward": episode_reward(steps),
            "done": bool(steps and steps[-1]["done"]),
            "tool_trace": [_tool_trace_entry(s) for s in steps if _is_tool_call(s["action"])],
            "metrics": {"steps": ep["steps"], "score": ep["score"], "success": bool(ep["success"]),
                        "rewards": ep["rewards"], "llm_calls": len(calls)},
            "verify_metrics": {},
            "artifacts": {},
            "task": ep["task"],
            "extra": _episode_extra(run_id, ep, calls),
        }, "collect", run_id, ep)


def collect_metadata(store: Store, run_ids: list[str], collected: int) -> dict[str, Any]:
    """Return the ``metadata.json`` of a collect export: OpenEnv's keys, then ours."""
    from tracer import __version__

    runs = [queries.run_row(store, run_id) for run_id in run_ids]
    episodes = sum(len(queries.episode_rows(store, r["id"], r["status"])) for r in runs)

    def shared(values: list[Any]) -> Any:
        """The value all runs agree on, else None (the runs are listed below)."""
        return values[0] if values and all(v == values[0] for v in values) else None

    metadata = {
        "env": shared([r["benchmark"] for r in runs]),
        "env_base_url": shared([(r["env_source"] or {}).get("url") for r in runs]),
        "provider": "openai-compatible",
        "model": shared([r["model"] for r in runs]),
        "llm_endpoint": shared([r["api_base_url"] for r in runs]),
        "llm_port": None,
        "num_episodes_requested": episodes,
        "temperature": shared([(r["config"] or {}).get("temperature") for r in runs]),
        "keep_losses": True,
        "exported_by": f"openenv-tracer {__version__}",
        "num_collected": collected,
        "num_not_completed": episodes - collected,
        "runs": [{"id": r["id"], "started_at": r["started_at"], "status": r["status"],
                  "model": r["model"], "benchmark": r["benchmark"]} for r in runs],
    }
    problem = schema_error(metadata, "collect-metadata")
    if problem:
        raise TraceError(f"collect metadata fails its schema: {problem}")
    return metadata


def conversation(calls: list[tuple[dict, dict, dict]]) -> list[dict[str, Any]]:
    """Return an episode's conversation from its answered calls, each message once.

    Each request is laid over what came before: the messages it shares with the conversation
    so far (the same system prompt, or a whole growing tool-use conversation) are kept once,
    its new ones and its reply are added.
    """
    messages: list[dict[str, Any]] = []
    for _, request, reply in calls:
        sent = request.get("messages") or []
        shared = 0
        while shared < min(len(sent), len(messages)) and sent[shared] == messages[shared]:
            shared += 1
        messages += [*sent[shared:], reply["message"]]
    return messages


def episode_reward(steps: list[dict[str, Any]]) -> float:
    """Return an episode's return: the sum of its step rewards."""
    return float(sum(s["reward"] or 0.0 for s in steps))


def _answered_calls(store: Store, ep: dict[str, Any]) -> Iterator[tuple[dict, dict, dict]]:
    """Yield (call row, request body, reply) for each LLM call of an episode that got a reply."""
    for call in queries.llm_call_rows(store, ep["id"]):
        reply = _reply(call["response"], bool(call["stream"]))
        if reply is None:
            continue  # a failed call teaches nothing
        yield call, queries.decode(call["request"], "llm_calls", call["id"], "request"), reply


def _reply(text: str | None, stream: bool) -> dict[str, Any] | None:
    """Return {message, finish_reason, body} of a recorded response, or None if it has none."""
    from tracer.sse import stream_message

    if text is None:
        return None
    if stream:
        message, finish, usage = stream_message(text)
        if message is None:
            return None
        body: dict[str, Any] = {"object": "chat.completion", "choices": [
            {"index": 0, "message": message, "finish_reason": finish}]}
        return {"message": message, "finish_reason": finish,
                "body": {**body, "usage": usage} if usage else body}
    try:
        body = json.loads(text)
    except ValueError:
        return None
    choice = (body.get("choices") or [None])[0] if isinstance(body, dict) else None
    got = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(got, dict):
        return None
    message = {"role": "assistant", "content": queries.message_text(got.get("content"))}
    if got.get("tool_calls"):
        message["tool_calls"] = got["tool_calls"]
    elif message["content"] is None:
        return None
    return {"message": message, "finish_reason": choice.get("finish_reason"), "body": body}


def _tools_offered(calls: list[tuple[dict, dict, dict]]) -> list[dict[str, Any]] | None:
    """Return the tools the last call offered the model (None when no call offered any)."""
    for _, request, _ in reversed(calls):
        if request.get("tools"):
            return request["tools"]
    return None


def _is_tool_call(action: Any) -> bool:
    return isinstance(action, dict) and action.get("type") == "call_tool"


def _tool_trace_entry(step: dict[str, Any]) -> dict[str, Any]:
    """Return a step's MCP tool call as OpenEnv's collect ``tool_trace`` entry, in the shape
    OpenEnv's own step-env sessions give it (the step's reward in ``metadata``)."""
    from tracer.mcp_agent import tool_error

    action = step["action"]
    return {
        "tool_name": action.get("tool_name"),
        "arguments": action.get("arguments") or {},
        "result": {
            "data": {"tool_name": action.get("tool_name"), "arguments": action.get("arguments") or {},
                     "observation": step["observation"], "reward": step["reward"],
                     "done": bool(step["done"])},
            "done": bool(step["done"]),
            "metadata": {"reward": step["reward"]},
            "error": tool_error(step["observation"]) or step["error"],
        },
    }


def _episodes(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Return a run's episodes; one a killed run left ``running`` shows as ``interrupted``."""
    return queries.episode_rows(store, run_id, queries.run_row(store, run_id)["status"])


def _episode_id(run_id: str, ep: dict[str, Any]) -> str:
    return f"{run_id}/{ep['position']}"


def _episode_extra(run_id: str, ep: dict[str, Any], calls: list) -> dict[str, Any]:
    models = [request.get("model") for _, request, _ in calls if request.get("model")]
    return {"run_id": run_id, "episode": ep["position"], "model": models[-1] if models else ep["model"],
            "benchmark": ep["benchmark"], "status": ep["status"], "error": ep["error"]}


def _checked(row: dict[str, Any], schema: str, run_id: str, ep: dict[str, Any]) -> dict[str, Any]:
    """Return ``row`` if it passes its format's schema, else raise ``TraceError`` naming it."""
    problem = schema_error(row, schema)
    if problem:
        raise TraceError(f"run {run_id} episode {ep['position']}: {schema} export fails its "
                         f"schema: {problem}")
    return row


# -- import ---------------------------------------------------------------------------


@dataclass
class ImportResult:
    """What an import did: runs written, runs skipped because their id exists, episodes."""

    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    episodes: int = 0


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Return every record of a jsonl export, or raise ``TraceError`` at the first bad line."""
    path = Path(path)
    mode = path.stat().st_mode if path.exists() else 0
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):  # /dev/zero never ends; a FIFO or pipe does
        raise TraceError(f"{path}: not a regular file (a device), not a jsonl export")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read ({exc})") from None
    records, seen = [], set()
    # Split on "\n" only: JSON Lines is "\n"-delimited, and str.splitlines() also splits on
    # U+2028, U+0085 and others, which JSON strings may hold raw.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            problem = schema_error(record) or _out_of_range(record)
        except ValueError as exc:
            raise TraceError(f"{path}:{number}: not JSON ({exc})") from None
        except RecursionError:
            raise TraceError(f"{path}:{number}: not JSON (nested too deeply)") from None
        if problem:
            raise TraceError(f"{path}:{number}: {problem}")
        key = (record["run"]["id"], record["position"])
        if key in seen:
            raise TraceError(f"{path}:{number}: run {key[0]} episode {key[1]} appears twice")
        seen.add(key)
        records.append(record)
    return records


def _out_of_range(record: dict[str, Any]) -> str | None:
    """Return where an integer too big for an SQLite column is, or None (JSON columns hold any)."""
    objects = [("$", record), ("$.run", record["run"]), ("$.reset", record["reset"]),
               ("$.outcome", record["outcome"])]
    objects += [(f"$.steps[{i}]", s) for i, s in enumerate(record["steps"])]
    objects += [(f"$.llm_calls[{i}]", c) for i, c in enumerate(record["llm_calls"])]
    for where, obj in objects:
        for key, value in obj.items():
            if (type(value) is int and key not in _JSON_COLUMNS
                    and not -(2**63) <= value < 2**63):
                return f"{where}.{key}: {value} is out of range (at most 64-bit integers)"
    return None


def import_jsonl(store: Store, records: list[dict[str, Any]]) -> ImportResult:
    """Write records into the store in one transaction; runs whose id exists are skipped."""
    result = ImportResult()
    db = store.db
    with store.transaction():
        for record in records:
            run = record["run"]
            if run["id"] in result.skipped:
                continue
            if run["id"] not in result.imported:
                if db.execute("select 1 from runs where id = ?", [run["id"]]).fetchone():
                    result.skipped.append(run["id"])
                    continue
                # pid is left out: a process id means nothing on another machine.
                _insert(store, "runs", dict(run))
                result.imported.append(run["id"])
            episode_id = _insert(store, "episodes", {
                "run_id": run["id"],
                "position": record["position"],
                "task": record["task"],
                "benchmark": record["benchmark"],
                "model": record["model"],
                "started_at": record["started_at"],
                "ended_at": record["ended_at"],
                "status": record["status"],
                "success": record["outcome"]["success"],
                "steps": record["outcome"]["steps"],
                "score": record["outcome"]["score"],
                "rewards": record["outcome"]["rewards"],
                "error": record["outcome"]["error"],
                "reset_args": record["reset"]["args"],
                "reset_observation": record["reset"]["observation"],
                "reset_latency_ms": record["reset"]["latency_ms"],
            })
            result.episodes += 1
            for s in record["steps"]:
                _insert(store, "steps", {"run_id": run["id"], "episode_id": episode_id, **s})
            for c in record["llm_calls"]:
                c = dict(c)
                in_episode = not c.pop("run_level", False)
                c["response"] = c.pop("response_text") if "response_text" in c else c["response"]
                _insert(store, "llm_calls", {
                    "run_id": run["id"], "episode_id": episode_id if in_episode else None, **c
                })
            for m in record.get("env_messages", []):
                m = dict(m)
                in_episode = not m.pop("run_level", False)
                _insert(store, "env_messages", {
                    "run_id": run["id"], "episode_id": episode_id if in_episode else None, **m})
            for line in record["lines"]:
                _insert(store, "lines", {
                    "run_id": run["id"],
                    "episode_id": None if line.get("run_level") else episode_id,
                    "line": line["line"],
                    "printed_at": line["printed_at"],
                })
    return result


def _insert(store: Store, table: str, row: dict[str, Any]) -> int:
    """Insert inside the caller's transaction, encoded and redacted as the recorder's rows are."""
    return store.insert_rows([(table, row)])[0]


# Columns that hold JSON even when the value is a bare string or number.
_JSON_COLUMNS = {c for t in tables.TABLES for c in tables.json_columns(t)}
