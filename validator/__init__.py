"""Checks OpenEnv ``inference.py`` stdout against the [START]/[STEP]/[END] grammar.

Kept light on purpose: it imports neither ``tracer`` nor ``openai`` nor ``openenv``.
"""

__version__ = "0.1.0"
