"""`flora-eval serve --model M --adapter A [--adapter B ...]`: an OpenAI-compatible server
(/v1/completions, /v1/chat/completions, /v1/models, /health, /telemetry) over the generation
engine. Requests for different adapters (FLoRA, LoRA, IA3) and the base model share each
decode batch, chat requests too."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from harness.errors import UserError
from harness.serve.server import LOOPBACK, build_state, exposure_warning, uvicorn_server
from harness.serve.spec import ServeOptions, ServeSpec

API_KEY_ENV = "FLORA_EVAL_SERVE_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--model", default="tiny", help="alias, hub id or local path (default tiny)")
    add("--served-model-name", metavar="NAME", help="the base model's name in requests (default: --model)")
    add("--adapter", action="append", metavar="[NAME=]ADAPTER",
        help="adapter to serve (repeatable): a name under the adapters directory, a path or a hub id; "
             "served under NAME, else as given")
    add("--adapters-dir", metavar="DIR", help="where adapter names are looked up (default adapters/)")
    add("--host", default=LOOPBACK,
        help=f"address to bind ({LOOPBACK}; others expose the server: a warning without --api-key)")
    add("--port", type=int, default=8000)
    add("--device", help="torch device (default: cuda when available)")
    add("--max-rows", type=int, default=64, help="rows decoded together, at most (64)")
    add("--max-waiting", type=int, default=1024,
        help="samples in flight beyond the rows; more get 429 (1024)")
    add("--max-batched-tokens", type=int, default=8192, help="prompt tokens per prefill forward (8192)")
    add("--max-tokens", type=int, default=1024,
        help="new tokens per sample a request may ask for; more is answered 400 (1024)")
    add("--request-timeout", type=float, default=600.0, metavar="S",
        help="seconds a request waits for the engine's answer, then 504 (600)")
    add("--stall-timeout", type=float, default=60.0, metavar="S",
        help="seconds without progress before /health reports the engine stalled and new requests "
             "get 503 (60)")
    add("--api-key", help=f"require `Authorization: Bearer KEY` (or set ${API_KEY_ENV})")
    add("--threads", type=int, help="torch threads of the engine process (default: torch's)")
    add("--log-level", default="warning", help="uvicorn's log level (warning)")


def parse_adapter(text: str) -> tuple[str, str]:
    """`NAME=ADAPTER` or `ADAPTER` (served under its own name)."""
    name, sep, adapter = text.partition("=")
    if not sep:
        return text, text
    if not name or not adapter:
        raise UserError(f"--adapter {text!r}: use NAME=ADAPTER or ADAPTER")
    return name, adapter


def run(args: argparse.Namespace) -> int:
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if warning := exposure_warning(args.host, api_key):  # first: before anything else can fail
        print(f"flora-eval serve: {warning}", file=sys.stderr, flush=True)
    for flag, value in (("--max-rows", args.max_rows), ("--max-waiting", args.max_waiting),
                        ("--max-batched-tokens", args.max_batched_tokens), ("--max-tokens", args.max_tokens)):
        if value < 1:
            raise UserError(f"{flag} must be a positive integer, not {value}")
    if args.request_timeout <= 0 or args.stall_timeout < 2:
        raise UserError("--request-timeout must be > 0 and --stall-timeout ≥ 2 seconds")
    logging.basicConfig(format="flora-eval serve: %(message)s", stream=sys.stderr)
    options = ServeOptions(args.max_rows, args.max_waiting, args.max_batched_tokens, args.max_tokens, api_key,
                           args.request_timeout, args.stall_timeout)
    adapters = tuple(map(parse_adapter, args.adapter or ()))
    spec = ServeSpec(args.model, adapters, args.adapters_dir, args.device, args.served_model_name, options,
                     args.threads)
    state = build_state(spec)  # the engine process loads the model and adapters
    try:
        server = uvicorn_server(state, args.host, args.port, args.log_level)
        print(f"flora-eval serve: http://{args.host}:{args.port}/v1 serving {', '.join(state.models)} "
              f"(engine pid {state.engine.engine.pid})", file=sys.stderr, flush=True)
        server.run()
    finally:
        state.engine.stop()
    return 1 if state.engine.fatal else 0
