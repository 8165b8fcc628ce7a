"""flora-eval's command line. The main command is the pipeline, visible in `run_pipeline`:

    problems → generate → execute → score → report
                (overlapped: a completions file is executed as soon as it is written)

Each stage is also a subcommand that works from files on disk. The work is done by the
Python API (harness/api.py), one function per stage; tool commands (images, bench, train,
check, baseline) live in their own modules. This file only parses and wires.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sqlite3
import sys
from pathlib import Path

from harness import api
from harness.errors import UserError
from harness.records import BENCHMARK, SamplingConfig

RESULTS_ROOT = api.RESULTS_ROOT
NO_CACHE_HELP = "execute every program again instead of reusing cached results (which it refreshes)"

# Tool subcommands: name → module exposing `add_arguments(parser)` and `run(args) -> int`.
TOOL_COMMANDS = {
    "images": ("harness.execute.images_cli", "build and check the per-language Docker images"),
    "bench": ("harness.bench.cli", "benchmarks, printed as ratios to a same-run baseline"),
    "train": ("harness.train", "train FLoRA, LoRA or IA3 adapters"),
    "serve": ("harness.serve.cli", "an OpenAI-compatible server: a model and its adapters, one batch"),
    "check": ("harness.report.gate", "CI gate: compare a run with a saved baseline"),
    "baseline": ("harness.report.baseline", "save a run's scores as a CI baseline"),
}


# ---------------------------------------------------------------------------------------
# The main command: every stage, in order.
# ---------------------------------------------------------------------------------------
def run_pipeline(args: argparse.Namespace) -> int:
    evaluation = evaluation_from(args)  # 1. problems, model, adapters, sampling
    run, invocation = api.generate_and_execute(  # 2. generate, 3. execute each file as it is written
        evaluation, run_dir_from(args), jobs=args.jobs, use_cache=not args.no_cache,
        **executor_options(args), **generation_options(args))
    if not api.is_rank0():  # under torchrun, rank 0 alone writes, executes, scores and reports
        return 0
    api.score(run)  # 4. score
    paths = api.report(run.root)  # 5. report
    invocation.update(finished=True)
    print(paths["table"].read_text(encoding="utf-8"))
    print(f"run: {run.root}  report: {paths['html']}")
    return 0


def evaluation_from(args: argparse.Namespace) -> api.Evaluation:
    sampling = SamplingConfig(n=args.n, temperature=args.temperature, top_p=args.top_p,
                              max_tokens=args.max_tokens, seed=args.seed)
    return api.Evaluation(model=args.model, adapters=tuple(args.adapter or ()), langs=tuple(args.lang or ()),
                          sampling=sampling, benchmarks=tuple(args.benchmark or (BENCHMARK,)),
                          dataset=args.dataset, limit=args.limit, adapters_dir=args.adapters_dir,
                          endpoint=endpoint_from(args), prompt_style=args.prompt_style)


def endpoint_from(args: argparse.Namespace):
    """--endpoint and its options, checked (None: generate in-process)."""
    if not args.endpoint:
        return None
    from harness.generate.endpoint import EndpointConfig

    return EndpointConfig.from_cli(args.endpoint, args.served_name, args.concurrency, args.api_key_env,
                                   args.request_timeout, args.retries)


def generation_options(args: argparse.Namespace) -> dict:
    return {"batch_size": args.batch_size, "device": args.device, "load_8bit": args.load_8bit,
            "overwrite": args.overwrite}


def executor_options(args: argparse.Namespace) -> dict:
    return {"executor": args.executor, "scheduler": args.scheduler, "cold_toolchains": args.cold_toolchains}


def add_executor_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=("local", "dask"), default="local",
                        help="where programs run: this machine's Docker (default) or the workers of a "
                             "Dask cluster (needs the dask extra and --scheduler)")
    parser.add_argument("--scheduler", help="the Dask scheduler: tls://HOST:PORT (TLS settings from Dask's "
                        "config; docs/scale-out.md), tcp:// on one machine, or a scheduler file")
    parser.add_argument("--cold-toolchains", action="store_true",
                        help="start every compiler afresh for each program (MultiPL-E's way) instead of "
                             "the languages' warm compilers; the statuses are the same, only slower")


def run_dir_from(args: argparse.Namespace) -> Path:
    if args.run_dir:
        return Path(args.run_dir)
    from harness.runs import new_run_id

    return RESULTS_ROOT / (args.run_id or new_run_id(args.model))


# ---------------------------------------------------------------------------------------
# Stage subcommands: each starts from files on disk.
# ---------------------------------------------------------------------------------------
def cmd_generate(args: argparse.Namespace) -> int:
    run, invocation, telemetry = api.generate(evaluation_from(args), Path(args.run_dir),
                                              **generation_options(args))
    if invocation is not None:
        invocation.update(finished=True)
    print(f"completions in {run.root} ({telemetry.prompts} prompts sampled)")
    return 0


def cmd_execute(args: argparse.Namespace) -> int:
    from harness.execute import execute_paths
    from harness.runs import RunDir

    inputs = [Path(p) for p in args.inputs]
    if len(inputs) == 1 and RunDir.is_run(inputs[0]) and not args.out:
        execution = api.execute(api.open_run(inputs[0]), jobs=args.jobs, use_cache=not args.no_cache,
                                **executor_options(args))
        print(f"results in {inputs[0]} ({execution.telemetry.get('programs', 0)} programs)")
        return 0
    from harness.execute import open_executor

    with open_executor(args.executor, args.jobs, not args.no_cache, args.scheduler,
                       args.cold_toolchains) as runner:
        written = execute_paths(inputs, jobs=args.jobs, out_dir=Path(args.out) if args.out else None,
                                lang=args.exec_lang, dataset=args.exec_dataset,
                                benchmark=args.exec_benchmark, use_cache=not args.no_cache, executor=runner)
    for path in written:
        print(path)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from harness.score import SCORES_FILE

    run = api.open_run(args.run)
    scores = api.score(run)
    print(f"{run.root / SCORES_FILE} ({len(scores)} problems scored)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import write_combined_report
    from harness.runs import RunDir

    runs = [RunDir.existing(path) for path in args.runs]
    if len(runs) == 1:
        paths = api.report(runs[0].root)
    else:
        paths = write_combined_report(runs, Path(args.out or RESULTS_ROOT / "combined"))
    print(paths["table"].read_text(encoding="utf-8"))
    print(f"report: {paths['html']}")
    return 0


# ---------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------
def add_model_args(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--model", default=None if required else "tiny", required=required,
                        help="alias (starcoder-15b, starcoderbase-3b, starcoderbase-1b, tiny), "
                             "hub id or local path")
    parser.add_argument("--adapter", action="append", metavar="NAME",
                        help="adapter to evaluate beside the base model (repeatable): a name "
                             "under the adapters directory, a local path or a hub id")
    parser.add_argument("--adapters-dir", metavar="DIR",
                        help="where adapter names are looked up (default: adapters/ or "
                             "$FLORA_EVAL_ADAPTERS)")
    parser.add_argument("--lang", action="append", metavar="LANG",
                        help="MultiPL-E language key or alias, e.g. py, rb, ruby, rs (repeatable; "
                             "default: the languages the adapters were trained on, else py)")
    parser.add_argument("--benchmark", action="append", metavar="NAME",
                        help="MultiPL-E benchmark: humaneval or mbpp (repeatable; default humaneval)")
    parser.add_argument("--dataset", metavar="PATH",
                        help="local MultiPL-E data: a .jsonl/.json file, a directory of "
                             "<benchmark>-<lang>.jsonl, or one holding a folder per benchmark "
                             "(e.g. ../shared/multipl-e; default: the hub, pinned revision)")
    parser.add_argument("--limit", type=int, help="only the first N problems per language")
    parser.add_argument("-n", "--n", type=int, default=100, help="samples per problem")
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt-style", choices=("completion", "instruct"), default="completion",
                        help="completion: MultiPL-E's prompt, cut at its stop tokens (default); instruct: a "
                             "chat conversation in the model's chat template, code taken from the reply "
                             "(docs/instruct.md)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="rows decoded together (default: from the memory budget)")
    parser.add_argument("--device", help="torch device (default: cuda when available)")
    parser.add_argument("--load-8bit", action="store_true",
                        help="8-bit base weights (GPU with bitsandbytes only)")
    parser.add_argument("--overwrite", action="store_true",
                        help="regenerate the files of the run made with other settings (default: stop)")
    served = parser.add_argument_group("served models (an OpenAI-compatible /v1/completions server)")
    served.add_argument("--endpoint", metavar="URL",
                        help="sample from this server instead of in-process (e.g. http://127.0.0.1:8000/v1); "
                             "--model and each --adapter are its served model names")
    served.add_argument("--served-name", action="append", metavar="ADAPTER=NAME",
                        help="the server's name for an adapter (or the model) where it differs (repeatable)")
    served.add_argument("--concurrency", type=int, default=8, help="requests in flight (8)")
    served.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                        help="environment variable holding the API key (OPENAI_API_KEY; never written)")
    served.add_argument("--request-timeout", type=float, default=600.0, metavar="S",
                        help="seconds per request (600)")
    served.add_argument("--retries", type=int, default=6,
                        help="retries of a request on 429, 5xx, timeouts, dropped connections (6)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flora-eval",
        description="Evaluate a code LLM and its FLoRA/LoRA/IA3 adapters on MultiPL-E "
                    "HumanEval, running every completion's tests in Docker.",
    )
    add_model_args(parser, required=False)
    parser.add_argument("--run-id", help="name of the run under results/ (same id resumes)")
    parser.add_argument("--run-dir", help="explicit run directory (overrides --run-id)")
    parser.add_argument("--jobs", type=int, default=None, help="programs run in parallel")
    parser.add_argument("--no-cache", action="store_true", help=NO_CACHE_HELP)
    add_executor_args(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    gen = sub.add_parser("generate", help="sample completions into a run directory")
    add_model_args(gen, required=False)
    gen.add_argument("--run-dir", required=True)
    gen.set_defaults(handler=cmd_generate)

    exe = sub.add_parser("execute", help="run completions' tests in Docker; write results")
    exe.add_argument("inputs", nargs="+", help="run directories, completions files "
                     "(MultiPL-E .json/.json.gz) or bigcode generations.json")
    exe.add_argument("--jobs", type=int, default=None)
    exe.add_argument("--no-cache", action="store_true", help=NO_CACHE_HELP)
    add_executor_args(exe)
    exe.add_argument("--out", help="where to write results (default: beside each input)")
    exe.add_argument("--lang", dest="exec_lang",
                     help="language of a bigcode generations.json (e.g. py)")
    exe.add_argument("--dataset", dest="exec_dataset",
                     help="MultiPL-E data for a generations.json's tests (a file or a directory "
                          "of <benchmark>-<lang>.jsonl; default: the hub)")
    exe.add_argument("--benchmark", dest="exec_benchmark", default=BENCHMARK,
                     help="the benchmark of a generations.json (humaneval or mbpp)")
    exe.set_defaults(handler=cmd_execute)

    sco = sub.add_parser("score", help="per-problem pass@k of a run's results into scores.csv")
    sco.add_argument("run")
    sco.set_defaults(handler=cmd_score)

    rep = sub.add_parser("report", help="tables and the HTML report of one or more runs")
    rep.add_argument("runs", nargs="+")
    rep.add_argument("--out", help="folder for a combined report of several runs "
                                   "(default results/combined)")
    rep.set_defaults(handler=cmd_report)

    for name, (module_name, help_text) in TOOL_COMMANDS.items():
        tool = sub.add_parser(name, help=help_text)
        tool.set_defaults(tool_module=module_name)
        try:
            importlib.import_module(module_name).add_arguments(tool)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            tool.set_defaults(handler=_not_built(name))
    return parser


def _not_built(name: str):
    def handler(args: argparse.Namespace) -> int:
        raise UserError(f"`flora-eval {name}` is not available in this build")

    return handler


def disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return "disk is full" in str(exc)  # sqlite3: the execution cache's database


def disk_full_message(exc: BaseException) -> str:
    """One line: what filled up, and that a rerun resumes (every file is written atomically)."""
    path = getattr(exc, "filename", None)
    if path is None and isinstance(exc, sqlite3.OperationalError):
        from harness.execute.cache import default_path

        path = default_path()
    where = f"the disk holding {Path(path).parent}" if path else "a disk"
    return (f"{where} is full (writing {path or 'a file'}); nothing finished is lost: free some space "
            "there, then run the same command again to resume")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "handler", None):
            return args.handler(args)
        if getattr(args, "tool_module", None):
            return importlib.import_module(args.tool_module).run(args)
        return run_pipeline(args)
    except UserError as exc:
        print(f"flora-eval: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.OperationalError) as exc:
        if not disk_full(exc):
            raise
        print(f"flora-eval: error: {disk_full_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flora-eval: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
