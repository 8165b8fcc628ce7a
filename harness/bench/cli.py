"""`flora-eval bench <what>`: each benchmark is its own module `harness.bench.<what>` with
`add_arguments(parser)` and `run(args) -> int`. Every one prints a table, or one JSON object
with `--json` (shape in the README), with ratios to a baseline measured in the same run."""

from __future__ import annotations

import argparse
import importlib

BENCHES = {
    "execute": "programs/s: our executor vs the bare toolchain vs one `docker run` per program "
               "(--executor dask: a two-worker local Dask cluster vs the local pool)",
    "adapters": "forward tokens/s of FLoRA, LoRA (bmm, gather), IA3, PEFT vs the base model",
    "generate": "generation tokens/s: our engine vs model.generate vs PEFT mixed batches",
    "serve": "the paper's serving experiment: throughput and latency versus rank",
    "pipeline": "the main command's wall time (stages overlapped) vs generate-then-execute",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="WHAT", required=True)
    for name, help_text in BENCHES.items():
        bench = sub.add_parser(name, help=help_text)
        bench.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        bench.add_argument("--full", action="store_true", help="the complete grid (slow)")
        try:
            importlib.import_module(f"harness.bench.{name}").add_arguments(bench)
        except ModuleNotFoundError as exc:
            if exc.name != f"harness.bench.{name}":
                raise


def run(args: argparse.Namespace) -> int:
    from harness.errors import UserError

    try:
        module = importlib.import_module(f"harness.bench.{args.bench}")
    except ModuleNotFoundError as exc:
        raise UserError(f"`flora-eval bench {args.bench}` is not available in this build") from exc
    return module.run(args)
