"""`flora-eval bench serve --http`: `flora-eval serve` over HTTP against the in-process engine,
on the same workload, measured in the same run.

Workload: `--requests` prompts, request i under adapter i mod 4 (base, FLoRA, LoRA, IA3), with
seed i, temperature 1, up to `--output-tokens` new tokens. The in-process engine decodes them
with `--concurrency` rows; the server (a `flora-eval serve` process on a loopback port, the
same model and adapter files, `--max-rows` = `--concurrency`) gets them from `--concurrency`
concurrent clients (httpx2). Output: tokens/s of both and their ratio (server ÷
in-process), and a check of every answer: each request answered once, no error, and its text
equal to the in-process engine's for the same seed (the server seeds samples as the engine
does), so nothing was lost, answered twice or mixed up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness.serve.server import LOOPBACK, free_port

METHODS = ("flora", "lora", "ia3")
PERTURB = 0.3
MODEL_SIZES = {  # GPTBigCode shapes over tiny's byte tokenizer (vocabulary 257)
    "tiny": None,  # the embedded model itself
    "cpu-small": {"n_embd": 256, "n_layer": 4, "n_head": 4, "n_inner": 1024},
    "cpu-medium": {"n_embd": 512, "n_layer": 8, "n_head": 8, "n_inner": 2048},
}


def add_arguments(add) -> None:
    add("--http", action="store_true",
        help="flora-eval serve over HTTP vs the in-process engine, same workload (ratio)")
    add("--rows", type=int, default=32, help="--http: rows decoded together, in-process and served (32)")
    add("--concurrency", type=int, default=64, help="--http: concurrent clients (64)")
    add("--output-tokens", type=int, default=128, help="--http: new tokens per request, at most (128)")
    add("--http-model", default="tiny", choices=list(MODEL_SIZES), help="--http: the model (tiny)")


@dataclass(frozen=True)
class Item:
    index: int
    prompt: str
    adapter: str  # served name: "base" or a method's adapter
    seed: int


def workload(count: int, seed: int) -> list[Item]:
    """Prompts of 16-96 printable characters (one token each in the byte tokenizer)."""
    rng = random.Random(seed)
    names = ("base", *METHODS)
    alphabet = "abcdefghijklmnopqrstuvwxyz_ ()=+\n    "
    return [Item(i, "def " + "".join(rng.choice(alphabet) for _ in range(rng.randint(12, 92))),
                 names[i % len(names)], 1000 + i) for i in range(count)]


def prepare(folder: Path, size: str, seed: int) -> Path:
    """The model (saved, for the server process) and one adapter per method beside it."""
    import dataclasses

    import torch

    from harness.adapters import FLoRAConfig, IA3Config, LoRAConfig, content_hash, init_adapter, save_adapter
    from harness.models import build_tiny

    model, tokenizer = build_tiny()
    if MODEL_SIZES[size]:
        from transformers import AutoModelForCausalLM

        config = model.config
        for key, value in MODEL_SIZES[size].items():
            setattr(config, key, value)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    gen = torch.Generator().manual_seed(seed)
    for method, config in zip(METHODS, (FLoRAConfig(r=4), LoRAConfig(r=4, lora_alpha=8), IA3Config()),
                              strict=True):
        spec = init_adapter(model, config, name=method, seed=seed)
        tensors = {k: t + PERTURB * torch.randn(t.shape, generator=gen) for k, t in spec.tensors.items()}
        spec = dataclasses.replace(spec, tensors=tensors, content_hash=content_hash(spec.config, tensors))
        save_adapter(spec, folder / "adapters" / method)
    return folder


def in_process(folder: Path, items: list[Item], rows: int, output_tokens: int) -> dict:
    """The engine alone: every request there at the start, `rows` rows."""
    from harness.adapters import attach, load_adapter
    from harness.generate.engine import BASE_ROW, Engine, EngineConfig, Request
    from harness.models import load_model

    loaded = load_model(str(folder / "model"), device="cpu")
    specs = [load_adapter(folder / "adapters" / m, base_model=loaded.model) for m in METHODS]
    handle = attach(loaded.model, specs)
    index = {"base": BASE_ROW, **{m: i for i, m in enumerate(METHODS)}}
    config = EngineConfig(1.0, 1.0, output_tokens, rows, max_positions=loaded.model.config.n_positions)
    engine = Engine(loaded.model, loaded.tokenizer, config, set_rows=handle.set_rows)
    requests = [Request((it.index,), tuple(loaded.tokenizer(it.prompt)["input_ids"]), index[it.adapter],
                        ((0, it.seed),)) for it in items]
    try:
        start = time.perf_counter()
        done = {r.key[0]: s for r, s in engine.generate(requests)}
        seconds = time.perf_counter() - start
    finally:
        handle.detach()
    return {"seconds": seconds, "tokens": sum(len(s.tokens) for s in done.values()),
            "texts": {i: s.text for i, s in done.items()}}


def served(url: str, items: list[Item], concurrency: int, output_tokens: int) -> dict:
    """Every request over HTTP from `concurrency` concurrent clients (httpx2, the HTTP client
    the `openai` package is built on, without its response models: the client shares this
    machine's cores with the server, so it should cost little)."""
    async def main() -> dict:
        import httpx2

        limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        client = httpx2.AsyncClient(base_url=f"{url}/v1", timeout=120, limits=limits)
        queue = list(reversed(items))
        texts: dict[int, list[str]] = {}
        statuses: Counter = Counter()
        tokens = 0

        async def worker() -> None:
            nonlocal tokens
            while queue:
                item = queue.pop()
                try:
                    reply = await client.post("/completions", json={
                        "model": item.adapter, "prompt": item.prompt, "max_tokens": output_tokens,
                        "temperature": 1.0, "top_p": 1.0, "seed": item.seed})
                except httpx2.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                    continue
                statuses[str(reply.status_code)] += 1
                if reply.status_code == 200:
                    body = reply.json()
                    texts.setdefault(item.index, []).append(body["choices"][0]["text"])
                    tokens += body["usage"]["completion_tokens"]

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
        await client.aclose()
        return {"seconds": seconds, "tokens": tokens, "texts": texts, "statuses": dict(statuses)}

    return asyncio.run(main())


def start_server(folder: Path, port: int, rows: int, log: Path, max_tokens: int = 1024) -> subprocess.Popen:
    """The server under test; `max_tokens`: its cap (a request above it is a 400)."""
    argv = [sys.executable, "-m", "harness.cli", "serve", "--model", str(folder / "model"), "--device", "cpu",
            "--max-tokens", str(max_tokens),
            "--served-model-name", "base", "--host", LOOPBACK, "--port", str(port),
            "--adapters-dir", str(folder / "adapters"),
            "--max-rows", str(rows), "--max-waiting", str(max(4 * rows, 1024)),
            *[a for m in METHODS for a in ("--adapter", m)]]
    env = {**os.environ, "OMP_NUM_THREADS": str(os.environ.get("OMP_NUM_THREADS", "1"))}
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text()[-1000:]}")
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/health", timeout=2):
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the server did not answer on port {port}")


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_http(args: argparse.Namespace) -> int:
    import torch

    from harness.errors import UserError

    count, rows, output_tokens = args.requests or 512, args.rows, args.output_tokens
    clients, repeats = args.concurrency, args.repeats or 3
    if min(count, rows, output_tokens, clients) < 1:
        raise UserError("--requests, --rows, --concurrency and --output-tokens must be positive")
    items = workload(count, args.seed)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    log(f"bench serve --http: {args.http_model}, {count} requests over base, FLoRA, LoRA and IA3, "
        f"{rows} rows, {clients} clients, up to {output_tokens} tokens each")
    with tempfile.TemporaryDirectory(prefix="flora-eval-bench-http-") as tmp:
        folder = prepare(Path(tmp), args.http_model, args.seed)
        port = free_port()
        process = start_server(folder, port, rows, folder / "serve.log", max(output_tokens, 1024))
        try:
            url = f"http://{LOOPBACK}:{port}"
            served(url, items[: min(count, rows)], rows, 4)  # warm-up
            locals_, remotes = [], []
            for repeat in range(repeats):  # interleaved: machine noise spreads over both
                locals_.append(in_process(folder, items, rows, output_tokens))
                remotes.append(served(url, items, clients, output_tokens))
                log(f"  repeat {repeat + 1}: in-process {rate(locals_[-1]):9.1f} tok/s, "
                    f"served {rate(remotes[-1]):9.1f} tok/s")
            local, remote = max(locals_, key=rate), max(remotes, key=rate)
            with urllib.request.urlopen(f"{url}/telemetry", timeout=10) as reply:
                telemetry = json.loads(reply.read())
        finally:
            stop_server(process)
    result = summary(local, remote, items, telemetry, remotes)
    result.update(bench="serve-http", model=args.http_model, requests=count, rows=rows, concurrency=clients,
                  output_tokens=output_tokens, threads=torch.get_num_threads())
    if args.json:
        print(json.dumps(result))
    else:
        print(f"in-process engine {result['in_process_tokens_per_s']:10.1f} tok/s ({local['seconds']:.2f} s)")
        print(f"HTTP server       {result['served_tokens_per_s']:10.1f} tok/s ({remote['seconds']:.2f} s)")
        print(f"ratio (server / in-process): {result['ratio']:.3f}")
        print(f"answered {result['answered']}/{count} once each in every run, statuses {result['statuses']}, "
              f"equal to in-process {result['equal']}/{count}, most adapters in one step "
              f"{result['max_adapters_per_step']}, mean rows per step {result['server_mean_rows']}")
    return 0


