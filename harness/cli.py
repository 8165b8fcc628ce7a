"""flora-eval's command line. The main command is the pipeline, visible in `run_pipeline`:

    problems → generate → execute → score → report

Each stage is also a subcommand that works from files on disk. Tool commands (images,
bench, train, check, baseline) live in their own modules; this file only wires them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from harness.errors import UserError
from harness.records import BASE, SamplingConfig

DEFAULT_LANGS = ["py"]
RESULTS_ROOT = Path("results")
NO_CACHE_HELP = "execute every program again instead of reusing cached results (which it refreshes)"

# Tool subcommands: name → module exposing `add_arguments(parser)` and `run(args) -> int`.
TOOL_COMMANDS = {
    "images": ("harness.execute.images_cli", "build and check the per-language Docker images"),
    "bench": ("harness.bench.cli", "benchmarks, printed as ratios to a same-run baseline"),
    "train": ("harness.train", "train FLoRA, LoRA or IA3 adapters"),
    "check": ("harness.report.gate", "CI gate: compare a run with a saved baseline"),
    "baseline": ("harness.report.baseline", "save a run's scores as a CI baseline"),
}


# ---------------------------------------------------------------------------------------
# The main command: every stage, in order.
# ---------------------------------------------------------------------------------------
def run_pipeline(args: argparse.Namespace) -> int:
    from harness.execute import execute_run
    from harness.generate import generate_run
    from harness.models import load_model
    from harness.report import write_reports
    from harness.runs import RunDir, environment, new_run_id

    langs = validate_langs(args.lang or DEFAULT_LANGS)
    run = RunDir.open(args.run_dir or RESULTS_ROOT / (args.run_id or new_run_id(args.model)))
    sampling = sampling_from(args)

    problem_sets = [load_problems_for(lang, args) for lang in langs]  # 1. problems
    loaded = load_model(args.model, device=generation_device(args), load_8bit=args.load_8bit)
    adapters = resolve_adapters(args, loaded)
    if is_rank0():
        run.update_manifest(
            environment=environment(),
            config=run_config(args, langs, sampling, adapters),
            dataset={ps.lang: {"source": ps.source, "revision": ps.revision,
                               "problems": len(ps.problems)} for ps in problem_sets},
            model={"name": loaded.name, "source": loaded.source},
        )
    telemetry = generate_run(loaded, problem_sets, adapters, sampling, run,  # 2. generate
                             batch_size=args.batch_size)
    if not is_rank0():  # under torchrun, rank 0 alone executes, scores and reports
        return 0
    run.update_manifest(telemetry={"generate": telemetry.as_dict()})
    del loaded
    execution = execute_run(run, jobs=args.jobs, use_cache=not args.no_cache)  # 3. execute
    run.update_manifest(images=execution.images, telemetry={"execute": execution.telemetry})
    paths = write_reports(run)  # 4. score + 5. report
    print(paths["table"].read_text(encoding="utf-8"))
    print(f"run: {run.root}  report: {paths['html']}")
    return 0


def generation_device(args: argparse.Namespace) -> str | None:
    """--device, else under torchrun this process's own GPU (or the CPU), else automatic."""
    from harness.generate.distributed import launched_size, local_device

    return args.device or (local_device() if launched_size() > 1 else None)


def is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def validate_langs(langs: list[str]) -> list[str]:
    from harness.execute.languages import load_language

    return [load_language(lang).key for lang in langs]


def load_problems_for(lang: str, args: argparse.Namespace):
    from harness.problems import load_problems

    return load_problems(lang, args.dataset, limit=args.limit)


def sampling_from(args: argparse.Namespace) -> SamplingConfig:
    return SamplingConfig(n=args.n, temperature=args.temperature, top_p=args.top_p,
                          max_tokens=args.max_tokens, seed=args.seed)


