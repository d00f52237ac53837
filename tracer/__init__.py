"""Records, replays and exports LLM agent episodes in OpenEnv environments."""

__version__ = "0.1.0"
