"""Assemble a server: a loaded model, its adapters attached once (rows pick theirs by index),
the engine, the scheduler and the app; run it in the foreground (`flora-eval serve`) or in
a thread of this process (`bench serve --http`, tests)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

from harness.errors import UserError
from harness.generate.engine import Engine, EngineConfig
from harness.generate.telemetry import GenerationTelemetry
from harness.serve.app import ServedModel, ServerState, create_app
from harness.serve.scheduler import Scheduler

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServeOptions:
    max_rows: int = 64  # rows decoded together, at most
    max_waiting: int = 1024  # samples queued beyond the rows; more → 429
    max_batched_tokens: int = 8192  # prompt tokens (padded) per prefill forward
    max_tokens: int = 1024  # new tokens a request may get, at most (longer asks are capped)
    api_key: str | None = None


def build_state(loaded, adapters: list[tuple[str, object]], options: ServeOptions,
                base_name: str | None = None) -> ServerState:
    """`adapters`: (served name, AdapterFile). The base model answers to `base_name` (default:
    the name it was loaded under)."""
    from harness.adapters import attach

    base_name = base_name or loaded.name
    names = [base_name] + [name for name, _ in adapters]
    if len(set(names)) != len(names):
        raise UserError(f"served names must differ: {', '.join(names)}; give adapters other names")
    set_rows = attach(loaded.model, [spec for _, spec in adapters]).set_rows if adapters else None
    context = _context(loaded.model)
    config = EngineConfig(temperature=1.0, top_p=1.0, max_new_tokens=min(options.max_tokens, context),
                          slots=options.max_rows, max_positions=context)
    engine = Engine(loaded.model, loaded.tokenizer, config, set_rows=set_rows,
                    telemetry=GenerationTelemetry())
    scheduler = Scheduler(engine, options.max_rows, options.max_waiting, options.max_batched_tokens)
    models = {base_name: ServedModel(base_name, -1, {"root": loaded.source, "parent": None, "flora_eval": {
        "revision": loaded.revision, "method": "base", "rank": None, "hash": "", "language": None}})}
    for index, (name, spec) in enumerate(adapters):
        models[name] = ServedModel(name, index, {"root": str(spec.path), "parent": base_name, "flora_eval": {
            "revision": loaded.revision, "method": spec.method, "rank": spec.rank, "hash": spec.content_hash,
            "language": spec.metadata.get("language")}})
    return ServerState(scheduler, loaded.tokenizer, models, context, config.max_new_tokens, options.api_key)


def _context(model) -> int:
    config = model.config
    return int(getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", 1 << 30))


def uvicorn_server(state: ServerState, host: str, port: int, log_level: str = "warning"):
    import uvicorn

    config = uvicorn.Config(create_app(state), host=host, port=port, log_level=log_level,
                            access_log=False, timeout_graceful_shutdown=2, backlog=2048)
    return uvicorn.Server(config)


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerThread:
    """The server in a thread of this process, on a loopback port: `with ServerThread(state) as url`."""

    def __init__(self, state: ServerState, host: str = LOOPBACK, port: int | None = None):
        self.state, self.host, self.port = state, host, port or free_port(host)
        self.server = uvicorn_server(state, self.host, self.port)
        self.thread = threading.Thread(target=self.server.run, name="flora-eval-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> str:
        self.state.scheduler.start()
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.state.scheduler.stop()
