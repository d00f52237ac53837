"""Import a package without the optional packages it would pull in and we never use."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def hidden(*names: str) -> Iterator[None]:
    """Make ``import name`` fail fast (``ModuleNotFoundError``) inside the block, for each of
    ``names`` not imported yet; afterwards the names import normally again."""
    hide = [name for name in names if name not in sys.modules]
    for name in hide:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in hide:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
