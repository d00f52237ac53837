"""The JSON Schemas shipped in ``validator/schemas/``: the line schema is generated here from
``grammar.PATTERNS``, so the schema and the parser share one definition of a valid line.

``python -m validator.schema`` rewrites ``schemas/line.schema.json``; a test fails if the
shipped file differs from what this module generates.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from validator import grammar

SCHEMAS = ("line", "report")


def line_schema() -> dict[str, Any]:
    """Return the JSON Schema of one stdout line (a string, without its newline)."""
    defs = {
        kind.lower(): {
            "type": "string",
            "description": f"{grammar.TAGS[kind]} " + " ".join(f"{n}=<{n}>" for n, _ in fields),
            "pattern": f"^{grammar.PATTERNS[kind]}$",
        }
        for kind, fields in grammar.FIELDS.items()
    }
    defs["end_noscore"]["description"] += " (the older rules, --profile openenv-noscore)"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/openenv-tracer/openenv-tracer/validator/schemas/line.schema.json",
        "title": "OpenEnv inference stdout line",
        "description": (
            "One line of an inference.py stdout log, without its newline: a [START], [STEP] or "
            "[END] line with single spaces between fields in this order. Generated from "
            "validator/grammar.py (python -m validator.schema). The [STEP] pattern admits "
            "exactly one ' reward=<r> done=<b> error=' separator, so a line has one reading. "
            "The episode rules (step numbers, [END] totals) are not line rules: "
            "'validator check' applies them."
        ),
        "$comment": (
            "Patterns use the regex subset that ECMA-262 and Python read alike. The 'not' "
            "rejects a trailing newline, which Python's '$' would otherwise accept."
        ),
        "type": "string",
        "not": {"pattern": "\n"},
        "oneOf": [{"$ref": "#/$defs/start"}, {"$ref": "#/$defs/step"}, {"$ref": "#/$defs/end"}],
        "$defs": defs,
    }


def load(name: str) -> dict[str, Any]:
    """Return a shipped schema: ``"line"`` or ``"report"``."""
    if name not in SCHEMAS:
        raise ValueError(f"unknown schema {name!r}; one of {', '.join(SCHEMAS)}")
    text = resources.files("validator").joinpath(f"schemas/{name}.schema.json").read_text("utf-8")
    return json.loads(text)


def dumps(schema: dict[str, Any]) -> str:
    """Return a schema as the shipped files hold it."""
    return json.dumps(schema, indent=2, ensure_ascii=True) + "\n"


if __name__ == "__main__":
    path = resources.files("validator").joinpath("schemas/line.schema.json")
    with open(str(path), "w", encoding="utf-8") as f:
        f.write(dumps(line_schema()))
    print(f"wrote {path}")
