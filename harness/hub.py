"""The Hugging Face hub, asked once per process: may it be used, and can it be reached?

Without this, a machine with no hub pays the libraries' own retries (huggingface_hub backs
off 1+2+4+8+8 s per file, twice per model) and prints a line for each try before the one
error that matters. Here `HF_HUB_OFFLINE` (and `HF_DATASETS_OFFLINE` for data sets) is
honoured first; else one short request to the endpoint (`HF_ENDPOINT`) decides, within
`PROBE_TIMEOUT_S`, and the answer is kept. `quiet()` silences the libraries' retry chatter
while a caller loads from the hub or its local cache.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 4.0
TRUE_VALUES = {"1", "ON", "YES", "TRUE"}  # what huggingface_hub and datasets read as set
MODEL_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
DATASET_OFFLINE_VARS = ("HF_DATASETS_OFFLINE", *MODEL_OFFLINE_VARS)
LIBRARY_LOGGERS = ("huggingface_hub", "transformers", "datasets", "filelock", "fsspec")


@dataclass(frozen=True)
class HubState:
    """Whether hub requests may be made, and if not, why (for the one line a user sees)."""

    usable: bool
    why: str = ""  # e.g. "HF_HUB_OFFLINE is set" or "https://huggingface.co cannot be reached (...)"
    switched_off: bool = False  # by an *_OFFLINE variable, not by the network


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_variable(names: tuple[str, ...] = MODEL_OFFLINE_VARS) -> str | None:
    """The first of `names` set to a true value, if any. (datasets reads HF_DATASETS_OFFLINE
    before HF_HUB_OFFLINE, so HF_DATASETS_OFFLINE=0 turns it back on for data sets.)"""
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip():
            return name if value.strip().upper() in TRUE_VALUES else None
    return None


def hub_state(for_datasets: bool = False) -> HubState:
    """Whether the hub may be used now: switched off by the environment, or probed (once)."""
    switched = offline_variable(DATASET_OFFLINE_VARS if for_datasets else MODEL_OFFLINE_VARS)
    if switched:
        return HubState(False, f"{switched} is set", switched_off=True)
    problem = _probe(endpoint())
    if problem:
        return HubState(False, f"the Hugging Face hub ({endpoint()}) cannot be reached ({problem})")
    return HubState(True)


@cache
def _probe(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """"" when `url` answers at all (any HTTP status: the hub is there), else why not. Name
    resolution has no timeout of its own, so the request runs in a thread we stop waiting for."""
    outcome: list[str] = []

    def ask() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s).close()
            outcome.append("")
        except urllib.error.HTTPError:
            outcome.append("")  # an answer, whatever its status
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            outcome.append(str(reason).strip() or type(exc).__name__)

    thread = threading.Thread(target=ask, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    return outcome[0] if outcome else f"no answer within {timeout_s:g} s"


@contextmanager
def quiet() -> Iterator[None]:
    """The hub libraries' loggers at ERROR and their warnings off, for one load."""
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