def resolve_adapters(args: argparse.Namespace, loaded) -> list:
    """The evaluation's columns: the base model, then each `--adapter`, loaded and checked
    against the base model's shapes now, so a bad adapter stops the run before generation."""
    from harness.adapters import load_adapter
    from harness.generate import AdapterChoice

    adapters_dir = Path(args.adapters_dir) if args.adapters_dir else None
    choices = [AdapterChoice(BASE)]
    for name in dict.fromkeys(args.adapter or []):
        if name == BASE:
            continue
        spec = load_adapter(name, base_model=loaded.model, adapters_dir=adapters_dir)
        choices.append(AdapterChoice(name, spec.content_hash, spec))
    return choices


def run_config(args, langs, sampling: SamplingConfig, adapters) -> dict:
    return {
        "model": args.model,
        "adapters": [adapter_entry(a) for a in adapters],
        "langs": langs,
        "sampling": vars(sampling),
        "limit": args.limit,
    }


def adapter_entry(choice) -> dict:
    """What the manifest records of one evaluated column (the report reads `method`)."""
    spec = choice.spec
    if spec is None:
        return {"name": choice.name, "method": "base", "hash": ""}
    return {"name": choice.name, "method": spec.method, "rank": spec.rank,
            "hash": choice.content_hash, "path": str(spec.path),
            "language": spec.metadata.get("language")}


# ---------------------------------------------------------------------------------------
# Stage subcommands: each starts from files on disk.
# ---------------------------------------------------------------------------------------
def cmd_generate(args: argparse.Namespace) -> int:
    from harness.generate import generate_run
    from harness.models import load_model
    from harness.runs import RunDir

    langs = validate_langs(args.lang or DEFAULT_LANGS)
    run = RunDir.open(args.run_dir)
    problem_sets = [load_problems_for(lang, args) for lang in langs]
    loaded = load_model(args.model, device=generation_device(args), load_8bit=args.load_8bit)
    adapters = resolve_adapters(args, loaded)
    telemetry = generate_run(loaded, problem_sets, adapters, sampling_from(args), run,
                             batch_size=args.batch_size)
    if is_rank0():
        run.update_manifest(telemetry={"generate": telemetry.as_dict()})
    print(f"completions in {run.root} ({telemetry.prompts} prompts sampled)")
    return 0


def cmd_execute(args: argparse.Namespace) -> int:
    from harness.execute import execute_paths

    written = execute_paths([Path(p) for p in args.inputs], jobs=args.jobs,
                            out_dir=Path(args.out) if args.out else None,
                            lang=args.exec_lang, dataset=args.exec_dataset,
                            use_cache=not args.no_cache)
    for path in written:
        print(path)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from harness.report import write_reports
    from harness.runs import RunDir

    paths = write_reports(RunDir.existing(args.run))
    print(paths["scores"])
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import write_combined_report, write_reports
    from harness.runs import RunDir

    runs = [RunDir.existing(path) for path in args.runs]
    if len(runs) == 1:
        paths = write_reports(runs[0])
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
                        help="MultiPL-E language key, e.g. py, rb, rs (repeatable; default py)")
    parser.add_argument("--dataset", metavar="PATH",
                        help="local MultiPL-E data: a .jsonl/.json file or a directory of "
                             "humaneval-<lang>.jsonl (default: the hub, pinned revision)")
    parser.add_argument("--limit", type=int, help="only the first N problems per language")
    parser.add_argument("-n", "--n", type=int, default=100, help="samples per problem")
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="rows decoded together (default: from the memory budget)")
    parser.add_argument("--device", help="torch device (default: cuda when available)")
    parser.add_argument("--load-8bit", action="store_true",
                        help="8-bit base weights (GPU with bitsandbytes only)")


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
    exe.add_argument("--out", help="where to write results (default: beside each input)")
    exe.add_argument("--lang", dest="exec_lang",
                     help="language of a bigcode generations.json (e.g. py)")
    exe.add_argument("--dataset", dest="exec_dataset",
                     help="MultiPL-E data for a generations.json's tests (a file or a directory "
                          "of humaneval-<lang>.jsonl; default: the hub)")
    exe.set_defaults(handler=cmd_execute)

    sco = sub.add_parser("score", help="pass@k of a run's results into scores.csv")
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
    except KeyboardInterrupt:
        print("flora-eval: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
