"""Import OpenEnv (``openenv``, or the older ``openenv-core``) without its Gradio web UI.

OpenEnv imports its Gradio playground eagerly (about 3 to 5 s, most of a run's start-up)
although it treats it as optional: it catches ``ModuleNotFoundError`` for it. We never serve
the playground, so we hide Gradio for the duration of that one import; a later
``import gradio`` elsewhere in the process still works.
"""

from __future__ import annotations

import os
import sys


def import_openenv() -> None:
    """Import ``openenv.core`` (once), skipping the Gradio web UI unless it is asked for."""
    if "openenv.core" in sys.modules:
        return
    wanted = os.environ.get("ENABLE_WEB_INTERFACE", "").lower() in ("true", "1", "yes")
    if wanted or "gradio" in sys.modules:
        import openenv.core
        return
    sys.modules["gradio"] = None  # type: ignore[assignment]  # makes `import gradio` fail fast
    try:
        import openenv.core  # noqa: F401
    finally:
        if sys.modules.get("gradio", 0) is None:
            del sys.modules["gradio"]
