"""Batches that mix FLoRA, LoRA, IA3 and base rows: each sample gets the tokens it gets when
its adapter runs alone with the same seed, and generate_run evaluates them in one pass."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from harness.adapters import FLoRAConfig, IA3Config, LoRAConfig, attach, content_hash, init_adapter
from harness.files import read_completions
from harness.generate import AdapterChoice, generate_run
from harness.generate.engine import BASE_ROW, Engine, EngineConfig, Request
from harness.generate.sampling import sample_seed
from harness.models import load_model
from harness.problems import load_problems
from harness.records import SamplingConfig
from harness.runs import RunDir


def trained_like(model, config, name: str, seed: int):
    """A fresh adapter with its tensors moved well away from the identity, as training would."""
    spec = init_adapter(model, config, name=name, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for key, tensor in spec.tensors.items():
        noise = torch.randn(tensor.shape, generator=gen)
        tensors[key] = tensor + (0.5 * noise if "lora_B" not in key else 0.3 * noise)
    return dataclasses.replace(spec, tensors=tensors, content_hash=content_hash(spec.config, tensors))


@pytest.fixture(scope="module")
def loaded():
    return load_model("tiny", device="cpu")


@pytest.fixture(scope="module")
def specs(loaded):
    return [trained_like(loaded.model, FLoRAConfig(r=1), "flora-r1", 1),
            trained_like(loaded.model, LoRAConfig(r=2, lora_alpha=4), "lora-r2", 2),
            trained_like(loaded.model, IA3Config(), "ia3", 3),
            trained_like(loaded.model, LoRAConfig(r=1, lora_alpha=2), "lora-r1", 4)]  # two LoRAs: masked form


@pytest.fixture(scope="module")
def problems(humaneval_dir):
    return load_problems("py", humaneval_dir, limit=2).problems


def requests_for(loaded, problems, adapter: int, name: str, samples: int = 2):
    return [Request((p.name, name), tuple(loaded.tokenizer(p.prompt.strip())["input_ids"]), adapter,
                    tuple((i, sample_seed(0, p.name, name, i)) for i in range(samples)))
            for p in problems]


def generate(loaded, handle, reqs, slots: int, temperature: float):
    engine = Engine(loaded.model, loaded.tokenizer, EngineConfig(temperature, 0.95, 32, slots),
                    set_rows=handle.set_rows)
    return {(r.key, s.index): s.tokens for r, s in engine.generate(reqs)}


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_mixed_batch_gives_each_sample_its_adapters_tokens(loaded, specs, problems, temperature):
    names = ["base", *(s.name for s in specs)]
    per_adapter = [requests_for(loaded, problems, i - 1 if i else BASE_ROW, name)
                   for i, name in enumerate(names)]
    handle = attach(loaded.model, specs)
    try:
        # interleave so every decode step holds rows of several adapters and problems
        mixed_reqs = [r for group in zip(*per_adapter, strict=True) for r in group]
        mixed = generate(loaded, handle, mixed_reqs, slots=7, temperature=temperature)
        alone = {}
        for reqs in per_adapter:
            alone.update(generate(loaded, handle, reqs, slots=4, temperature=temperature))
    finally:
        handle.detach()
    assert len(mixed) == len(names) * 2 * 2
    assert mixed == alone
    # the adapters really change what is generated
    base = {k[0][0]: v for k, v in mixed.items() if k[0][1] == "base" and k[1] == 0}
    for name in names[1:]:
        assert any(mixed[((p.name, name), 0)] != base[p.name] for p in problems), name


def test_generate_run_evaluates_all_adapters_in_one_pass(loaded, specs, humaneval_dir, tmp_path):
    problem_sets = [load_problems("py", humaneval_dir, limit=2)]
    sampling = SamplingConfig(n=3, temperature=0.8, max_tokens=24, seed=1)
    choices = [AdapterChoice()] + [AdapterChoice(s.name, s.content_hash, s) for s in specs]
    run = RunDir.open(tmp_path / "all")
    telemetry = generate_run(loaded, problem_sets, choices, sampling, run, batch_size=6)
    assert telemetry.prompts == 2 * len(choices)
    base_only = RunDir.open(tmp_path / "base")
    generate_run(loaded, problem_sets, [AdapterChoice()], sampling, base_only, batch_size=6)
    for problem in problem_sets[0].problems:
        records = {c.name: read_completions(run.completions_path("tiny", c.name, "py", problem.name))
                   for c in choices}
        assert records["flora-r1"].provenance.adapter_hash == specs[0].content_hash
        assert records["flora-r1"].provenance.method == "flora" and records["flora-r1"].provenance.rank == 1
        assert all(len(r.completions) == 3 for r in records.values())
        alone = read_completions(base_only.completions_path("tiny", "base", "py", problem.name))
        assert records["base"].completions == alone.completions
    # the wrappers are gone afterwards: the model is the base model again
    assert type(loaded.model.transformer.h[0].attn.c_attn) is torch.nn.Linear


def test_an_adapter_given_by_path_is_loaded_and_its_hash_recorded(loaded, specs, humaneval_dir, tmp_path):
    from harness.adapters import save_adapter

    saved = save_adapter(specs[0], tmp_path / "flora-r1")
    problem_sets = [load_problems("py", humaneval_dir, limit=1)]
    sampling = SamplingConfig(n=2, temperature=0.8, max_tokens=8, seed=1)
    run = RunDir.open(tmp_path / "run")
    name = str(tmp_path / "flora-r1")
    generate_run(loaded, problem_sets, [AdapterChoice(), AdapterChoice(name)], sampling, run, batch_size=4)
    record = read_completions(run.completions_path("tiny", name, "py", problem_sets[0].problems[0].name))
    assert record.provenance.adapter_hash == saved.content_hash == specs[0].content_hash
