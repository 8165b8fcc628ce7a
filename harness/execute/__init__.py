"""Execute stage: run `prompt + completion + "\\n" + tests` for every completion in its
language's hardened container and write MultiPL-E results files as problems finish.

    languages.py  languages as data (TOML) and the status rules
    images.py     base and per-language Docker images
    sandbox.py    the one place that starts containers (hardening, the worker's socket)
    worker.py     the in-container worker (stdlib only, one file)
    pool.py       per-language container slots, batches, watchdog, retries
    cache.py      the persistent sqlite3 cache
    engine.py     Executor: dedup, cache (observations), canaries → results judged by today's rules
    cluster.py    DaskExecutor: the same, with the pools on Dask workers (`--executor dask`)
    plan.py       what to execute: held, stale (each difference) and missing results; every path's plan
    overlap.py    the main command's execution process, fed completions files as generation writes them
    inputs.py     completions files from elsewhere (MultiPL-E files, bigcode generations)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.files import write_results
from harness.records import Completions, ExecResult, ProblemResults
from harness.runs import RunDir

if TYPE_CHECKING:
    from harness.execute.plan import ExecutionPlan


@dataclass(frozen=True)
class ExecutionSummary:
    images: dict[str, str] = field(default_factory=dict)  # language → image id
    telemetry: dict = field(default_factory=dict)
    nodes: dict = field(default_factory=dict)  # Dask: worker → node, image ids, toolchain versions
    plan: dict = field(default_factory=dict)  # held / stale / missing / orphans / execute: file counts


@dataclass(frozen=True)
class Task:
    """One completions file to execute and where its results go."""

    lang: str
    completions: Completions
    out: Path


def program_of(completions: Completions, completion: str) -> str:
    """MultiPL-E's program: the unstripped prompt, the completion, a newline, the tests."""
    return completions.prompt + completion + "\n" + completions.tests


EXECUTORS = ("local", "dask")


def open_executor(kind: str = "local", jobs: int | None = None, use_cache: bool = True,
                  scheduler: str | None = None, cold_toolchains: bool = False):
    """The local pool (default) or a Dask cluster's workers (`scheduler`: tls://host:port or
    a scheduler file), with the persistent cache on this side. `cold_toolchains`: every
    compile step runs its own command, never a warm process."""
    from harness.execute.cache import ExecCache
    from harness.execute.engine import Executor

    if kind == "dask":
        from harness.execute.cluster import DaskExecutor, connect

        connect(scheduler).close()  # unreachable: one line now, before any work
        return DaskExecutor(jobs=jobs, cache=ExecCache(), use_cache=use_cache, scheduler=scheduler,
                            cold_toolchains=cold_toolchains)
    if scheduler:
        from harness.errors import UserError

        raise UserError("--scheduler needs --executor dask")
    return Executor(jobs=jobs, cache=ExecCache(), use_cache=use_cache, cold_toolchains=cold_toolchains)


def execute_tasks(tasks: Iterable[Task], jobs: int | None = None, executor=None,
                  use_cache: bool = True) -> ExecutionSummary:
    """Run every task's programs, writing each results file once all its programs are done.
    `use_cache=False` (`--no-cache`) runs every program again."""
    from harness.execute.languages import load_language

    by_lang: dict[str, list[Task]] = {}
    for task in tasks:
        by_lang.setdefault(load_language(task.lang).key, []).append(task)
    if not by_lang:
        return ExecutionSummary()
    own = executor is None
    executor = executor or open_executor(jobs=jobs, use_cache=use_cache)
    try:
        for key, lang_tasks in by_lang.items():
            execute_language(executor, load_language(key), lang_tasks)
    finally:
        if own:
            executor.close()
    return summary_of(executor)


def summary_of(executor, plan: dict | None = None) -> ExecutionSummary:
    return ExecutionSummary(images=dict(executor.images), telemetry=executor.stats.as_dict(),
                            nodes=dict(getattr(executor, "nodes", {})), plan=dict(plan or {}))


def execute_plan(plan: ExecutionPlan, executor) -> ExecutionSummary:
    """Carry out an ExecutionPlan (execute/plan.py): its orphaned results go, its `todo` runs."""
    from harness.execute.plan import remove_orphans

    remove_orphans(plan)
    if note := plan.note():
        print(note, file=sys.stderr)
    if not plan.todo:  # nothing ran: no telemetry
        return ExecutionSummary(images=dict(executor.images), plan=plan.summary())
    execute_tasks(plan.todo, executor=executor)
    return summary_of(executor, plan.summary())


