"""Serve an ASGI app on a free 127.0.0.1 port in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self


class BackgroundServer:
    """An ASGI app served by uvicorn on 127.0.0.1 for as long as the ``with`` block lasts."""

    def __init__(self, app: Any, name: str = "server", start_timeout_s: float = 20.0,
                 port: int = 0):
        self.app = app
        self.port = port
        self.name = name
        self.start_timeout_s = start_timeout_s
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Start serving and return once the port accepts connections."""
        import uvicorn

        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
        # and without it every local response stalls ~40 ms (Nagle + delayed ACK).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.port))
        except OSError:
            sock.close()
            raise
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="critical", log_config=None, access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=self.name, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start on 127.0.0.1:{port}")
            time.sleep(0.005)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        """Ask the server to exit and wait briefly for it."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
