"""Builds real runs on disk for the report and gate tests: MultiPL-E results files written with
harness.files.write_results, with the real prompts and tests of ../shared/multipl-e, samples
whose statuses and pass counts are chosen (so every expected number is computable from the
counts), and a manifest with the sections the pipeline writes. Also tests the builder itself."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
from conftest import MULTIPLE

from harness.files import write_results
from harness.records import ExecResult, ProblemResults, Provenance, SamplingConfig
from harness.runs import RunDir
from harness.score import score_run

MODEL = "synthetic"  # made-up counts: never a real model's name
ADAPTERS = ("base", "flora-r1", "lora-r1", "ia3")
METHODS = {"base": "base", "flora-r1": "flora", "lora-r1": "lora", "ia3": "ia3"}
FAILING = ("SyntaxError", "Exception", "Timeout")

# (completion, stdout, stderr, exit_code) per language and status: what these toolchains print.
SNIPPETS = {
    "py": {
        "OK": ["    return [n + 2 * i for i in range(n)]\n", "    result = []\n    for i in range(n):\n"
               "        result.append(n + 2 * i)\n    return result\n"],
        "SyntaxError": ("    return [n + 2 * i for i in range(n)\n", "",
                        '  File "/tmp/prog.py", 12\n    return [n + 2 * i for i in range(n)\n'
                        "           ^\nSyntaxError: '[' was never closed\n", 1),
        "Exception": ("    return list(range(n, 3 * n, 2))[1:]\n", "",
                      "Traceback (most recent call last):\n  File \"/tmp/prog.py\", line 20, in <module>\n"
                      "    assert candidate(3) == [3, 5, 7]\nAssertionError\n", 1),
        "Timeout": ("    while n > 0:\n        n += 1\n", "", "", -1),
    },
    "rb": {
        "OK": ["  (0...n).map { |i| n + 2 * i }\nend\n",
               "  result = []\n  n.times { |i| result << n + 2 * i }\n  result\nend\n"],
        "SyntaxError": ("  (0...n).map { |i| n + 2 * i \nend\n", "",
                        "prog.rb:9: syntax error, unexpected `end', expecting '}'\n", 1),
        "Exception": ("  nil\nend\n", "Loaded suite prog\nStarted\nF\n",
                      "Failure: test_case(TestHumanEval) [prog.rb:14]:\n"
                      "<[3, 5, 7]> expected but was\n<nil>.\n", 1),
        "Timeout": ("  loop { }\nend\n", "", "", -1),
    },
    "rs": {
        "OK": ["    (0..n).map(|i| n + 2 * i).collect()\n", "    let mut v = Vec::new();\n"
               "    for i in 0..n { v.push(n + 2 * i); }\n    v\n"],
        "SyntaxError": ("    (0..n).map(|i| n + 2 * i).collect(\n", "",
                        "error: mismatched closing delimiter: `}`\n --> prog.rs:9:5\n", 1),
        "Exception": ("    vec![]\n", "", "thread 'main' panicked at prog.rs:14:5:\nassertion `left == right`"
                      " failed\n  left: []\n right: [3, 5, 7]\n", 101),
        "Timeout": ("    loop {}\n", "", "", -1),
    },
}


@cache
def problems(lang: str) -> tuple[dict, ...]:
    """The real MultiPL-E rows of `lang`, in file order."""
    lines = (MULTIPLE / "humaneval" / f"humaneval-{lang}.jsonl").read_text(encoding="utf-8").splitlines()
    return tuple(json.loads(line) for line in lines)


def sample(row: dict, status: str, variant: int) -> ExecResult:
    """One executed sample of `row` with `status`; `variant` picks between distinct programs."""
    snippets = SNIPPETS.get(row["language"], SNIPPETS["py"])
    if status == "OK":
        completion, stdout, stderr, code = snippets["OK"][variant % 2], "", "", 0
    else:
        completion, stdout, stderr, code = snippets[status]
        if variant % 3:
            completion += f"{' ' * 4}{'#' if row['language'] != 'rs' else '//'} variant {variant % 3}\n"
    program = row["prompt"] + completion + "\n" + row["tests"]
    return ExecResult(program, stdout, stderr, code, status, 1_700_000_000 + variant)


def provenance(model: str, adapter: str, lang: str, n: int, temperature: float = 0.1) -> Provenance:
    """What the pipeline records, with made-up revisions and hashes."""
    method = METHODS.get(adapter, adapter.rsplit("-", 1)[0])
    return Provenance(model=model, model_revision="sha256:" + "5e" * 8, adapter=adapter, method=method,
                      rank=None if method in ("base", "ia3") else 1,
                      adapter_hash="" if adapter == "base" else "sha256:" + adapter.encode().hex()[:16],
                      lang=lang, sampling=SamplingConfig(n=n, temperature=temperature),
                      dataset="../shared/multipl-e/humaneval", dataset_revision="sha256:" + "da" * 8,
                      harness_version="0.1.0")


def results_for(row: dict, model: str, adapter: str, lang: str, n: int, c: int, rng: np.random.Generator,
                temperature: float = 0.1) -> ProblemResults:
    """n samples of which exactly c pass; the others fail with statuses drawn from `rng`."""
    statuses = ["OK"] * c + list(rng.choice(FAILING, size=n - c, p=[0.3, 0.55, 0.15]))
    samples = tuple(sample(row, s, int(v)) for s, v in zip(statuses, rng.integers(0, 6, size=n),
                                                          strict=True))
    return ProblemResults(name=row["name"], language=row["language"], temperature=temperature, top_p=0.95,
                          max_tokens=1024, prompt=row["prompt"], tests=row["tests"],
                          stop_tokens=tuple(row["stop_tokens"]), results=samples,
                          provenance=provenance(model, adapter, lang, n, temperature),
                          image_id="sha256:" + "ab" * 32)


Counts = dict[tuple[str, str, str], dict[str, tuple[int, int]]]  # (model, adapter, lang) → {problem: (n, c)}


def write_run(root: Path, counts: Counts, seed: int = 0, manifest: dict | None = None,
              temperature: float = 0.1) -> RunDir:
    """A run directory holding exactly `counts`."""
    run = RunDir.open(root)
    rng = np.random.default_rng(seed)
    for (model, adapter, lang), cell in counts.items():
        rows = {row["name"]: row for row in problems(lang)}
        for name, (n, c) in cell.items():
            write_results(run.results_path(model, adapter, lang, name),
                          results_for(rows[name], model, adapter, lang, n, c, rng, temperature))
    run.update_manifest(**(manifest if manifest is not None else demo_manifest(counts)))
    return run


def demo_counts(langs=("py", "rb", "rs"), adapters=ADAPTERS, problems_per_lang: int = 12, n: int = 20,
                seed: int = 0, model: str = MODEL) -> Counts:
    """Pass counts with a per-problem difficulty and a per-adapter gain, like a real evaluation."""
    rng = np.random.default_rng(seed)
    gain = {"base": 0.0, "flora-r1": 0.12, "lora-r1": 0.1, "ia3": 0.04}
    counts: Counts = {}
    for lang in langs:
        names = [row["name"] for row in problems(lang)[:problems_per_lang]]
        difficulty = rng.beta(0.8, 1.2, size=len(names))
        for adapter in adapters:
            rate = np.clip(difficulty + gain.get(adapter, 0.0), 0, 1)
            counts[(model, adapter, lang)] = {
                name: (n, int(c)) for name, c in zip(names, rng.binomial(n, rate), strict=True)}
    return counts


def demo_manifest(counts: Counts) -> dict:
    """The sections run_pipeline writes, with plausible values."""
    adapters = sorted({a for _, a, _ in counts}, key=ADAPTERS.index if all(
        a in ADAPTERS for _, a, _ in counts) else str)
    langs = sorted({lang for *_, lang in counts})
    n = max(n for cell in counts.values() for n, _ in cell.values())
    return {
        "environment": {"python": "3.11.2", "platform": "Linux-6.1-x86_64",
                        "packages": {"flora-eval": "0.1.0", "torch": "2.13.0", "transformers": "5.24.0"},
                        "command": ["flora-eval", "--model", "synthetic"],
                        "started": "2026-11-25T15:00:00+0000"},
        "config": {"model": "synthetic",
                   "adapters": [{"name": a, "hash": "" if a == "base" else f"sha256:{i:064x}"}
                                for i, a in enumerate(adapters)],
                   "langs": langs, "sampling": {"n": n, "temperature": 0.1, "top_p": 0.95,
                                                "max_tokens": 1024, "seed": 0}, "limit": None},
        "dataset": {lang: {"source": "../shared/multipl-e/humaneval",
                           "revision": "28441b6024e71d4a1c1c0f6bf171c935cd5a43f2",
                           "problems": len(counts[next(k for k in counts if k[2] == lang)])}
                    for lang in langs},
        "model": {"name": "synthetic", "source": "made-up counts (tests/test_report_build.py)"},
        "images": {lang: f"sha256:{lang.encode().hex():0<64}" for lang in langs},
        "telemetry": {"generate": {"prompts": 36, "samples": 2880, "tokens": 412345,
                                   "seconds": 812.5, "tokens_per_s": 507.5},
                      "execute": {"programs": 2880, "unique_programs": 611, "cache_hits": 2269,
                                  "seconds": 97.1, "programs_per_s": 29.66}},
    }


def test_builder_writes_exactly_the_counts(tmp_path, humaneval_dir):
    counts = demo_counts(langs=("py", "rs"), problems_per_lang=4, n=10)
    run = write_run(tmp_path / "run", counts)
    got = {(s.model, s.adapter, s.lang): {} for s in score_run(run)}
    for s in score_run(run):
        got[(s.model, s.adapter, s.lang)][s.problem] = (s.n, s.c)
    assert got == counts
    assert set(run.read_manifest()) == {"environment", "config", "dataset", "model", "images",
                                        "telemetry"}
