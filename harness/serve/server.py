"""Assemble a server: the engine process (model, adapters, engine, scheduler) under its
supervisor, then the app over it; run it in the foreground (`flora-eval serve`) or in a
thread of this process (tests)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from types import ModuleType
from typing import TYPE_CHECKING

from harness.errors import UserError
from harness.serve.spec import ServeSpec
from harness.serve.supervisor import Supervisor

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
    options = spec.options
    engine = Supervisor(spec, options.stall_timeout)
    info = engine.start()
    models = {name: app.ServedModel(name, index, card) for name, (index, card) in info["models"].items()}
    return app.ServerState(engine, info["tokenizer"], models, info["context"], info["max_tokens"],
                           options.api_key, info["fingerprint"], options.request_timeout)


def uvicorn_server(state: ServerState, host: str, port: int, log_level: str = "warning"):
    import uvicorn

    config = uvicorn.Config(_app().create_app(state), host=host, port=port, log_level=log_level,
                            access_log=False, timeout_graceful_shutdown=2, backlog=2048)
    server = uvicorn.Server(config)
    state.engine.on_fatal = lambda message: setattr(server, "should_exit", True)
    return server


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; any other address or name may be reachable from elsewhere."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """The warning line for a server others can reach with no key, else None."""
    if api_key or is_loopback(host):
        return None
    return (f"warning: --host {host} is not a loopback address and no API key is set: anyone who can "
            "reach this port can use the model; set --api-key (or $FLORA_EVAL_SERVE_API_KEY)")


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
                self.state.engine.stop()
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.state.engine.stop()
