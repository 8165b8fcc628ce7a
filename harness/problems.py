"""Problems stage: MultiPL-E rows of a benchmark for a language, from the hub or local files.

Benchmarks are data: `benchmarks/<key>.toml` (installed as the package `harness.benchmarks`)
says where a benchmark's problems live — the hub dataset, config pattern and pinned
revisions, the local file pattern — and which upstream rows are known to be broken. The
schema is documented at the top of `benchmarks/humaneval.toml`; adding a benchmark adds a
TOML file and touches no Python.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from harness.definitions import definition_files, load_definition
from harness.errors import UserError
from harness.records import BENCHMARK, Problem

BENCHMARK_KEYS = {"key", "name", "hub_dataset", "hub_config", "split", "revision", "revisions",
                  "local_file", "local_folder", "known_defects"}


@dataclass(frozen=True)
class KnownDefect:
    lang: str
    problem: str
    why: str


@dataclass(frozen=True)
class Benchmark:
    key: str
    name: str
    hub_dataset: str
    hub_config: str  # "{lang}" replaced by the language key
    revision: str
    local_file: str  # "{lang}" replaced by the language key
    local_folder: str
    split: str = "test"
    revisions: tuple[tuple[str, str], ...] = ()  # (language key, revision) exceptions
    known_defects: tuple[KnownDefect, ...] = ()

    def config(self, lang: str) -> str:
        return self.hub_config.replace("{lang}", lang)

    def file_name(self, lang: str) -> str:
        return self.local_file.replace("{lang}", lang)

    def revision_for(self, lang: str) -> str:
        return dict(self.revisions).get(lang, self.revision)

    def defect(self, lang: str, problem: str) -> KnownDefect | None:
        return next((d for d in self.known_defects if d.lang == lang and d.problem == problem), None)


def parse_benchmark(data: dict[str, Any], where: str) -> Benchmark:
    unknown = set(data) - BENCHMARK_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("key", "name", "hub_dataset", "hub_config", "revision", "local_file"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ValueError(f"{where}: `{key}` must be a non-empty string")
    revisions = data.get("revisions", {})
    if not isinstance(revisions, dict) or not all(isinstance(v, str) for v in revisions.values()):
        raise ValueError(f"{where}: [revisions] must map language keys to revisions")
    defects = data.get("known_defects", [])
    if not isinstance(defects, list) or not all(
            isinstance(d, dict) and set(d) == {"lang", "problem", "why"} for d in defects):
        raise ValueError(f"{where}: each [[known_defects]] needs exactly lang, problem and why")
    return Benchmark(
        key=data["key"], name=data["name"], hub_dataset=data["hub_dataset"], hub_config=data["hub_config"],
        revision=data["revision"], local_file=data["local_file"],
        local_folder=data.get("local_folder") or data["key"], split=data.get("split", "test"),
        revisions=tuple(sorted(revisions.items())),
        known_defects=tuple(KnownDefect(d["lang"], d["problem"], d["why"]) for d in defects),
    )


def benchmark_files() -> dict[str, Any]:
    return definition_files("harness.benchmarks")


@cache
def _load(stem: str) -> Benchmark:
    return load_definition("harness.benchmarks", "benchmarks", stem, parse_benchmark)


def all_benchmarks() -> list[Benchmark]:
    return [_load(stem) for stem in sorted(benchmark_files())]


def benchmark_defect(benchmark: str, lang: str, problem: str) -> KnownDefect | None:
    """The known upstream defect of a row, if its benchmark lists one (None for unknown
    benchmarks: a run written by other tools)."""
    if benchmark not in benchmark_files():
        return None
    return _load(benchmark).defect(lang, problem)


def load_benchmark(key: str) -> Benchmark:
    stems = benchmark_files()
    if key in stems:
        return _load(key)
    close = difflib.get_close_matches(key.lower(), list(stems), n=2, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise UserError(f"unknown benchmark '{key}' (known: {', '.join(sorted(stems))}){hint}")


@dataclass(frozen=True)
class ProblemSet:
    """The problems of one benchmark in one language, and where they came from."""

    lang: str
    problems: tuple[Problem, ...]
    source: str  # "hub:nuprl/MultiPL-E" or a local path
    revision: str  # the pinned hub revision, or a content hash of the local file
    benchmark: str = BENCHMARK


def load_problems(lang: str, dataset: str | Path | None = None, limit: int | None = None,
                  benchmark: str = BENCHMARK) -> ProblemSet:
    """A language's problems of `benchmark`: from `dataset` (a .jsonl/.json file, a directory
    of `<benchmark>-<lang>.jsonl` files, or a directory holding one such folder per benchmark)
    when given, else from the hub at the benchmark's pinned revision."""
    definition = load_benchmark(benchmark)
    if dataset is not None:
        problem_set = _load_local(definition, lang, Path(dataset))
    else:
        problem_set = _load_hub(definition, lang)
    if limit is not None:
        problem_set = replace(problem_set, problems=problem_set.problems[:limit])
    return problem_set


