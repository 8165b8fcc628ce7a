"""flora-eval's Python API, for notebooks and other tools. The CLI is a thin layer over it.

    from harness import api as fe
    run = fe.evaluate("tiny", adapters=["pl-r1-flora"], langs=["pl"], n=4,
                      dataset="../shared/multipl-e/humaneval", limit=5, run_dir="results/nb")
    run.scores()      # [ProblemScore, ...]: pass@k of every (model, adapter, language, problem)
    run.table1()      # pandas: the paper's Table 1 (rows model × language, columns base/FLoRA/...)
    fe.open_run("results/nb").frame()   # one row per score record, provenance included

Each stage is a function of its own — `generate`, `execute`, `score`, `report` — taking and
returning plain values, and `evaluate` is them in order (with `generate_and_execute`, the
first two overlapped: a completions file is executed as soon as it is written).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.records import BASE, BENCHMARK, ProblemScore, SamplingConfig
from harness.runs import RunDir, new_run_id

RESULTS_ROOT = Path("results")
DEFAULT_LANG = "py"


@dataclass(frozen=True)
class Evaluation:
    """What to evaluate: a model, its adapters (the base model is always a column), the
    languages (empty: the languages the adapters were trained on, else Python), the sampling
    settings, the benchmarks and where their problems come from (`dataset`: local MultiPL-E
    data, None: the hub)."""

    model: str = "tiny"
    adapters: tuple[str, ...] = ()
    langs: tuple[str, ...] = ()
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    benchmarks: tuple[str, ...] = (BENCHMARK,)
    dataset: str | None = None
    limit: int | None = None
    adapters_dir: str | None = None
    endpoint: Any = None  # harness.generate.endpoint.EndpointConfig: a served model, not in-process
    prompt_style: str = "completion"  # "completion" (MultiPL-E's) or "instruct" (harness/prompts.py)


@dataclass(frozen=True)
class Run:
    """A run directory, read through its records."""

    root: Path

    @property
    def dir(self) -> RunDir:
        return RunDir.existing(self.root)

    def manifest(self) -> dict[str, Any]:
        return self.dir.read_manifest()

    def scores(self) -> list[ProblemScore]:
        """The score records (scores.csv; scored first when missing or made from other results
        or under other status rules than those now)."""
        from harness.report.load import run_scores

        return run_scores(self.dir)

    def frame(self):
        """One row per score record: provenance, problem, n, c, pass@k (fractions), statuses."""
        import pandas as pd

        rows = []
        for s in self.scores():
            p = s.provenance
            rows.append({"model": p.model, "model_revision": p.model_revision, "dtype": p.dtype,
                         "quantization": p.quantization, "device": p.device, "adapter": p.adapter,
                         "method": p.method, "rank": p.rank, "adapter_hash": p.adapter_hash,
                         "lang": p.lang, "prompt_style": p.prompt_style, "chat_template": p.chat_template,
                         "benchmark": p.benchmark, "dataset_revision": p.dataset_revision,
                         **{f"sampling_{k}": v for k, v in vars(p.sampling).items()},
                         "problem": s.problem, "n": s.n, "c": s.c,
                         **{f"pass@{k}": v for k, v in s.pass_at.items()}, "statuses": s.statuses})
        return pd.DataFrame(rows)

    def table1(self, k: int = 1):
        """The paper's Table 1 for pass@k: mean over problems in percent, relative to base."""
        from harness.report.build import assemble
        from harness.report.load import load_run
        from harness.report.tables import cell_estimates, table1

        report = assemble([load_run(self.dir)])
        return report.table1 if k == 1 else table1(cell_estimates(report.counts, k))

    def report(self) -> dict[str, Path]:
        return report(self.root)


def open_run(path: str | Path) -> Run:
    RunDir.existing(path)
    return Run(Path(path))