@dataclass
class LanguageBatch:
    """One language's tasks in execution: each results file is written once every program of
    its task has a result. `held`: programs that timed out and wait for their confirmation
    run (`confirm_held`), their tasks' files with them."""

    lang: object
    tasks: list[Task]
    image_id: str
    limits: str
    programs: list[str] = field(default_factory=list)
    owner: list[tuple[int, int]] = field(default_factory=list)  # program index → (task, completion)
    results: list[list] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        for t, task in enumerate(self.tasks):
            for c, completion in enumerate(task.completions.completions):
                self.programs.append(program_of(task.completions, completion))
                self.owner.append((t, c))
        self.results = [[None] * len(t.completions.completions) for t in self.tasks]
        self.missing = [len(t.completions.completions) for t in self.tasks]
        for t, task in enumerate(self.tasks):
            if self.missing[t] == 0:
                _write(task, [], self.image_id, self.limits)

    def deliver(self, index: int, result: ExecResult) -> None:
        t, c = self.owner[index]
        self.results[t][c] = result
        self.missing[t] -= 1
        if self.missing[t] == 0:
            _write(self.tasks[t], self.results[t], self.image_id, self.limits)


def execute_language(executor, lang, tasks: list[Task], bar=None, hold: bool = False) -> LanguageBatch:
    """Run one language's tasks; `bar`: a progress bar to advance (else one of its own).
    `hold`: programs that timed out are not run again now: the batch holds them (and their
    tasks' results files) for `confirm_held`."""
    # image_id connects to Docker (or fails in one line) before the bar shows
    batch = LanguageBatch(lang, tasks, executor.image_id(lang), executor.limits_key(lang))
    if batch.programs:
        _feed(batch, executor.run_programs(lang, batch.programs, held=batch.held if hold else None), bar)
    return batch


def confirm_held(executor, batch: LanguageBatch, bar=None) -> None:
    """Run the batch's held programs again, one at a time, and write the files they held."""
    if batch.held:
        held, batch.held = batch.held, []
        got = executor.confirm(batch.lang, [batch.programs[i] for i in held])
        _feed(batch, ((held[i], result) for i, result in got), bar, total=len(held))


def _feed(batch: LanguageBatch, results, bar, total: int | None = None) -> None:
    from tqdm import tqdm

    own_bar = bar is None
    if own_bar:
        bar = tqdm(total=total or len(batch.programs), desc=f"execute {batch.lang.key}", unit="prog",
                   file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
    try:
        for index, result in results:
            batch.deliver(index, result)
            bar.update(1)
    finally:
        if own_bar:
            bar.close()


def _write(task: Task, results: list, image_id: str, limits: str) -> None:
    write_results(task.out, ProblemResults.of(task.completions, list(results), image_id=image_id,
                                              limits=limits))


def execute_run(run, jobs: int | None = None, use_cache: bool = True, executor=None) -> ExecutionSummary:
    """Execute what the run's plan says (execute/plan.py): completions files without results,
    or whose results were made by another image, other limits or from other programs; with
    `use_cache=False` (`--no-cache`) every one again. `executor`: an open executor (local or
    Dask)."""
    from harness.execute.plan import plan_run

    own = executor is None
    executor = executor or open_executor(jobs=jobs, use_cache=use_cache)
    try:
        return execute_plan(plan_run(run.root, executor), executor)
    finally:
        if own:
            executor.close()


def execute_paths(inputs: list[Path], jobs: int | None = None, out_dir: Path | None = None,
                  lang: str | list[str] | None = None, dataset: str | None = None,
                  benchmark: str = "humaneval", use_cache: bool = True, executor=None) -> list[Path]:
    """`flora-eval execute`: run dirs, MultiPL-E completions files or bigcode generations,
    planned as `execute_run` plans a run. Returns every results file asked for."""
    from harness.execute.inputs import tasks_for
    from harness.execute.plan import orphan_results, plan_execution

    if isinstance(lang, list):  # the top-level `--lang` is repeatable
        lang = lang[-1] if lang else None
    own = executor is None
    executor = executor or open_executor(jobs=jobs, use_cache=use_cache)
    try:
        tasks = [task for path in inputs
                 for task in tasks_for(Path(path), out_dir, lang, dataset, benchmark)]
        orphans = [o for path in inputs if out_dir is None and RunDir.is_run(path)
                   for o in orphan_results(Path(path))]
        execute_plan(plan_execution(tasks, executor, orphans=orphans), executor)
    finally:
        if own:
            executor.close()
    return [task.out for task in tasks]
