"""Checks OpenEnv ``inference.py`` stdout against the [START]/[STEP]/[END] grammar.

Kept light on purpose: it imports neither ``tracer`` nor ``openai`` nor ``openenv``, and the
checking API below is imported on first use, so ``validator --help`` starts fast.

    >>> from validator import check_lines
    >>> check_lines(["[START] task=t env=e model=m"]).ok
    False
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Problem", "Report", "check_file", "check_lines", "check_stream"]

_LAZY = {"check_lines": "validator.check", "check_file": "validator.check",
         "check_stream": "validator.check", "Report": "validator.report",
         "Problem": "validator.report"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'validator' has no attribute {name!r}")