# ---------------------------------------------------------------------------------------
# The stages
# ---------------------------------------------------------------------------------------
def generate(evaluation: Evaluation, run_dir: str | Path | None = None, *, batch_size: int | None = None,
             device: str | None = None, load_8bit: bool = False, overwrite: bool = False,
             stage: str = "generate", on_finished=None):
    """Sample the completions of `evaluation` into a run directory (resuming what is there;
    files made with other settings stop it, or with `overwrite` are made again). Returns the
    run, its invocation in the manifest and the generation telemetry. `on_finished(path)`:
    called with each completions file once complete. Under torchrun rank 0 alone writes. With
    `evaluation.endpoint` the completions come from that server instead (`generate_served`)."""
    from harness.prompts import check_style, style_for

    check_style(evaluation.prompt_style)
    if evaluation.endpoint is not None:
        return generate_served(evaluation, run_dir, overwrite=overwrite, stage=stage)
    from harness.adapters import adapter_languages
    from harness.generate import generate_run
    from harness.generate.run import plan_generation, work_items
    from harness.models import load_model

    loaded = load_model(evaluation.model, device=generation_device(device), load_8bit=load_8bit)
    style = style_for(evaluation.prompt_style, loaded.tokenizer, evaluation.model)
    adapters = resolve_adapters(evaluation, loaded)
    langs = resolve_langs(evaluation.langs, adapter_languages([a.spec for a in adapters if a.spec]))
    problem_sets = load_problem_sets(evaluation, langs)
    root = Path(run_dir or RESULTS_ROOT / new_run_id(evaluation.model))
    run = RunDir.open(root) if is_rank0() else RunDir(root)  # the other ranks write nothing
    invocation = plan = None
    if is_rank0():  # the plan: what the run holds, read once (a conflict stops here, nothing written)
        plan = plan_generation(work_items(loaded, problem_sets, adapters, evaluation.sampling, run, style),
                               run, overwrite)
        invocation = begin_generation(run, stage, evaluation, langs, problem_sets, adapters, loaded,
                                      overwrite, prompt_style=style.name, chat_template=style.template_hash)
    telemetry = generate_run(loaded, problem_sets, adapters, evaluation.sampling, run,
                             batch_size=batch_size, overwrite=overwrite, on_finished=on_finished, plan=plan,
                             style=style)
    if invocation is not None:
        invocation.update(telemetry={"generate": telemetry.as_dict()})
    return Run(run.root), invocation, telemetry


def generate_served(evaluation: Evaluation, run_dir: str | Path | None = None, *, overwrite: bool = False,
                    stage: str = "generate"):
    """`generate` through an OpenAI-compatible server: the same files, provenance and resume
    rules; the model and adapters are the server's names (harness/generate/remote.py)."""
    from harness.generate.remote import connect, generate_remote
    from harness.generate.run import plan_generation, work_items

    endpoint = connect(evaluation.endpoint, evaluation.model, evaluation.adapters, evaluation.prompt_style)
    langs = resolve_langs(evaluation.langs, endpoint.languages())
    problem_sets = load_problem_sets(evaluation, langs)
    run = RunDir.open(run_dir or RESULTS_ROOT / new_run_id(evaluation.model))
    style = endpoint.style
    plan = plan_generation(work_items(endpoint.model, problem_sets, list(endpoint.adapters),
                                      evaluation.sampling, run, style), run, overwrite)
    invocation = begin_generation(run, stage, evaluation, langs, problem_sets, endpoint.adapters,
                                  endpoint.model, overwrite, endpoint=evaluation.endpoint.entry(),
                                  prompt_style=style.name, chat_template=style.template_hash)
    telemetry = generate_remote(endpoint, problem_sets, evaluation.sampling, run, overwrite, plan=plan)
    invocation.update(telemetry={"generate": telemetry.as_dict()})
    return Run(run.root), invocation, telemetry


