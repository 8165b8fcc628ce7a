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
from typing import Any, ClassVar

from pydantic import StrictStr

from harness.definitions import Name, Table, definition_files, load_definition, validate
from harness.errors import UserError
from harness.hub import hub_state, quiet
from harness.records import BENCHMARK, Problem


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


class KnownDefectTable(Table):
    kind: ClassVar[str] = "known_defects"
    lang: Name
    problem: Name
    why: Name


class BenchmarkTable(Table):
    """`benchmarks/<key>.toml`'s schema (documented at the top of `benchmarks/humaneval.toml`)."""

    kind: ClassVar[str] = "benchmark"
    key: Name
    name: Name
    hub_dataset: Name
    hub_config: Name
    split: Name = "test"
    revision: Name
    revisions: dict[str, Name] = {}
    local_file: Name
    local_folder: StrictStr = ""  # "": the key
    known_defects: tuple[KnownDefectTable, ...] = ()

    def build(self) -> Benchmark:
        return Benchmark(
            key=self.key, name=self.name, hub_dataset=self.hub_dataset, hub_config=self.hub_config,
            revision=self.revision, local_file=self.local_file, local_folder=self.local_folder or self.key,
            split=self.split, revisions=tuple(sorted(self.revisions.items())),
            known_defects=tuple(KnownDefect(d.lang, d.problem, d.why) for d in self.known_defects),
        )


def parse_benchmark(data: dict[str, Any], where: str) -> Benchmark:
    """Validate one TOML document into a Benchmark (ValueError names the file and the bad field)."""
    return validate(BenchmarkTable, data, where).build()


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
    """The rows at the pinned revision: from the hub, or from its local cache when the hub is
    switched off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); one line, not the libraries' retries,
    when the hub cannot be reached (asked once, `harness.hub`)."""
    revision, config = benchmark.revision_for(lang), benchmark.config(lang)
    where = f"{benchmark.hub_dataset} {config}"
    local = "pass local data with --dataset PATH (e.g. --dataset ../shared/multipl-e)"
    hub = hub_state(for_datasets=True)
    if not hub.usable and not hub.switched_off:
        raise UserError(f"cannot load {where}: {hub.why}; {local}, or set HF_HUB_OFFLINE=1 to use the "
                        "hub's local cache")
    import datasets

    try:
        with quiet():
            rows = datasets.load_dataset(benchmark.hub_dataset, config, revision=revision,
                                         split=benchmark.split)
    except Exception as exc:  # the hub raises many types: offline, DNS, 404, ...
        why = f"{hub.why} and it is not in the local cache" if not hub.usable else type(exc).__name__
        raise UserError(f"cannot load {where} from the hub ({why}); {local}") from None
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
