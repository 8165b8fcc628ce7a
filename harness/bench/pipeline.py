"""`flora-eval bench pipeline`: the main command's wall time (generation and execution
overlapped) as a ratio to generate-then-execute, both measured in the same run.

Every arm is the real command in a subprocess, on the tiny model on the CPU, with generation
pinned to one thread (OMP_NUM_THREADS=1) and execution to one job, so the two stages do not
fight over one core. The arms, each in a fresh run directory with a cache of its own:

    main       flora-eval --run-dir A ...                 (generate ∥ execute, score, report)
    generate   flora-eval generate --run-dir B ...
    execute    flora-eval execute B --jobs 1
    score      flora-eval score B, then flora-eval report B  (what the main command adds)

and it prints main / (generate + execute + score) and main / max(generate, execute).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATASET = Path(__file__).resolve().parents[2].parent / "shared" / "multipl-e" / "humaneval"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--lang", action="append", metavar="LANG", help="languages (default: py)")
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET), help="MultiPL-E data (humaneval folder)")
    parser.add_argument("--limit", type=int, default=None, help="problems per language (default 60)")
    parser.add_argument("-n", type=int, default=None, help="samples per problem (default 30)")
    parser.add_argument("--max-tokens", type=int, default=None, help="tokens per sample (default 1024)")
    parser.add_argument("--jobs", type=int, default=1, help="execution jobs (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="generation threads (default 1)")
    parser.add_argument("--repeats", type=int, default=None, help="repetitions (default 1, --full: 3)")


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *args]


def timed(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        from harness.errors import UserError

        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise UserError(f"`{' '.join(argv[3:6])} ...` failed (exit {done.returncode}): {tail[:400]}")
    return seconds


def one_round(args: argparse.Namespace, work: Path, env: dict) -> dict:
    langs = [part for lang in args.lang or ["py"] for part in ("--lang", lang)]
    common = ["--model", args.model, "--device", "cpu", "--dataset", args.dataset, *langs,
              "--limit", str(args.limit), "-n", str(args.n), "--max-tokens", str(args.max_tokens),
              "--temperature", "0.8"]
    main_dir, stages = work / "main", work / "stages"
    seconds = {"main": timed(command(*common, "--jobs", str(args.jobs), "--run-dir", str(main_dir)),
                             {**env, "FLORA_EVAL_CACHE": str(work / "main.sqlite")})}
    seconds["generate"] = timed(command("generate", *common, "--run-dir", str(stages)), env)
    seconds["execute"] = timed(command("execute", str(stages), "--jobs", str(args.jobs)),
                               {**env, "FLORA_EVAL_CACHE": str(work / "stages.sqlite")})
    seconds["score"] = timed(command("score", str(stages)), env) + timed(command("report", str(stages)), env)
    manifest = json.loads((main_dir / "manifest.json").read_text())
    seconds["overlap"] = manifest.get("telemetry", {}).get("overlap", {})
    seconds["programs"] = manifest.get("telemetry", {}).get("execute", {}).get("programs")
    return seconds


def run(args: argparse.Namespace) -> int:
    args.limit = args.limit or 60
    args.n = args.n or 30
    args.max_tokens = args.max_tokens or 1024
    repeats = args.repeats or (3 if args.full else 1)
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "TOKENIZERS_PARALLELISM": "false"}
    rounds = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="flora-bench-pipeline-") as tmp:
            rounds.append(one_round(args, Path(tmp), env))
    arms = ("main", "generate", "execute", "score")
    median = {key: statistics.median(r[key] for r in rounds) for key in arms}
    sequential = median["generate"] + median["execute"] + median["score"]
    row = {**{f"{k}_s": round(v, 2) for k, v in median.items()},
           "sequential_s": round(sequential, 2),
           "ratio_to_sequential": round(median["main"] / sequential, 3),
           "ratio_to_max_stage": round(median["main"] / max(median["generate"], median["execute"]), 3),
           "programs": rounds[-1]["programs"], "overlap": rounds[-1]["overlap"]}
    config = {"model": args.model, "langs": args.lang or ["py"], "limit": args.limit, "n": args.n,
              "max_tokens": args.max_tokens, "jobs": args.jobs, "threads": args.threads, "repeats": repeats,
              "cores": os.cpu_count()}
    if args.json:
        print(json.dumps({"bench": "pipeline", "config": config, "rows": [row]}))
        return 0
    print(f"bench pipeline: {config['model']} {'/'.join(config['langs'])}, {args.limit} problems × {args.n} "
          f"samples, {args.threads} generation thread(s), {args.jobs} execution job(s), median of {repeats}",
          file=sys.stderr)
    print(f"{'arm':22} {'seconds':>9}")
    print("-" * 32)
    for name, key in (("main (overlapped)", "main"), ("generate", "generate"), ("execute", "execute"),
                      ("score + report", "score")):
        print(f"{name:22} {median[key]:>9.2f}")
    print(f"{'generate-then-execute':22} {sequential:>9.2f}  (generate + execute + score + report)")
    print(f"main / generate-then-execute: {row['ratio_to_sequential']:.3f}")
    print(f"main / max(generate, execute): {row['ratio_to_max_stage']:.3f}  (target: at most 1.2)")
    return 0