def check_language(problem_set: ProblemSet, key_of: Callable[[str], str | None]) -> ProblemSet:
    """The problem set, if every row is in its language: MultiPL-E's `language` field of each
    row, mapped to a language key by `key_of` (the language definitions' names and aliases),
    must be the set's key. Python prompts run in the Ruby image and reported as Ruby are
    wrong numbers, so another language's file stops the run with one line."""
    for problem in problem_set.problems:
        if key_of(problem.language) != problem_set.lang:
            raise UserError(
                f"{problem_set.source} holds {problem.language!r} problems ({problem.name}), not "
                f"--lang {problem_set.lang} ones; pass a folder of per-language files with --dataset "
                f"(e.g. ../shared/multipl-e), or the {problem_set.lang} file itself")
    return problem_set


def _load_hub(benchmark: Benchmark, lang: str) -> ProblemSet:
    import datasets

    revision, config = benchmark.revision_for(lang), benchmark.config(lang)
    try:
        rows = datasets.load_dataset(benchmark.hub_dataset, config, revision=revision, split=benchmark.split)
    except Exception as exc:  # the hub raises many types: offline, DNS, 404, ...
        raise UserError(
            f"cannot load {benchmark.hub_dataset} {config} from the hub ({type(exc).__name__}); "
            "pass local data with --dataset PATH (e.g. --dataset ../shared/multipl-e)"
        ) from None
    problems = tuple(Problem.from_row(dict(row)) for row in rows)
    return ProblemSet(lang, problems, f"hub:{benchmark.hub_dataset}", revision, benchmark.key)


def local_file(benchmark: Benchmark, lang: str, path: Path) -> Path:
    """The data file `--dataset PATH` names for (benchmark, language)."""
    if not path.is_dir():
        if not path.is_file():
            raise UserError(f"dataset file not found: {path}; check the --dataset path")
        return path
    name = benchmark.file_name(lang)
    candidates = [folder / file for folder in (path, path / benchmark.local_folder)
                  for file in (name, name.removesuffix(".jsonl") + ".json")]
    found = [p for p in candidates if p.is_file()]
    if not found:
        raise UserError(f"no {name} in {path} or {path / benchmark.local_folder}; pass a directory "
                        f"holding {benchmark.file_name('<lang>')} files (or one folder per benchmark), "
                        "or the file itself")
    return found[0]


def _load_local(benchmark: Benchmark, lang: str, path: Path) -> ProblemSet:
    path = local_file(benchmark, lang, path)
    rows = _read_rows(path)
    try:
        problems = tuple(Problem.from_row(row) for row in rows)
    except (KeyError, TypeError) as exc:
        raise UserError(f"{path}: a row lacks the MultiPL-E field {exc}") from None
    return ProblemSet(lang, problems, str(path.resolve()), _file_digest(path), benchmark.key)


def _read_rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return data if isinstance(data, list) else [data]


def _file_digest(path: Path) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