def execute(run: Run, jobs: int | None = None, use_cache: bool = True, invocation=None,
            executor: str = "local", scheduler: str | None = None, cold_toolchains: bool = False):
    """Run every completion's tests in Docker, writing results files, as the execution plan
    says (harness/execute/plan.py, the same for every path: missing results, and results made
    by another image, other limits or from other programs; with `use_cache=False` all of
    them); `executor` "dask" runs them on the workers of the Dask scheduler `scheduler`
    (tls://host:port, tcp:// or a file); `cold_toolchains`: no warm compilers (same statuses)."""
    from harness.execute import execute_run, open_executor

    run_dir = run.dir
    runner = open_executor(executor, jobs=jobs, use_cache=use_cache, scheduler=scheduler,
                           cold_toolchains=cold_toolchains)
    invocation = invocation or run_dir.begin("execute", config={"jobs": jobs, "use_cache": use_cache})
    invocation.update(config={"executor": executor, "scheduler": scheduler,
                              "cold_toolchains": cold_toolchains})
    with runner:
        execution = execute_run(run_dir, jobs=jobs, use_cache=use_cache, executor=runner)
    record_execution(invocation, execution)
    return execution


def record_execution(invocation, execution) -> None:
    """The execute stage's images, telemetry, plan (files held, stale, missing, orphaned,
    executed) and (on a cluster) nodes in the manifest."""
    nodes = {"nodes": execution.nodes} if execution.nodes else {}
    invocation.update(images=execution.images, telemetry={"execute": execution.telemetry},
                      plan={"execute": execution.plan}, **nodes)


def generate_and_execute(evaluation: Evaluation, run_dir: str | Path | None = None, *,
                         jobs: int | None = None, use_cache: bool = True, executor: str = "local",
                         scheduler: str | None = None, stage: str = "evaluate", cold_toolchains: bool = False,
                         **generation: Any):
    """`generate` and `execute` overlapped: each completions file goes to execution as soon as
    it is written, while generation goes on (same files as one stage after the other). The
    manifest's telemetry gets `overlap`: each stage's time and how long both were active.
    Returns the run and its invocation (None on the ranks other than 0, which only generate)."""
    if not is_rank0():
        run, invocation, _ = generate(evaluation, run_dir, stage=stage, **generation)
        return run, invocation
    from harness.execute import open_executor
    from harness.execute.overlap import Overlap

    spec = {"kind": executor, "jobs": jobs, "use_cache": use_cache, "scheduler": scheduler,
            "cold_toolchains": cold_toolchains}
    open_executor(**spec).close()  # a bad --executor/--scheduler stops the run now, in one line
    overlap = Overlap(spec, resolve_langs(evaluation.langs, []) if evaluation.langs else ())
    try:
        overlap.generation_started()
        with overlap.watching():  # the execution process dying ends generation within a second
            run, invocation, _ = generate(evaluation, run_dir, stage=stage, on_finished=overlap.submit,
                                          **generation)
        overlap.generation_done()
        execution = overlap.finish(run.dir)
    except BaseException:
        overlap.abort()
        raise
    invocation.update(config={"jobs": jobs, "use_cache": use_cache, "executor": executor,
                              "scheduler": scheduler, "cold_toolchains": cold_toolchains})
    record_execution(invocation, execution)
    invocation.update(telemetry={"overlap": overlap.report()})
    return run, invocation


def score(run: Run) -> list[ProblemScore]:
    """Per-problem score records of every results file, written to scores.csv (with what they
    were made from: the results files' hashes and the languages' status rules)."""
    from harness.score import score_run

    return score_run(run.dir)


def report(path: str | Path) -> dict[str, Path]:
    """Table 1 (markdown, CSV, LaTeX), the other tables and report.html in the run directory."""
    from harness.report import write_reports

    return write_reports(RunDir.existing(path))


