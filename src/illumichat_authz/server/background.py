"""uvicorn serving an ASGI app from a background thread: the demo, and tests (the test kit's
``serve_asgi``) that want a real server on loopback rather than an in-process transport.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

__all__ = ["BackgroundServer"]


class BackgroundServer:
    """``with BackgroundServer(app) as server: ... server.url ...``

    ``port=0`` binds a free port (``server.port`` says which); ``config`` goes to
    ``uvicorn.Config`` as it is. Entering waits until the server listens, or raises
    ``RuntimeError`` (a port already taken, say); leaving stops it.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, **config: Any) -> None:
        import uvicorn

        config.setdefault("log_level", "warning")
        self.host = host
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **config))
        self._thread = threading.Thread(target=self._run, name="uvicorn", daemon=True)
        self._failure: BaseException | None = None
        self.port = port

    def _run(self) -> None:
        try:
            self._server.run()
        except BaseException as exc:  # uvicorn exits (SystemExit) when it cannot bind
            self._failure = exc

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self, *, timeout_s: float = 10.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the server did not start on {self.host}:{self.port}"
                ) from self._failure
            time.sleep(0.01)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        return self

    def wait(self, timeout_s: float) -> None:
        """Block until the server stops or ``timeout_s`` passes (Ctrl-C still works)."""
        self._thread.join(timeout=timeout_s)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
