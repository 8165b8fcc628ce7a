"""Shared by the serving tests: trained-like adapters (one per method) saved to a folder, and
real servers on loopback ports (`flora-eval serve` and `transformers serve` as processes)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx2
import torch

from harness.adapters import FLoRAConfig, IA3Config, LoRAConfig, content_hash, init_adapter, save_adapter
from harness.bench.serve_http import stop_server
from harness.serve.server import LOOPBACK, free_port

ADAPTERS = ("py-r1-flora", "py-r2-lora", "py-ia3")  # one per method
BIN = Path(sys.executable).parent


def trained_like(model, config, name: str, seed: int):
    """A fresh adapter moved well away from the identity, as training would."""
    spec = init_adapter(model, config, name=name, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    tensors = {k: t + (0.3 if "lora_B" in k else 0.5) * torch.randn(t.shape, generator=gen)
               for k, t in spec.tensors.items()}
    return dataclasses.replace(spec, tensors=tensors, content_hash=content_hash(spec.config, tensors))


def save_adapters(model, folder: Path) -> Path:
    configs = (FLoRAConfig(r=1), LoRAConfig(r=2, lora_alpha=4), IA3Config())
    for seed, (name, config) in enumerate(zip(ADAPTERS, configs, strict=True), start=1):
        save_adapter(trained_like(model, config, name, seed), folder / name,
                     metadata={"language": "py", "base_model": "tiny"})
    return folder


def wait_healthy(url: str, process: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx2.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"no answer from {url} after {seconds} s: {log.read_text()[-2000:]}")


@contextmanager
def started_server(argv: list[str], log: Path, port: int, env: dict | None = None):
    """Start a server command on a loopback port; yield its URL and process; stop it (SIGINT,
    then kill)."""
    url = f"http://{LOOPBACK}:{port}"
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})})
    try:
        wait_healthy(url, process, log)
        yield url, process
    finally:
        stop_server(process)


@contextmanager
def server_process(argv: list[str], log: Path, port: int, env: dict | None = None):
    with started_server(argv, log, port, env) as (url, _):
        yield url


@contextmanager
def flora_serve(adapters_dir: Path, log: Path, *extra: str):
    port = free_port()
    argv = [str(BIN / "flora-eval"), "serve", "--model", "tiny", "--device", "cpu", "--port", str(port),
            "--adapters-dir", str(adapters_dir), *[a for name in ADAPTERS for a in ("--adapter", name)],
            *extra]
    with server_process(argv, log, port, env={"OMP_NUM_THREADS": "1"}) as url:
        yield url
