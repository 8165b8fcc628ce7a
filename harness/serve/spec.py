"""What a server is asked to serve, and its limits: plain records, sent to the engine process."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServeOptions:
    max_rows: int = 64  # rows decoded together, at most
    max_waiting: int = 1024  # samples in flight beyond the rows; more → 429
    max_batched_tokens: int = 8192  # prompt tokens (padded) per prefill forward
    max_tokens: int = 1024  # new tokens a request may ask for, at most (more → 400)
    api_key: str | None = None
    request_timeout: float = 600.0  # seconds a request waits for the engine's answer (then 504)
    stall_timeout: float = 60.0  # seconds without progress before the engine counts as stalled


@dataclass(frozen=True)
class ServeSpec:
    """What the engine process loads: the model, its adapters as (served name, adapter name
    or path), where adapter names are looked up, the device and the base model's served name."""

    model: str = "tiny"
    adapters: tuple[tuple[str, str], ...] = ()
    adapters_dir: str | None = None
    device: str | None = None
    base_name: str | None = None
    options: ServeOptions = field(default_factory=ServeOptions)
    threads: int | None = None  # torch threads in the engine process (None: torch's default)
