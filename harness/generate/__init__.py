"""Generate stage: sample n completions per (problem, adapter) and write MultiPL-E files.

`generate_run` is the stage's entry point. It skips every (problem, adapter) whose
completions file already exists, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from harness.files import write_completions
from harness.generate.stops import truncate_at_stop
from harness.models import LoadedModel
from harness.problems import ProblemSet
from harness.records import BASE, Completions, Problem, SamplingConfig
from harness.runs import RunDir


@dataclass(frozen=True)
class AdapterChoice:
    """One column of the evaluation: the base model (`name == "base"`) or a named adapter."""

    name: str = BASE
    content_hash: str = ""


@dataclass
class GenerationTelemetry:
    prompts: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        secs = max(self.seconds, 1e-9)
        return {
            "prompts": self.prompts,
            "prefill_tokens": self.prefill_tokens,
            "decode_tokens": self.decode_tokens,
            "seconds": round(self.seconds, 3),
            "decode_tokens_per_s": round(self.decode_tokens / secs, 1),
            **self.extra,
        }


def sample_seed(run_seed: int, problem: str, adapter: str, index: int = 0) -> int:
    """The one place per-sample randomness is derived: (run seed, problem, adapter, index)."""
    key = f"{run_seed}|{problem}|{adapter}|{index}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)


def generate_run(
    loaded: LoadedModel,
    problem_sets: list[ProblemSet],
    adapters: list[AdapterChoice],
    sampling: SamplingConfig,
    run: RunDir,
    batch_size: int = 32,
) -> GenerationTelemetry:
    """Sample completions for every (language, problem, adapter) not yet on disk."""
    todo = [
        (problem_set.lang, problem, adapter)
        for problem_set in problem_sets
        for problem in problem_set.problems
        for adapter in adapters
        if not run.completions_path(loaded.name, adapter.name, problem_set.lang, problem.name).exists()
    ]
    telemetry = GenerationTelemetry()
    start = time.perf_counter()
    for lang, problem, adapter in tqdm(todo, desc="generate", unit="prompt", disable=not todo):
        texts, prefill, decoded = _sample(loaded, problem, adapter, sampling, batch_size)
        telemetry.prompts += 1
        telemetry.prefill_tokens += prefill
        telemetry.decode_tokens += decoded
        record = Completions(
            name=problem.name,
            language=problem.language,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            prompt=problem.prompt,
            tests=problem.tests,
            stop_tokens=problem.stop_tokens,
            completions=tuple(truncate_at_stop(t, problem.stop_tokens) for t in texts),
            model=loaded.name,
            adapter=adapter.name,
            adapter_hash=adapter.content_hash,
            seed=sampling.seed,
        )
        write_completions(run.completions_path(loaded.name, adapter.name, lang, problem.name), record)
    telemetry.seconds = time.perf_counter() - start
    return telemetry


@torch.inference_mode()
def _sample(loaded: LoadedModel, problem: Problem, adapter: AdapterChoice, sampling, batch_size):
    """Plain `model.generate` sampling (the simple path; the batched engine replaces it)."""
    tokenizer = loaded.tokenizer
    prompt_ids = tokenizer(problem.prompt.strip(), return_tensors="pt")["input_ids"]
    prompt_ids = prompt_ids.to(loaded.device)
    texts: list[str] = []
    decoded = 0
    for start in range(0, sampling.n, batch_size):
        rows = min(batch_size, sampling.n - start)
        torch.manual_seed(sample_seed(sampling.seed, problem.name, adapter.name, start))
        out = loaded.model.generate(
            prompt_ids,
            attention_mask=torch.ones_like(prompt_ids),
            do_sample=sampling.temperature > 0,
            temperature=sampling.temperature if sampling.temperature > 0 else None,
            top_p=sampling.top_p if sampling.temperature > 0 else None,
            max_new_tokens=sampling.max_tokens,
            num_return_sequences=rows,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = out[:, prompt_ids.shape[1]:]
        decoded += int(new.numel())
        texts.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    return texts, int(prompt_ids.numel()), decoded
