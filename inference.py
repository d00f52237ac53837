"""Reference OpenEnv inference script: runs the agent and records every episode.

Configuration (environment variables or .env): API_BASE_URL, MODEL_NAME, HF_TOKEN (or API_KEY),
LOCAL_IMAGE_NAME (or IMAGE_NAME), ENV_BASE_URL, TASKS, MAX_STEPS, TRACE_DB, TRACE=off,
TRACE_STRICT_EXIT=1.
stdout carries only [START]/[STEP]/[END] lines; diagnostics go to stderr.
Exit codes: 0 every episode printed its [END] (a failed episode too, unless TRACE_STRICT_EXIT=1:
then 1), 128 + signal number on SIGTERM/SIGINT, 1 stdout closed or an unexpected error,
2 configuration error.
"""

import sys

from tracer.signals import hold_until_exit

hold_until_exit()  # before the imports that take seconds: a signal then waits for an episode

from tracer.runner import main

if __name__ == "__main__":
    sys.exit(main())
