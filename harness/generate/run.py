"""The generate stage over a run directory: every (language, problem, adapter) in one pass.

    list work ──► check what is on disk (resume.py) ──► engine ──►
    append each finished sample to `<problem>.partial.jsonl` ──► write `<problem>.json.gz`

Under torchrun, the other ranks send their samples to rank 0, which alone writes (stream.py).
Resume works at the sample level: a finished (problem, adapter) is one atomically written
completions file; an unfinished one keeps its finished samples in a partial file beside
it. A restarted run samples only what is missing, and per-sample seeds make the result
identical to an uninterrupted run. A run directory never mixes settings: files made with
other settings stop the run before anything is written (resume.py says which may be kept).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from harness.errors import UserError
from harness.extract import extract
from harness.files import write_completions
from harness.generate import distributed, stream
from harness.generate.budget import auto_slots
from harness.generate.engine import BASE_ROW, Engine, EngineConfig, Request
from harness.generate.resume import Holding, Plan, append_partial, partial_path, plan_run, results_path
from harness.generate.sampling import sample_seed
from harness.generate.telemetry import GenerationTelemetry
from harness.models import LoadedModel
from harness.problems import ProblemSet
from harness.prompts import COMPLETION_STYLE, INSTRUCT, Style, end_of_turn_ids, prompt_ids
from harness.records import BASE, Completions, Problem, Provenance, SamplingConfig
from harness.runs import RunDir, harness_version

__all__ = ["AdapterChoice", "WorkItem", "generate_run", "partial_path", "plan_generation"]


@dataclass(frozen=True)
class AdapterChoice:
    """One column of the evaluation: the base model (`name == "base"`) or a named adapter.

    `spec` is the loaded adapter file (`harness.adapters.load_adapter`); when it is None for
    a named adapter, `generate_run` loads it by name."""

    name: str = BASE
    content_hash: str = ""
    spec: object | None = field(default=None, compare=False, repr=False)

    @property
    def method(self) -> str:
        return getattr(self.spec, "method", BASE) if self.name != BASE else BASE

    @property
    def rank(self) -> int | None:
        return getattr(self.spec, "rank", None) if self.name != BASE else None


@dataclass(frozen=True)
class WorkItem:
    lang: str
    problem: Problem
    adapter: AdapterChoice
    path: Path  # the completions file
    provenance: Provenance  # what its completions file will record


def provenance_of(loaded: LoadedModel, problem_set: ProblemSet, adapter: AdapterChoice,
                  sampling: SamplingConfig, style: Style = COMPLETION_STYLE) -> Provenance:
    """The provenance of every completion of (model, adapter, language) sampled now."""
    return Provenance(
        model=loaded.name, model_revision=loaded.revision, dtype=loaded.dtype,
        quantization=loaded.quantization, device=loaded.device_type, adapter=adapter.name,
        method=adapter.method, rank=adapter.rank, adapter_hash=adapter.content_hash, lang=problem_set.lang,
        sampling=sampling, seeded=loaded.seeded, prompt_style=style.name, chat_template=style.template_hash,
        benchmark=problem_set.benchmark,
        dataset=problem_set.source,
        dataset_revision=problem_set.revision, harness_version=harness_version(),
    )


def generate_run(
    loaded: LoadedModel,
    problem_sets: list[ProblemSet],
    adapters: list[AdapterChoice],
    sampling: SamplingConfig,
    run: RunDir,
    batch_size: int | None = None,
    overwrite: bool = False,
    on_finished: Callable[[Path], None] | None = None,
    plan: Plan | None = None,
    style: Style = COMPLETION_STYLE,
) -> GenerationTelemetry:
    """Sample every missing completion of every (language, problem, adapter) in one pass.

    `batch_size` caps the rows decoded together (None: as many as fit the memory budget).
    `plan`: what the run directory holds (`plan_generation`; made here on rank 0 when not
    given). Files made with other settings stop the run (`overwrite`: regenerate them instead).
    `on_finished(path)` is called with every completions file as soon as it is complete
    (files already complete: at the start). Under torchrun rank 0 plans and tells every rank
    what is held (the ranks must list the same work); each rank takes its share of the work
    and sends its samples to rank 0, which alone writes the run directory (stream.py); rank
    0's telemetry sums all ranks. `style`: the prompt style (harness/prompts.py; `style_for`
    checks the model can take it)."""
    start = time.perf_counter()
    adapters = [_resolved(choice, loaded) for choice in adapters]
    items = work_items(loaded, problem_sets, adapters, sampling, run, style)
    world = distributed.join(loaded.device)
    group = stream.side_group(world)
    error = ""
    if world.rank == 0 and plan is None:
        try:  # before anything is written: a conflict leaves the run as it was
            plan = plan_generation(items, run, overwrite)
        except UserError as exc:
            error = str(exc)
    held = stream.share_holdings(world, group, dict(plan.held) if plan else None, error)
    _check_agreed(held, items)
    writer = Writer(sampling.n, held, on_finished)
    if world.rank == 0:
        plan.redo()
        writer.settle([item for _, item in items])
    todo = [item for position, item in items if world.mine(position) and not held[item.path].complete]
    telemetry = GenerationTelemetry()
    set_rows, detach = _attach(loaded, adapters, todo)
    index_of = {a.name: i for i, a in enumerate(a for a in adapters if a.name != BASE)}
    max_prompt = 0
    if todo:
        max_prompt = max(len(_prompt_ids(loaded, item, style)) for item in todo)
    slots = batch_size or auto_slots(loaded.model, max_prompt + sampling.max_tokens)
    config = EngineConfig(sampling.temperature, sampling.top_p, sampling.max_tokens, slots,
                          max_positions=_max_positions(loaded.model))
    engine = Engine(loaded.model, loaded.tokenizer, config, set_rows=set_rows, telemetry=telemetry)
    by_key = {_key(item): (position, item) for position, item in items}
    positions = [item for _, item in items]
    sender = stream.Sender(group) if world.rank != 0 else None
    receiver = stream.Receiver(world, group, lambda position, index, text, reason: writer.add(
        positions[position], index, text, reason)).start() if world.rank == 0 and world.size > 1 else None
    requests = _requests(loaded, todo, held, sampling, index_of, style)
    progress = tqdm(total=len(todo) * sampling.n, desc="generate", unit="sample",
                    disable=not todo or world.rank != 0)
    try:
        for request, sample in stream.watched(engine.generate(requests), receiver):
            progress.update(1)
            position, item = by_key[request.key]
            written = time.perf_counter()
            if sender is not None:
                sender.add(position, sample.index, sample.text, sample.finish_reason)
            else:
                writer.add(item, sample.index, sample.text, sample.finish_reason)
            telemetry.samples += 1
            telemetry.add("write", time.perf_counter() - written)
    finally:
        progress.close()
        detach()
    if sender is not None:
        sender.close()
    if receiver is not None:
        receiver.join()
    telemetry.seconds = time.perf_counter() - start
    telemetry.extra.update(world_size=world.size, slots=slots)
    reports = distributed.gather(world, telemetry.as_dict())
    distributed.leave(world)
    if world.rank == 0 and world.size > 1:
        merged = GenerationTelemetry(extra={"world_size": world.size, "slots": slots})
        for report in reports:
            merged.merge(report)
        _check_complete([item for _, item in items])
        return merged
    return telemetry


@dataclass
class Writer:
    """Rank 0 (or the lone process) writes: each finished sample to its partial file, the
    completions file once all n are in (then `on_finished(path)`)."""

    n: int
    held: dict[Path, Holding]
    on_finished: Callable[[Path], None] | None = None
    done: dict[Path, dict[int, tuple[str, str]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def settle(self, items: list[WorkItem]) -> None:
        """Before sampling: report complete files; finish those whose partial has every sample."""
        for item in items:
            found = self.held[item.path]
            if not found.complete and len(found.samples) == self.n:
                _finish(item, drawn(found))
                self.held[item.path] = Holding(complete=True)
            if self.held[item.path].complete and self.on_finished is not None:
                self.on_finished(item.path)

    def add(self, item: WorkItem, index: int, text: str, reason: str) -> None:
        with self.lock:
            append_partial(item.path, item.provenance, item.problem.prompt, index, text, reason)
            have = self.done.setdefault(item.path, drawn(self.held[item.path]))
            have[index] = (text, reason)
            if len(have) < self.n:
                return
            _finish(item, self.done.pop(item.path))
        if self.on_finished is not None:
            self.on_finished(item.path)


def drawn(held: Holding) -> dict[int, tuple[str, str]]:
    """index → (text, finish reason) of the samples a work item holds."""
    return {i: (text, held.reasons.get(i, "")) for i, text in held.samples.items()}


def work_items(loaded: LoadedModel, problem_sets: list[ProblemSet], adapters: list[AdapterChoice],
               sampling: SamplingConfig, run: RunDir,
               style: Style = COMPLETION_STYLE) -> list[tuple[int, WorkItem]]:
    """(problem position, item) for every (language, problem, adapter): a rank takes whole
    problems (all their adapters: one prefill batch, mixed decode batches)."""
    problems = [(ps, problem) for ps in problem_sets for problem in ps.problems]
    return [
        (position, WorkItem(ps.lang, problem, adapter,
                            run.completions_path(loaded.name, adapter.name, ps.lang, problem.name,
                                                 ps.benchmark),
                            provenance_of(loaded, ps, adapter, sampling, style)))
        for position, (ps, problem) in enumerate(problems) for adapter in adapters
    ]


def plan_generation(items: list[tuple[int, WorkItem]], run: RunDir, overwrite: bool) -> Plan:
    """What each item already has on disk, read once. A file made with other settings stops
    the run with one line, or, with `overwrite`, is planned to be made again (`Plan.redo`
    removes it, with its results, when generation starts)."""
    return plan_run([(item.path, item.provenance, item.problem.prompt) for _, item in items], run.root,
                    overwrite)


def _check_agreed(held: dict[Path, Holding], items: list[tuple[int, WorkItem]]) -> None:
    """Every rank must list the work rank 0 planned (same problems, adapters and settings)."""
    mine = {item.path for _, item in items}
    if set(held) != mine:
        odd = sorted(mine ^ set(held))[0]
        raise UserError(f"this rank's work differs from rank 0's ({odd}); give every rank the same "
                        "arguments and data")


def _key(item: WorkItem) -> tuple[str, str, str, str]:
    return (item.provenance.benchmark, item.lang, item.problem.name, item.adapter.name)


def _requests(loaded, todo: list[WorkItem], held: dict[Path, Holding], sampling: SamplingConfig,
              index_of: dict[str, int], style: Style) -> Iterator[Request]:
    """One request per unfinished (problem, adapter), built lazily (the engine pulls them).
    Completion prompts stop at the row's stop tokens; instruct replies at the chat template's
    end of turn (and the end of text), never at stop tokens that would cut inside a block."""
    ends = end_of_turn_ids(loaded.tokenizer) if style.chat else ()
    for item in todo:
        key = _key(item)
        missing = [i for i in range(sampling.n) if i not in held[item.path].samples]
        if not missing:  # rank 0 wrote it from its partial file (Writer.settle)
            continue
        seeds = tuple(
            (i, sample_seed(sampling.seed, f"{item.lang}/{item.problem.name}", item.adapter.name, i))
            for i in missing
        )
        stops = () if style.chat else item.problem.stop_tokens
        yield Request(key, tuple(_prompt_ids(loaded, item, style)),
                      index_of.get(item.adapter.name, BASE_ROW), seeds, stops, end_ids=ends)


def _prompt_ids(loaded: LoadedModel, item: WorkItem, style: Style) -> list[int]:
    """MultiPL-E gives the model `prompt.strip()`; instruct, the row's conversation rendered
    with the model's chat template (rendered per row: the prompt differs by language)."""
    return prompt_ids(item.problem, item.lang, style, loaded.tokenizer)


