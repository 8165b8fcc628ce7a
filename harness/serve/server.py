"""Assemble a server: the engine process (model, adapters, engine, scheduler), then the app
over it; run it in the foreground (`flora-eval serve`) or in a thread of this process (tests)."""

from __future__ import annotations

import socket
import threading
import time
from types import ModuleType
from typing import TYPE_CHECKING

from harness.errors import UserError
from harness.serve.engine_process import EngineProcess
from harness.serve.spec import ServeSpec

if TYPE_CHECKING:
    from harness.serve.app import ServerState

LOOPBACK = "127.0.0.1"


def _app() -> ModuleType:
    """The app, which needs the `serve` extra (fastapi, uvicorn): imported when a server is
    built, so that the rest of the command line works without the extra."""
    try:
        import uvicorn  # noqa: F401

        from harness.serve import app
    except ModuleNotFoundError as exc:
        raise UserError(f"flora-eval serve needs {exc.name}: pip install 'flora-eval[serve]'") from None
    return app


def build_state(spec: ServeSpec) -> ServerState:
    """Start the engine process (it loads the model and adapters) and wait until it is ready."""
    app = _app()
    engine = EngineProcess(spec)
    info = engine.start()
    models = {name: app.ServedModel(name, index, card) for name, (index, card) in info["models"].items()}
    return app.ServerState(engine, info["tokenizer"], models, info["context"], info["max_tokens"],
                           spec.options.api_key)


def uvicorn_server(state: ServerState, host: str, port: int, log_level: str = "warning"):
    import uvicorn

    config = uvicorn.Config(_app().create_app(state), host=host, port=port, log_level=log_level,
                            access_log=False, timeout_graceful_shutdown=2, backlog=2048)
    return uvicorn.Server(config)


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerThread:
    """The HTTP side in a thread of this process, on a loopback port (the engine in its own
    process): `with ServerThread(build_state(spec)) as url: ...`."""

    def __init__(self, state: ServerState, host: str = LOOPBACK, port: int | None = None):
        self.state, self.host, self.port = state, host, port or free_port(host)
        self.server = uvicorn_server(state, self.host, self.port)
        self.thread = threading.Thread(target=self.server.run, name="flora-eval-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.state.scheduler.stop()
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.state.scheduler.stop()
