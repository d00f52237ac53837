"""SIGTERM/SIGINT as a run sees them: they end an episode's work, never a line or an [END].

Light on purpose (nothing but the standard library): ``inference.py`` installs the handler with
``hold_until_exit()`` before its heavy imports, so a signal that comes early waits for the
first episode instead of killing the process silently (SIGTERM) or with a traceback (SIGINT).
"""

from __future__ import annotations

import atexit
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGNUMS = (signal.SIGINT, signal.SIGTERM)  # SIGTERM last: once it is caught, both are ours


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived; the episode ends at once, but still prints its [END]."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


class SignalGate:
    """Turns the first SIGTERM/SIGINT into ``Interrupted``, but never inside ``hold()``.

    Recording a line and printing it happen under ``hold()``, so an interrupt cannot land
    between them: whatever reached stdout is also in the database. A whole episode runs
    under ``hold()`` with only its work under ``release()``, so a signal while it ends waits
    for its [END] line and the episode's row.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.depth = 0
        self.fired = False
        self.pending: int | None = None
        self.installed = False

    def install(self) -> dict[int, Any]:
        """Handle SIGTERM and SIGINT from now on (reset); return the handlers they had."""
        self.reset()
        previous: dict[int, Any] = {
            signum: signal.signal(signum, self.handler) for signum in SIGNUMS
        }
        self.installed = True
        return previous

    def uninstall(self, previous: dict[int, Any]) -> None:
        """Give SIGTERM and SIGINT back the handlers ``install`` returned."""
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        self.installed = False

    def handler(self, signum: int, frame: Any) -> None:
        if self.fired:  # later signals must not cut the [END] line short
            return
        self.fired = True
        if self.depth:
            self.pending = signum
        else:
            raise Interrupted(signum)

    @contextmanager
    def hold(self) -> Iterator[None]:
        depth = self.depth  # restored, not decremented: right even if a signal cut in
        self.depth = depth + 1
        try:
            yield
        finally:
            self.depth = depth
            if not self.depth:
                self.raise_pending()

    @contextmanager
    def release(self) -> Iterator[None]:
        """Let signals through again inside ``hold()``; one that waited is raised at once."""
        depth, self.depth = self.depth, 0
        try:
            self.raise_pending()
            yield
        finally:
            self.depth = depth

    def raise_pending(self) -> None:
        """Raise ``Interrupted`` for a signal held so far, if one came."""
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)


SIGNALS = SignalGate()


def hold_until_exit() -> None:
    """Handle SIGTERM/SIGINT and hold them for the rest of the process: only an episode's work
    (``SIGNALS.release()``) lets one through. ``inference.py`` calls this first of all."""
    SIGNALS.install()
    SIGNALS.depth += 1
    # Python gives a signal with a Python handler back its default action late in its
    # shutdown, when a SIGTERM would still kill the process (exit -15) after the run's end;
    # an ignored signal it leaves alone.
    atexit.register(lambda: [signal.signal(signum, signal.SIG_IGN) for signum in SIGNUMS])


@contextmanager
def deferred(signum: int = signal.SIGINT) -> Iterator[None]:
    """Hold ``signum`` through the block, then hand one that came to the handler it had: for
    bookkeeping a Ctrl-C must not cut in half (a worker's answer taken, not yet counted)."""
    if threading.current_thread() is not threading.main_thread():  # handlers are main's
        yield
        return
    came: list[int] = []
    previous = signal.signal(signum, lambda number, frame: came.append(number))
    try:
        yield
    finally:
        signal.signal(signum, previous)
        if came:
            signal.raise_signal(signum)  # its handler runs now: KeyboardInterrupt by default