def rate(run: dict) -> float:
    return run["tokens"] / run["seconds"]


def summary(local: dict, remote: dict, items: list[Item], telemetry: dict, remotes: list[dict]) -> dict:
    """Speeds of the fastest run of each; answers checked in every served run."""
    local_rate, remote_rate = rate(local), rate(remote)
    steps = max(telemetry.get("decode_steps", 0), 1)
    statuses: Counter = Counter()
    for run in remotes:
        statuses.update(run["statuses"])
    answers = [run["texts"] for run in remotes]
    return {"in_process_tokens_per_s": round(local_rate, 1), "served_tokens_per_s": round(remote_rate, 1),
            "ratio": round(remote_rate / local_rate, 3), "tokens": remote["tokens"],
            "in_process_tokens": local["tokens"], "statuses": dict(statuses), "served_runs": len(remotes),
            "answered": min(sum(len(v) == 1 for v in a.values()) for a in answers),
            "answered_twice": sum(len(v) > 1 for a in answers for v in a.values()),
            "lost": sum(it.index not in a for a in answers for it in items),
            "equal": min(sum(a.get(it.index) == [local["texts"][it.index]] for it in items) for a in answers),
            "max_adapters_per_step": telemetry.get("max_adapters_per_step", 0),
            "server_decode_steps": telemetry.get("decode_steps", 0),
            "server_mean_rows": round(telemetry.get("decode_tokens", 0) / steps, 1)}
