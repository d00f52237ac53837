"""The checks a grader makes on a command run, judged from what ``tracer run`` saw."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracer.command_recorder import CommandRecorder
    from validator.report import Report

MIN_TASKS = 3  # later rounds: at least 3 tasks, each score strictly inside (0, 1)
SHOWN_PROBLEMS = 3


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail}


def grader_checks(
    recorder: CommandRecorder, report: Report, keyed: bool, env_proxied: bool = False
) -> dict[str, Any]:
    """Return each check (name, ok, detail) with the validator's summary of stdout."""
    tally = recorder.tally
    if report.ok:
        stdout = f"valid: {report.episodes} episode(s), {report.steps} step(s)"
    else:
        first = "; ".join(
            f"line {p.line}: {p.code} {p.message}" for p in report.problems[:SHOWN_PROBLEMS]
        )
        stdout = f"{report.errors} error(s), {report.warnings} warning(s): {first}"
    checks = [_check("stdout", report.ok, stdout)]

    if tally.llm_calls == 0 and tally.step_lines:
        via = (
            f"0 calls while {tally.step_lines} [STEP] line(s) were printed: the script "
            "reaches its LLM some other way, or fell back to something else, which a "
            "grader's proxy would not see"
        )
    elif tally.step_lines and recorder.outside_calls >= tally.llm_calls:
        via = (
            f"{tally.llm_calls} call(s), none inside an episode, while {tally.step_lines} "
            "[STEP] line(s) were printed: the model chose no action (a call made only to "
            "be seen by a grader's proxy?)"
        )
    else:
        via = f"{tally.llm_calls} call(s)"
    inside = tally.llm_calls - recorder.outside_calls
    checks.append(_check("llm calls through API_BASE_URL", inside > 0 or not tally.step_lines, via))

    lost: dict[tuple, int] = {}  # request: its first failed call
    for request, n in tally.failed_calls:
        if request not in tally.recovered:
            lost.setdefault(request, n)
    failed = f"{len(tally.failed_calls)} of {tally.llm_calls} exchange(s) failed"
    if lost:
        first = ", #".join(map(str, list(lost.values())[:5]))
        failed += (
            f"; {len(lost)} request(s) never answered by a retry (calls #{first}): the "
            "script went on without the model's answer"
        )
    checks.append(_check("llm failures", not lost, failed))

    if env_proxied:
        if tally.env_exchanges == 0 and tally.step_lines:
            detail = (
                f"0 exchanges while {tally.step_lines} [STEP] line(s) were printed: the "
                "script reaches its env some other way (a hard-coded URL? --env-var NAME "
                "for the variable it reads)"
            )
        else:
            detail = f"{tally.env_exchanges} exchange(s), {tally.env_failed} failed"
        checks.append(
            _check(
                "env calls through ENV_BASE_URL",
                (tally.env_exchanges > 0 or not tally.step_lines) and not tally.env_failed,
                detail,
            )
        )

    if keyed:
        detail = (
            f"{tally.keys_given} call(s) sent the given key, {tally.keys_other} another "
            f"key, {tally.keys_missing} none"
        )
        checks.append(_check("key", not tally.keys_other and not tally.keys_missing, detail))

    episodes = recorder.episodes
    tasks = {e.task for e in episodes}
    outside = [
        f"{e.task} (no score)" if e.score is None else f"{e.task}={e.score}"
        for e in episodes
        if e.score is None or not 0 < e.score < 1
    ]
    rule = f"{len(episodes)} episode(s), {len(tasks)} distinct task(s)"
    if outside:
        rule += f"; score not strictly inside (0, 1): {', '.join(outside[:5])}"
    checks.append(
        _check(
            f"at least {MIN_TASKS} tasks, scores inside (0, 1)",
            len(tasks) >= MIN_TASKS and not outside,
            rule,
        )
    )
    return {
        "checks": checks,
        "stdout": report.summary(),
        "llm_calls": tally.llm_calls,
        "env_exchanges": tally.env_exchanges,
    }


def print_checks(checks: dict[str, Any], report: Report) -> None:
    """Print the checks on stderr, one line each."""
    print("tracer: checks a grader would make:", file=sys.stderr)
    for check in checks["checks"]:
        mark = "ok  " if check["ok"] else "FAIL"
        print(f"tracer:   {mark}  {check['name']}: {check['detail']}", file=sys.stderr)
    sys.stderr.flush()
