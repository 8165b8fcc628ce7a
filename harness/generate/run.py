"""The generate stage over a run directory: every (language, problem, adapter) in one pass.

    list work ──► skip finished files ──► resume partial files ──► engine ──►
    append each finished sample to `<problem>.partial.jsonl` ──► write `<problem>.json.gz`

Resume works at the sample level: a finished (problem, adapter) is one atomically written
completions file; an unfinished one keeps its finished samples, one JSON line each, in a
partial file beside it (a torn last line is ignored). A restarted run samples only what
is missing, and per-sample seeds make the result identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from harness.errors import UserError
from harness.files import write_completions
from harness.generate import distributed
from harness.generate.budget import auto_slots
from harness.generate.engine import BASE_ROW, Engine, EngineConfig, Request
from harness.generate.sampling import sample_seed
from harness.generate.telemetry import GenerationTelemetry
from harness.models import LoadedModel
from harness.problems import ProblemSet
from harness.records import BASE, Completions, Problem, SamplingConfig
from harness.runs import COMPLETIONS_SUFFIX, RunDir

PARTIAL_SUFFIX = ".partial.jsonl"


@dataclass(frozen=True)
class AdapterChoice:
    """One column of the evaluation: the base model (`name == "base"`) or a named adapter.

    `spec` is the loaded adapter file (`harness.adapters.load_adapter`); when it is None for
    a named adapter, `generate_run` loads it by name."""

    name: str = BASE
    content_hash: str = ""
    spec: object | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class WorkItem:
    lang: str
    problem: Problem
    adapter: AdapterChoice
    path: Path  # the completions file


def generate_run(
    loaded: LoadedModel,
    problem_sets: list[ProblemSet],
    adapters: list[AdapterChoice],
    sampling: SamplingConfig,
    run: RunDir,
    batch_size: int | None = None,
) -> GenerationTelemetry:
    """Sample every missing completion of every (language, problem, adapter) in one pass.

    `batch_size` caps the rows decoded together (None: as many as fit the memory budget).
    Under torchrun each rank takes its share of the work; rank 0's telemetry sums all ranks."""
    start = time.perf_counter()
    world = distributed.join(loaded.device)
    adapters = [_resolved(choice, loaded) for choice in adapters]
    problems = [(ps.lang, problem) for ps in problem_sets for problem in ps.problems]
    # a rank takes whole problems (all their adapters: one prefill batch, mixed decode batches)
    items = [
        (position, WorkItem(lang, problem, adapter,
                            run.completions_path(loaded.name, adapter.name, lang, problem.name)))
        for position, (lang, problem) in enumerate(problems) for adapter in adapters
    ]
    todo = [item for position, item in items if world.mine(position) and not item.path.exists()]
    telemetry = GenerationTelemetry()
    set_rows, detach = _attach(loaded, adapters, todo)
    index_of = {a.name: i for i, a in enumerate(a for a in adapters if a.name != BASE)}
    max_prompt = 0
    if todo:
        max_prompt = max(len(_prompt_ids(loaded, item.problem)) for item in todo)
    slots = batch_size or auto_slots(loaded.model, max_prompt + sampling.max_tokens)
    config = EngineConfig(sampling.temperature, sampling.top_p, sampling.max_tokens, slots,
                          max_positions=_max_positions(loaded.model))
    engine = Engine(loaded.model, loaded.tokenizer, config, set_rows=set_rows, telemetry=telemetry)
    by_key = {(i.lang, i.problem.name, i.adapter.name): i for i in todo}
    done: dict[tuple, dict[int, str]] = {}
    requests = _requests(loaded, todo, sampling, index_of, done)
    progress = tqdm(total=len(todo) * sampling.n, desc="generate", unit="sample",
                    disable=not todo or world.rank != 0)
    try:
        for request, sample in engine.generate(requests):
            progress.update(1)
            item = by_key[request.key]
            written = time.perf_counter()
            _append_partial(item, sampling, loaded.name, sample.index, sample.text)
            done[request.key][sample.index] = sample.text
            telemetry.samples += 1
            if len(done[request.key]) == sampling.n:
                _finish(item, sampling, loaded.name, done.pop(request.key))
            telemetry.add("write", time.perf_counter() - written)
    finally:
        progress.close()
        detach()
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


def _requests(loaded, todo: list[WorkItem], sampling: SamplingConfig, index_of: dict[str, int],
              done: dict) -> Iterator[Request]:
    """One request per unfinished (problem, adapter), built lazily (the engine pulls them)."""
    for item in todo:
        key = (item.lang, item.problem.name, item.adapter.name)
        have = _read_partial(item, sampling, loaded.name)
        done[key] = have
        missing = [i for i in range(sampling.n) if i not in have]
        if not missing:
            _finish(item, sampling, loaded.name, done.pop(key))
            continue
        seeds = tuple(
            (i, sample_seed(sampling.seed, f"{item.lang}/{item.problem.name}", item.adapter.name, i))
            for i in missing
        )
        yield Request(key, tuple(_prompt_ids(loaded, item.problem)),
                      index_of.get(item.adapter.name, BASE_ROW), seeds, item.problem.stop_tokens)


def _prompt_ids(loaded: LoadedModel, problem: Problem) -> list[int]:
    """MultiPL-E gives the model `prompt.strip()`."""
    return loaded.tokenizer(problem.prompt.strip())["input_ids"]


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
def partial_path(completions_path: Path) -> Path:
    return completions_path.with_name(completions_path.name[: -len(COMPLETIONS_SUFFIX)] + PARTIAL_SUFFIX)


def _header(item: WorkItem, sampling: SamplingConfig, model: str) -> dict:
    """What a partial file's samples depend on; a mismatch discards them."""
    return {"model": model, "adapter": item.adapter.name, "adapter_hash": item.adapter.content_hash,
            "sampling": vars(sampling), "prompt": item.problem.prompt}


def _read_partial(item: WorkItem, sampling: SamplingConfig, model: str) -> dict[int, str]:
    path = partial_path(item.path)
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if header != _header(item, sampling, model):
        path.unlink()
        return {}
    have: dict[int, str] = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill
        have[int(entry["index"])] = entry["completion"]
    return have


def _append_partial(item: WorkItem, sampling: SamplingConfig, model: str, index: int, text: str) -> None:
    path = partial_path(item.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = not path.exists()
    with path.open("a", encoding="utf-8") as f:
        if fresh:
            f.write(json.dumps(_header(item, sampling, model), ensure_ascii=False) + "\n")
        f.write(json.dumps({"index": index, "completion": text}, ensure_ascii=False) + "\n")


def _finish(item: WorkItem, sampling: SamplingConfig, model: str, texts: dict[int, str]) -> None:
    """Write the completions file (atomically), then drop the partial file."""
    problem = item.problem
    record = Completions(
        name=problem.name,
        language=problem.language,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_tokens,
        prompt=problem.prompt,
        tests=problem.tests,
        stop_tokens=problem.stop_tokens,
        completions=tuple(texts[i] for i in range(sampling.n)),
        model=model,
        adapter=item.adapter.name,
        adapter_hash=item.adapter.content_hash,
        seed=sampling.seed,
    )
    write_completions(item.path, record)
    partial_path(item.path).unlink(missing_ok=True)


def _check_complete(items: list[WorkItem]) -> None:
    missing = [item.path for item in items if not item.path.exists()]
    if missing:
        raise UserError(f"{len(missing)} completions files missing after generation (first: {missing[0]}); "
                        "run the same command again to resume")
