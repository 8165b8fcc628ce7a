"""`flora-eval bench generate`: generation tokens/s of our engine vs `model.generate` vs PEFT.

For each model architecture (random weights; throughput does not depend on their values)
and one real MultiPL-E prompt, all in the same run:
- `ours`, base: the engine (harness.generate.engine) sampling `samples` completions;
- `ours`, flora / lora / ia3 with 1, 4, 16 adapters: the same samples spread evenly over
  that many adapters of one method, so every batch mixes them (harness.adapters routing);
- `hf-generate`, base: `model.generate(num_return_sequences=samples)`;
- `peft-mixed`, lora with 1, 4, 16 adapters: PEFT's `generate(adapter_names=[...])`, one name
  per row (PEFT has no mixed-batch path for IA3 and no FLoRA).
Every row decodes exactly `new_tokens` tokens (end of text ignored, no stop tokens), at the
paper's sampling settings. Figures are medians over repetitions, taken in turn.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ARCHS = {  # GPTBigCode (multi-query) sizes; "tiny" is harness.models' own model
    "tiny": None,
    "small": {"n_embd": 512, "n_layer": 8, "n_head": 4, "n_inner": 2048, "vocab_size": 49152},
    "starcoderbase-1b": {"n_embd": 2048, "n_layer": 24, "n_head": 16, "n_inner": 8192,
                         "vocab_size": 49152},
}
METHODS = ("flora", "lora", "ia3")
TEMPERATURE, TOP_P = 0.1, 0.95  # the paper's samples (FLoRA: T=0.1) with MultiPL-E's top_p


@dataclass(frozen=True)
class Case:
    arch: str
    samples: int
    new_tokens: int
    repeats: int
    adapters: tuple[int, ...] = (1, 4, 16)


QUICK = (Case("tiny", 100, 64, 5), Case("small", 16, 24, 1, (16,)))
FULL = (Case("tiny", 100, 128, 7), Case("small", 100, 64, 2))
GPU = (Case("starcoderbase-1b", 100, 128, 3),)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", action="append", choices=sorted(ARCHS),
                        help="only these architectures (repeatable; default: tiny and small)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; 1 is steadier on a busy machine)")
    parser.add_argument("--dataset", default=None,
                        help="MultiPL-E data for the prompt (default: ../shared/multipl-e/humaneval, "
                             "else the hub)")


def run(args: argparse.Namespace) -> int:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = FULL if args.full else QUICK
    if device.startswith("cuda") and not args.arch:
        cases = cases + GPU
    if args.arch:
        by_arch = {c.arch: c for c in FULL + GPU} if args.full else {c.arch: c for c in QUICK + GPU}
        cases = tuple(by_arch.get(a, Case(a, 16, 24, 1)) for a in args.arch)
    problem = real_prompt(args.dataset)
    rows = []
    for case in cases:
        log(f"{case.arch}: {case.samples} samples × {case.new_tokens} tokens, {case.repeats} repeats")
        rows.extend(bench_case(case, problem, device))
    config = {"problem": problem.name, "temperature": TEMPERATURE, "top_p": TOP_P,
              "cases": [vars(c) for c in cases], "threads": torch.get_num_threads()}
    result = {"bench": "generate", "device": device_name(device), "config": config, "rows": rows}
    if args.json:
        print(json.dumps(result))
    else:
        print(table(result))
    return 0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"


def real_prompt(dataset: str | None):
    from harness.problems import load_problems

    default = Path(__file__).resolve().parents[2].parent / "shared" / "multipl-e" / "humaneval"
    source = dataset or (default if default.is_dir() else None)
    return load_problems("py", source, limit=1).problems[0]


# -- models and adapters ---------------------------------------------------------------------
def build(arch: str, device: str):
    import torch
    from transformers import AutoModelForCausalLM

    from harness.models import build_tiny, byte_tokenizer, tiny_config

    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    if ARCHS[arch] is None:
        model, tokenizer = build_tiny()
    else:
        tokenizer = byte_tokenizer()
        config = tiny_config(len(tokenizer))
        for key, value in ARCHS[arch].items():
            setattr(config, key, value)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config)
    return model.to(device=device, dtype=dtype).eval(), tokenizer


def our_adapters(model, method: str, count: int):
    """`count` adapters of one method (rank 1 where a rank applies), moved off the identity."""
    import dataclasses

    import torch

    from harness.adapters import FLoRAConfig, IA3Config, LoRAConfig, content_hash, init_adapter

    config = {"flora": FLoRAConfig(r=1), "lora": LoRAConfig(r=1, lora_alpha=1), "ia3": IA3Config()}[method]
    specs = []
    for i in range(count):
        spec = init_adapter(model, config, name=f"{method}-{i}", seed=i)
        gen = torch.Generator().manual_seed(1000 + i)
        tensors = {k: t + 0.1 * torch.randn(t.shape, generator=gen) for k, t in spec.tensors.items()}
        specs.append(dataclasses.replace(spec, tensors=tensors, content_hash=content_hash(config, tensors)))
    return specs


def peft_model(model, count: int):
    """A PEFT copy of `model` with `count` rank-1 LoRA adapters on c_attn (B not zero)."""
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=1, lora_alpha=1, target_modules=["c_attn"], lora_dropout=0.0)
    peft = get_peft_model(copy.deepcopy(model), config, adapter_name="a0")
    for i in range(1, count):
        peft.add_adapter(f"a{i}", config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.copy_(0.1 * torch.randn(param.shape, generator=gen))
    return peft.eval()


# -- the three engines -------------------------------------------------------------------------
def time_ours(model, tokenizer, prompt_ids, samples: int, new_tokens: int, specs) -> tuple[float, float]:
    """Seconds for the whole generation, and for its decode steps alone (engine telemetry)."""
    from harness.adapters import attach
    from harness.generate.engine import BASE_ROW, Engine, EngineConfig, Request
    from harness.generate.sampling import sample_seed

    handle = attach(model, specs) if specs else None
    groups = max(len(specs), 1)
    requests = [
        Request(("bench", g), tuple(prompt_ids), g if specs else BASE_ROW,
                tuple((i, sample_seed(0, "bench", str(g), i)) for i in range(g, samples, groups)))
        for g in range(groups)
    ]
    config = EngineConfig(TEMPERATURE, TOP_P, new_tokens, slots=samples, ignore_eos=True)
    engine = Engine(model, tokenizer, config, set_rows=handle.set_rows if handle else None)
    try:
        start = time.perf_counter()
        done = sum(len(sample.tokens) for _, sample in engine.generate(requests))
        seconds = time.perf_counter() - start
    finally:
        if handle:
            handle.detach()
    assert done == samples * new_tokens, (done, samples * new_tokens)
    return seconds, engine.telemetry.stages["decode"]


def time_hf(model, prompt_ids, samples: int, new_tokens: int, adapter_names=None) -> tuple[float, None]:
    import torch

    ids = torch.tensor([prompt_ids], device=next(model.parameters()).device)
    kwargs = {"num_return_sequences": samples}
    if adapter_names is not None:
        ids, kwargs = ids.expand(samples, -1), {"adapter_names": adapter_names}
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                             temperature=TEMPERATURE, top_p=TOP_P, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, pad_token_id=0, **kwargs)
    seconds = time.perf_counter() - start
    assert out.shape == (samples, len(prompt_ids) + new_tokens), out.shape
    return seconds, None


def bench_case(case: Case, problem, device: str) -> list[dict]:
    model, tokenizer = build(case.arch, device)
    prompt_ids = tokenizer(problem.prompt.strip())["input_ids"]
    samples, new = case.samples, case.new_tokens
    runs: dict[tuple, Callable] = {("ours", "base", 0): lambda: time_ours(model, tokenizer, prompt_ids,
                                                                         samples, new, [])}
    for method in METHODS:
        for count in case.adapters:
            specs = our_adapters(model, method, count)
            runs[("ours", method, count)] = (
                lambda specs=specs: time_ours(model, tokenizer, prompt_ids, samples, new, specs))
    runs[("hf-generate", "base", 0)] = lambda: time_hf(model, prompt_ids, samples, new)
    for count in case.adapters:
        peft = peft_model(model, count)
        names = [f"a{i % count}" for i in range(samples)]
        runs[("peft-mixed", "lora", count)] = (
            lambda peft=peft, names=names: time_hf(peft, prompt_ids, samples, new, names))
    times: dict[tuple, list[float]] = {key: [] for key in runs}
    decode: dict[tuple, list[float]] = {key: [] for key in runs if key[0] == "ours"}
    runs[("ours", "base", 0)]()  # warm-up
    for repeat in range(case.repeats):
        for key, fn in runs.items():  # in turn, so machine noise spreads over all of them
            seconds, decode_seconds = fn()
            times[key].append(seconds)
            if key in decode:
                decode[key].append(decode_seconds)
            log(f"  {case.arch} #{repeat} {key}: {times[key][-1]:.2f}s")
    return rows_of(case, len(prompt_ids), times, decode)


def rows_of(case: Case, prompt_tokens: int, times: dict[tuple, list[float]],
            decode: dict[tuple, list[float]]) -> list[dict]:
    """Rates from medians; `decode_*` (ours only): the decode steps alone, without prefills,
    i.e. the throughput of a batch that mixes the adapters."""
    tokens = case.samples * case.new_tokens
    rate = {key: tokens / statistics.median(ts) for key, ts in times.items()}
    decode_rate = {key: case.samples * (case.new_tokens - 1) / statistics.median(ts)
                   for key, ts in decode.items()}
    hf = rate[("hf-generate", "base", 0)]
    rows = []
    for (engine, method, count), ts in times.items():
        base = rate[("ours" if engine == "ours" else "hf-generate", "base", 0)]
        rows.append({
            "arch": case.arch, "engine": engine, "method": method,
            "rank": None if method in ("base", "ia3") else 1, "n_adapters": count,
            "samples": case.samples, "new_tokens": case.new_tokens, "prompt_tokens": prompt_tokens,
            "tokens_per_s": round(rate[(engine, method, count)], 1),
            "spread": round((max(ts) - min(ts)) / statistics.median(ts), 3),
            "ratio_to_base": round(rate[(engine, method, count)] / base, 3),
            "ratio_to_hf_generate": round(rate[(engine, method, count)] / hf, 3),
        })
    for row in rows:
        key = (row["engine"], row["method"], row["n_adapters"])
        if key in decode_rate:
            row["decode_tokens_per_s"] = round(decode_rate[key], 1)
            row["decode_ratio_to_base"] = round(decode_rate[key] / decode_rate[("ours", "base", 0)], 3)
    for row in rows:  # PEFT's mixed batch against ours with the same adapters
        if row["engine"] == "ours" and row["method"] == "lora":
            peft = rate.get(("peft-mixed", "lora", row["n_adapters"]))
            row["ratio_to_peft_mixed"] = round(row["tokens_per_s"] / peft, 3) if peft else None
    return rows


def table(result: dict) -> str:
    head = ["arch", "engine", "method", "n_adapters", "samples", "new_tokens", "tokens_per_s", "spread",
            "ratio_to_base", "ratio_to_hf_generate", "ratio_to_peft_mixed", "decode_tokens_per_s",
            "decode_ratio_to_base"]
    lines = [f"bench generate on {result['device']} (prompt {result['config']['problem']}, "
             f"T={TEMPERATURE}, top_p={TOP_P})",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["rows"]:
        cells = ["" if row.get(h) is None else str(row.get(h)) for h in head]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
