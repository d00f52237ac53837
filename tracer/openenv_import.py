"""Import OpenEnv (``openenv``, or the older ``openenv-core``) without what a run does not use.

OpenEnv imports its Gradio playground eagerly (about 3 to 5 s, most of a run's start-up)
although it treats it as optional: it catches ``ModuleNotFoundError`` for it. We never serve
the playground, so we hide Gradio for the duration of that one import; a later
``import gradio`` elsewhere in the process still works.

``openenv.core``'s ``__init__`` also imports the whole env server side (FastAPI, and its MCP
support through fastmcp: 1.2 s of a run's start-up), which a run that only talks to an env
(``ENV_BASE_URL``, a Docker image) never uses: ``env_client_class`` imports the client modules
alone.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

from tracer.hidden_imports import hidden

#: Set on an ``openenv.core`` module whose ``__init__`` has not run (the client alone loaded).
_CLIENT_ONLY = "__tracer_client_only__"


def import_openenv() -> None:
    """Import ``openenv.core`` (once), skipping the Gradio web UI unless it is asked for."""
    core = sys.modules.get("openenv.core")
    if core is not None and not getattr(core, _CLIENT_ONLY, False):
        return
    wanted = os.environ.get("ENABLE_WEB_INTERFACE", "").lower() in ("true", "1", "yes")
    with hidden(*(() if wanted else ("gradio",))):
        if core is None:
            import openenv.core  # noqa: F401
        else:  # the client alone was loaded: run the package's __init__ in the same module now
            delattr(core, _CLIENT_ONLY)
            assert core.__spec__ is not None and core.__spec__.loader is not None
            core.__spec__.loader.exec_module(core)


def env_client_class() -> Any:
    """Return OpenEnv's ``GenericEnvClient``, without the env server side when not loaded yet.

    ``openenv.core`` is put in ``sys.modules`` unexecuted (its ``__path__`` set, as importing
    a package does before running its ``__init__``), so that importing ``generic_client``
    runs only the client's modules; ``import_openenv`` runs the ``__init__`` later if an
    embedded env needs the server side. Should a version of OpenEnv's client need its package
    ``__init__`` after all, the package is imported whole, as before.
    """
    if "openenv.core" not in sys.modules:
        spec = importlib.util.find_spec("openenv.core")
        if spec is not None and spec.loader is not None and spec.submodule_search_locations:
            core = importlib.util.module_from_spec(spec)
            setattr(core, _CLIENT_ONLY, True)
            sys.modules["openenv.core"] = core
            try:
                return importlib.import_module("openenv.core.generic_client").GenericEnvClient
            except ImportError:
                for name in [n for n in sys.modules if n.startswith("openenv.core")]:
                    del sys.modules[name]
    import_openenv()
    return importlib.import_module("openenv.core.generic_client").GenericEnvClient
