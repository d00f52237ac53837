"""Records, replays and exports LLM agent episodes in OpenEnv environments."""

from typing import Any


def __getattr__(name: str) -> Any:
    # One version for the distribution (pyproject.toml's), read from its metadata on first use;
    # validator holds the lookup because it may not import tracer.
    if name == "__version__":
        from validator import package_version

        return package_version()
    raise AttributeError(f"module 'tracer' has no attribute {name!r}")
