"""What `flora-eval execute` accepts, turned into Tasks: a run directory (its completions
files), MultiPL-E completions files (.json/.json.gz; `language` may be a
legacy name such as "python"), directories of such files, and bigcode-evaluation-harness
`generations.json` (per problem, a list of full programs = prompt + completion)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness.errors import UserError
from harness.execute import Task
from harness.files import read_completions, read_json, results_path_for
from harness.records import Completions, Provenance, SamplingConfig
from harness.runs import RESULTS_SUFFIX, RunDir


def run_tasks(root: Path, out_dir: Path | None) -> list[Task]:
    """Every completions file of the run as a Task (what to do with each is the plan's
    decision: execute/plan.py); the language is the one the completions record names (its
    provenance, else MultiPL-E's `language` field)."""
    return [task_of(read_completions(path), _out(path, out_dir, root))
            for path in RunDir(root).completion_files()]


def task_of(completions: Completions, out: Path, lang: str | None = None) -> Task:
    """A Task whose completions name their language key in the provenance (a file from
    another tool names only MultiPL-E's `language`, which may be a legacy alias)."""
    from harness.execute.languages import load_language

    key = load_language(lang or completions.provenance.lang or completions.language).key
    if completions.provenance.lang != key:
        completions = replace(completions, provenance=replace(completions.provenance, lang=key))
    return Task(key, completions, out)


def tasks_for(path: Path, out_dir: Path | None, lang: str | None, dataset: str | None,
              benchmark: str = "humaneval") -> list[Task]:
    """The Tasks of one input (a run directory, a folder of completions files, one file or
    a bigcode generations.json), whatever their results' state."""
    if path.is_dir():
        if RunDir(path).completion_files():
            return run_tasks(path, out_dir)
        files = sorted(p for p in path.iterdir() if _is_completions_name(p.name))
        if not files:
            raise UserError(f"{path}: no completions files (.json/.json.gz) or run folders in it")
        return [task for p in files for task in tasks_for(p, out_dir, lang, dataset, benchmark)]
    data = read_json(path)
    if isinstance(data, list):
        return generations_tasks(path, data, out_dir, lang, dataset, benchmark)
    return [task_of(read_completions(path), _out(path, out_dir, None), lang)]


def _is_completions_name(name: str) -> bool:
    return name.endswith((".json", ".json.gz")) and not name.endswith((RESULTS_SUFFIX, ".results.json"))


def _out(path: Path, out_dir: Path | None, root: Path | None) -> Path:
    target = results_path_for(path)
    if out_dir is None:
        return target
    return out_dir / (target.relative_to(root) if root else target.name)


def generations_tasks(path: Path, data: list, out_dir: Path | None, lang: str | None,
                      dataset: str | None, benchmark: str = "humaneval") -> list[Task]:
    """bigcode-evaluation-harness output: generations[i] are full programs for problem i of
    the MultiPL-E dataset (in its order); the tests come from the dataset."""
    from harness.execute.languages import load_language
    from harness.problems import load_problems

    if not all(isinstance(g, list) and all(isinstance(s, str) for s in g) for g in data):
        raise UserError(f"{path}: not a bigcode generations.json (expected a list of lists of strings)")
    if lang is None:
        raise UserError(f"{path}: a bigcode generations.json does not name its language; pass --lang LANG")
    key = load_language(lang).key
    problem_set = load_problems(key, dataset, benchmark=benchmark)
    problems = problem_set.problems
    if len(data) > len(problems):
        raise UserError(f"{path}: {len(data)} problems but the {key} dataset has {len(problems)}; "
                        "check --lang and --dataset")
    folder = out_dir or path.parent / (path.name.removesuffix(".json") + ".results")
    tasks = []
    for problem, generations in zip(problems, data, strict=False):
        prompt = problem.prompt
        if all(g.startswith(prompt) for g in generations):
            completions = tuple(g[len(prompt):] for g in generations)
        elif all(g.startswith(prompt.strip()) for g in generations):
            # MultiPL-E semantics: the model saw prompt.strip(); its text follows the prompt
            completions = tuple(g[len(prompt.strip()):] for g in generations)
        else:
            prompt, completions = "", tuple(generations)  # run each program as it stands
        provenance = Provenance(lang=key, dataset=problem_set.source, dataset_revision=problem_set.revision,
                                benchmark=problem_set.benchmark,
                                sampling=SamplingConfig(n=len(completions), temperature=0.0, top_p=1.0,
                                                        max_tokens=0))
        record = Completions(name=problem.name, language=problem.language, temperature=0.0, top_p=1.0,
                             max_tokens=0, prompt=prompt, tests=problem.tests,
                             stop_tokens=problem.stop_tokens, completions=completions,
                             provenance=provenance)
        tasks.append(Task(key, record, folder / f"{problem.name}{RESULTS_SUFFIX}"))
    return tasks