def evaluate(model: str = "tiny", adapters: list[str] | tuple[str, ...] = (),
             langs: list[str] | tuple[str, ...] = (), *, benchmarks: tuple[str, ...] = (BENCHMARK,),
             n: int = 100, temperature: float = 0.1, top_p: float = 0.95, max_tokens: int = 1024,
             seed: int = 0, dataset: str | None = None, limit: int | None = None,
             run_dir: str | Path | None = None, jobs: int | None = None, use_cache: bool = True,
             overwrite: bool = False, executor: str = "local", scheduler: str | None = None,
             **generation: Any) -> Run:
    """The whole pipeline: problems → generate and execute (overlapped) → score → report.
    Returns the run."""
    evaluation = Evaluation(model, tuple(adapters), tuple(langs),
                            SamplingConfig(n, temperature, top_p, max_tokens, seed), tuple(benchmarks),
                            dataset, limit)
    run, invocation = generate_and_execute(evaluation, run_dir, jobs=jobs, use_cache=use_cache,
                                           executor=executor, scheduler=scheduler, overwrite=overwrite,
                                           **generation)
    if not is_rank0():
        return run
    score(run)
    report(run.root)
    invocation.update(finished=True)
    return run


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------
def resolve_langs(langs: tuple[str, ...] | list[str], trained_on: list[str]) -> list[str]:
    """Language keys from keys or aliases; none given: the adapters' languages, else Python."""
    from harness.execute.languages import load_language

    wanted = list(langs) or trained_on or [DEFAULT_LANG]
    return list(dict.fromkeys(load_language(lang).key for lang in wanted))


def load_problem_sets(evaluation: Evaluation, langs: list[str]) -> list:
    """Every (benchmark, language) of the evaluation, benchmark by benchmark; a file whose rows
    are another language's stops the run with one line."""
    from harness.execute.languages import language_key
    from harness.problems import check_language, load_problems

    return [check_language(load_problems(lang, evaluation.dataset, limit=evaluation.limit,
                                         benchmark=benchmark), language_key)
            for benchmark in dict.fromkeys(evaluation.benchmarks) for lang in langs]


def begin_generation(run: RunDir, stage: str, evaluation: Evaluation, langs: list[str], problem_sets: list,
                     adapters, model, overwrite: bool, **config: Any):
    """Record a generating invocation in the manifest: what is evaluated, on which problems,
    with which model (`model`: anything with name, source and revision)."""
    return run.begin(
        stage,
        config={"model": evaluation.model, "adapters": [adapter_entry(a) for a in adapters],
                "langs": langs, "benchmarks": list(dict.fromkeys(evaluation.benchmarks)),
                "sampling": vars(evaluation.sampling), "limit": evaluation.limit, "overwrite": overwrite,
                **config},
        dataset={f"{ps.benchmark}-{ps.lang}": dataset_entry(ps) for ps in problem_sets},
        model={"name": model.name, "source": model.source, "revision": model.revision, "dtype": model.dtype,
               "quantization": model.quantization, "device": model.device_type, "seeded": model.seeded,
               **({"identity": model.identity} if getattr(model, "identity", None) else {})},
    )


def resolve_adapters(evaluation: Evaluation, loaded) -> list:
    """The evaluation's columns: the base model, then each adapter, loaded and checked
    against the base model's shapes now, so a bad adapter stops the run before generation."""
    from harness.adapters import load_adapter
    from harness.generate import AdapterChoice

    adapters_dir = Path(evaluation.adapters_dir) if evaluation.adapters_dir else None
    choices = [AdapterChoice(BASE)]
    for name in dict.fromkeys(evaluation.adapters):
        if name == BASE:
            continue
        spec = load_adapter(name, base_model=loaded.model, adapters_dir=adapters_dir)
        choices.append(AdapterChoice(name, spec.content_hash, spec))
    return choices


def dataset_entry(problem_set) -> dict:
    ps = problem_set
    return {"benchmark": ps.benchmark, "lang": ps.lang, "source": ps.source, "revision": ps.revision,
            "problems": len(ps.problems)}


def adapter_entry(choice) -> dict:
    """What the manifest records of one evaluated column."""
    if choice.spec is None:
        return {"name": choice.name, "method": BASE, "hash": ""}
    spec = choice.spec
    return {"name": choice.name, "method": spec.method, "rank": spec.rank, "hash": choice.content_hash,
            "path": str(getattr(spec, "path", "")), "language": spec.metadata.get("language")}


def generation_device(device: str | None) -> str | None:
    """`device`, else under torchrun this process's own GPU (or the CPU), else automatic."""
    from harness.generate.distributed import launched_size, local_device

    return device or (local_device() if launched_size() > 1 else None)


def is_rank0() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0