def _max_positions(model) -> int:
    config = model.config
    return int(getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", 1 << 30))


# -- adapters -------------------------------------------------------------------------------
def _resolved(choice: AdapterChoice, loaded: LoadedModel) -> AdapterChoice:
    """A named adapter with its file loaded and hashed (the CLI may have done it already)."""
    if choice.name == BASE or choice.spec is not None:
        return choice
    from harness.adapters import load_adapter

    spec = load_adapter(choice.name, base_model=loaded.name)
    return AdapterChoice(choice.name, choice.content_hash or spec.content_hash, spec)


def _attach(loaded: LoadedModel, adapters: list[AdapterChoice], todo: list[WorkItem]):
    """Inject every named adapter once; rows then pick theirs by index (`set_rows`)."""
    specs = [a.spec for a in adapters if a.name != BASE]
    if not specs or not todo:
        return None, lambda: None
    from harness.adapters import attach

    handle = attach(loaded.model, specs)
    return handle.set_rows, handle.detach


# -- files ------------------------------------------------------------------------------------
def _finish(item: WorkItem, texts: dict[int, tuple[str, str]]) -> None:
    """Write the completions file (atomically), with each sample's finish reason, then drop
    the partial file and any results of an earlier completions file (they no longer
    describe it). An instruct sample is a reply: the file keeps it, and the code extracted
    from it is the completion."""
    problem, sampling = item.problem, item.provenance.sampling
    samples = tuple(texts[i][0] for i in range(sampling.n))
    replies: tuple[str, ...] = ()
    if item.provenance.prompt_style == INSTRUCT:
        replies = samples
        samples = tuple(extract(reply, problem, item.lang).completion for reply in replies)
    record = Completions(
        name=problem.name,
        language=problem.language,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_tokens,
        prompt=problem.prompt,
        tests=problem.tests,
        stop_tokens=problem.stop_tokens,
        completions=samples,
        finish_reasons=tuple(texts[i][1] for i in range(sampling.n)),
        replies=replies,
        provenance=item.provenance,
    )
    write_completions(item.path, record)
    results_path(item.path).unlink(missing_ok=True)
    partial_path(item.path).unlink(missing_ok=True)


def _check_complete(items: list[WorkItem]) -> None:
    missing = [item.path for item in items if not item.path.exists()]
    if missing:
        raise UserError(f"{len(missing)} completions files missing after generation (first: {missing[0]}); "
                        "run the same command again to resume")
