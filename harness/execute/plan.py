"""What to execute, decided once: the one planning function of every execution path (the
main command's execution process, `flora-eval execute`, `api.execute`, Dask).

For each completions file asked for, its results file is

    held     made from the same programs, by the executor's image, limits and evaluator now
    stale    made otherwise: each difference names the setting with both values
    missing  not there yet

and `rerun` (`--no-cache`) executes the held ones again too. Results files of a run whose
completions file is gone are `orphans`: nothing can re-make or check them, so they go.
Staleness is derived from what the results file recorded (image id, limits, the programs it
ran), never from file times.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.execute import Task, program_of
from harness.files import read_results
from harness.records import Completions, ProblemResults


@dataclass(frozen=True)
class Difference:
    """One setting a held results file was made under, and the value it has now."""

    setting: str  # image_id, limits or programs
    held: str
    now: str

    def __str__(self) -> str:
        return f"{self.setting}: {self.held or '(none)'} → {self.now}"


@dataclass(frozen=True)
class Stale:
    task: Task
    differences: tuple[Difference, ...]


@dataclass(frozen=True)
class ExecutionPlan:
    """What is held, what differs and what is missing; `todo` is what to execute."""

    held: tuple[Task, ...] = ()
    stale: tuple[Stale, ...] = ()
    missing: tuple[Task, ...] = ()
    orphans: tuple[Path, ...] = ()
    rerun: bool = False  # --no-cache: the held ones run again too

    @property
    def todo(self) -> tuple[Task, ...]:
        again = self.held if self.rerun else ()
        return (*self.missing, *(s.task for s in self.stale), *again)

    def note(self) -> str | None:
        """One line on the results files executed again and why (None: no such file)."""
        parts = []
        if self.stale:
            example = {d.setting: d for s in self.stale for d in s.differences}
            why = "; ".join(f"{name}: {_short(d.held)} → {_short(d.now)}" for name, d in example.items())
            parts.append(f"{len(self.stale)} results file(s) made otherwise are executed again ({why})")
        if self.rerun and self.held:
            parts.append(f"{len(self.held)} held results file(s) are executed again (--no-cache)")
        return "execute: " + "; ".join(parts) if parts else None

    def summary(self) -> dict[str, int]:
        return {"held": len(self.held), "stale": len(self.stale), "missing": len(self.missing),
                "orphans": len(self.orphans), "execute": len(self.todo)}


def _short(value: str, width: int = 24) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


def programs_hash(programs: Iterable[str]) -> str:
    """A hash of the programs in their order: what a results file was made from."""
    return hashlib.sha256(json.dumps(list(programs)).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def completions_programs(completions: Completions) -> list[str]:
    return [program_of(completions, c) for c in completions.completions]


def differences(task: Task, done: ProblemResults, image_id: str, limits: str) -> tuple[Difference, ...]:
    """How `done` differs from what executing `task` now would make."""
    held = programs_hash(r.program for r in done.results)
    now = programs_hash(completions_programs(task.completions))
    pairs = (("image_id", done.image_id, image_id), ("limits", done.limits, limits), ("programs", held, now))
    return tuple(Difference(setting, a, b) for setting, a, b in pairs if a != b)


def plan_execution(tasks: Iterable[Task], executor, rerun: bool | None = None,
                   orphans: Iterable[Path] = ()) -> ExecutionPlan:
    """Sort `tasks` into held, stale and missing against what `executor` would do now
    (`executor.image_id(lang)`, `executor.limits_key(lang)`); `rerun` (default: the executor
    has its cache off, `--no-cache`) executes every one of them again."""
    from harness.execute.languages import load_language

    held, stale, missing = [], [], []
    for task in dict((t.out, t) for t in tasks).values():  # one task per results file
        if not task.out.exists():
            missing.append(task)
            continue
        lang = load_language(task.lang)
        found = differences(task, read_results(task.out), executor.image_id(lang), executor.limits_key(lang))
        if found:
            stale.append(Stale(task, found))
        else:
            held.append(task)
    if rerun is None:
        rerun = not getattr(executor, "use_cache", True)
    return ExecutionPlan(tuple(held), tuple(stale), tuple(missing), tuple(orphans), rerun)


def plan_run(root: Path, executor, out_dir: Path | None = None, rerun: bool | None = None) -> ExecutionPlan:
    """The plan of a run directory: every completions file, and the results files whose
    completions file is gone (results written elsewhere, `out_dir`, are left alone)."""
    from harness.execute.inputs import run_tasks

    return plan_execution(run_tasks(root, out_dir), executor, rerun,
                          orphan_results(root) if out_dir is None else ())


def orphan_results(root: Path) -> list[Path]:
    from harness.runs import COMPLETIONS_SUFFIX, RESULTS_SUFFIX, RunDir

    return [p for p in RunDir(root).result_files()
            if not p.with_name(p.name[: -len(RESULTS_SUFFIX)] + COMPLETIONS_SUFFIX).exists()]


def remove_orphans(plan: ExecutionPlan) -> None:
    for path in plan.orphans:
        path.unlink(missing_ok=True)
