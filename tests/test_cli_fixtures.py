"""The CLI tests' helpers, kept importable here for the test modules that import them from this
name; they live in ``tests/conftest.py`` with the fixtures (``db`` is a copy of ``recording``,
runs the real recorder wrote)."""

from tests.conftest import corrupt, run_cli, snapshot

__all__ = ["corrupt", "run_cli", "snapshot"]
