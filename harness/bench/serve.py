"""`flora-eval bench serve`: the paper's serving experiment (section 4.1, Figure 2).

A workload of requests (ShareGPT-like lengths, `workload.py`), every request with its own
adapter, served by our generation engine with continuous batching and a batched-token budget:
- throughput: every request there at t=0; output tokens/s versus rank for base, FLoRA,
  bmm-LoRA (the paper's baseline), gather-LoRA and IA3 (no rank: one row);
- latency: Poisson arrivals at `--rate` requests/s; seconds per output token, averaged per
  request as vLLM's serving benchmark does: (finish - arrival) / output tokens.
`ratio_to_bmm_lora` (and `ratio_to_base`) says how many times BETTER than bmm-LoRA at the same
rank a row is: tokens/s ÷ bmm-LoRA's for throughput rows, bmm-LoRA's s/token ÷ the row's for
latency rows (> 1 = faster). Rank-less rows (base, IA3) have no same-rank bmm-LoRA: null.

Requests are served by `serve_loop.serve_requests`, a thin driver over the generation
engine's prefill and decode step (see there why not `Engine.generate`). Like vLLM's benchmark,
outputs ignore end-of-text and run to their given length; decoding is greedy (the same cost
for every method). Models are StarCoder architectures with random weights (`from_config`,
fp16 on CUDA) or scaled-down ones on CPU; weight values do not change the speed. Adapters
come from the adapters package (`init_adapter`, then perturbed: none is the identity).
"""


from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from harness.bench import serve_http
from harness.bench import workload as wl
from harness.bench.serve_loop import figures, serve_requests
from harness.bench.serve_paper import ALL_RANKS
from harness.bench.serve_report import has_rank, print_table, write_outputs

QUICK_RANKS = (1, 8, 64)
METHOD_NAMES = ("base", "flora", "bmm-lora", "gather-lora", "ia3")
STARCODER = {"n_positions": 8192, "vocab_size": 49152, "multi_query": True}
# name -> GPTBigCodeConfig fields (../shared/reference/adapters.md; cpu-* are scaled down with
# StarCoder's shape: head_dim 64, n_inner 4 n_embd, a vocabulary kept small so that, as on the
# large models, the adapted layers and not the output projection carry the cost)
MODELS: dict[str, dict] = {
    "15b": {**STARCODER, "n_embd": 6144, "n_layer": 40, "n_head": 48, "n_inner": 24576,
            "activation_function": "gelu"},
    "3b": {**STARCODER, "n_embd": 2816, "n_layer": 36, "n_head": 22, "n_inner": 11264,
           "activation_function": "gelu_pytorch_tanh"},
    "1b": {**STARCODER, "n_embd": 2048, "n_layer": 24, "n_head": 16, "n_inner": 8192,
           "activation_function": "gelu_pytorch_tanh"},
    "cpu-tiny": {"n_positions": 512, "vocab_size": 512, "multi_query": True, "n_embd": 64, "n_layer": 2,
                 "n_head": 4, "n_inner": 256, "activation_function": "gelu_pytorch_tanh"},  # tests
    "cpu-small": {"n_positions": 2048, "vocab_size": 8192, "multi_query": True, "n_embd": 256,
                  "n_layer": 4, "n_head": 4, "n_inner": 1024, "activation_function": "gelu_pytorch_tanh"},
    "cpu-medium": {"n_positions": 2048, "vocab_size": 8192, "multi_query": True, "n_embd": 512,
                   "n_layer": 8, "n_head": 8, "n_inner": 2048, "activation_function": "gelu_pytorch_tanh"},
}
# per device: (quick, full) defaults. scale shrinks every workload length; max_seqs caps the
# rows decoded together (vLLM's max_num_seqs is 256; on CPU fewer rows with more requests
# keep the batch full for most of the run, as 1,000 requests over 256 rows do on a GPU).
# CPU: one torch thread and the process clock, because a second intra-op thread on a shared
# 2-core machine made the quick run 5-10x slower and its timings meaningless (measured).
CLOCK = {"cpu": "process", "cuda": "wall"}
THREADS = {"cpu": 1, "cuda": None}
DEFAULTS = {
    "cpu": ({"models": ["cpu-small"], "ranks": QUICK_RANKS, "requests": 32, "scale": 1 / 16, "max_seqs": 8,
             "repeats": 1},
            {"models": ["cpu-small", "cpu-medium"], "ranks": ALL_RANKS, "requests": 64, "scale": 1 / 8,
             "max_seqs": 16, "repeats": 3}),
    "cuda": ({"models": ["1b"], "ranks": QUICK_RANKS, "requests": 200, "scale": 1.0, "max_seqs": 256,
              "repeats": 1},
             {"models": ["1b", "3b", "15b"], "ranks": ALL_RANKS, "requests": 1000, "scale": 1.0,
              "max_seqs": 256, "repeats": 1}),
}
MAX_ADAPTERS = 64  # distinct adapters per run by default (request i uses adapter i mod N)
PERTURB = 0.02  # spread added to every adapter tensor so none is the identity
WARMUP_REQUESTS = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--model", action="append", choices=list(MODELS),
        help="architecture, repeatable (cpu: cpu-small, --full adds cpu-medium; cuda: 1b, --full 1b 3b 15b)")
    add("--device", default="cpu", choices=["cpu", "cuda"], help="where to serve (cpu)")
    add("--rate", type=float, default=8.0, help="requests/s of the latency runs (8)")
    add("--requests", type=int, help="requests per run (cpu 32, cuda 200; --full: 64, 1000)")
    add("--workload", type=Path, help="a .jsonl of prompt_len/output_len[/arrival_s] or a ShareGPT json")
    add("--tokenizer", help="tokenizer directory to count a ShareGPT json's tokens")
    add("--scale", type=float, help="multiply synthetic lengths (cpu 1/16, --full 1/8; cuda 1)")
    add("--max-batched-tokens", type=int, default=8192,
        help="prompt tokens prefilled per step and rows decoded together, at most (8192)")
    add("--max-seqs", type=int, help="rows decoded together, at most (cpu 8, --full 16; cuda 256)")
    add("--methods", help=f"comma list from {','.join(METHOD_NAMES)} (all)")
    add("--ranks", help="comma list of ranks (1,8,64; --full 1,2,4,8,16,32,64)")
    add("--adapters", type=int, help=f"distinct adapters (min(requests, {MAX_ADAPTERS})); request i: i mod N")
    add("--repeats", type=int, help="repetitions, median reported (1; --full on cpu 3)")
    add("--no-latency", action="store_true", help="skip the Poisson-arrival latency runs")
    add("--clock", choices=["wall", "process"],
        help="wall seconds (cuda default) or this process's CPU seconds, idle waits skipped (cpu default)")
    add("--threads", type=int, help="torch CPU threads (cpu: 1; cuda: torch's default)")
    add("--seed", type=int, default=0, help="workload, prompt and adapter seed (0)")
    add("--out", type=Path, help="write serve.json, serve.csv, serve.svg and serve.png here")
    serve_http.add_arguments(add)


# ---------------------------------------------------------------------------------------
# Model and adapters
# ---------------------------------------------------------------------------------------
def build_model(name: str, device: str):
    """A random-weight model of architecture `name` (fp16 on CUDA, fp32 on CPU), eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, GPTBigCodeConfig

    config = GPTBigCodeConfig(**MODELS[name], attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0,
                              bos_token_id=0, eos_token_id=0)
    dtype = torch.float16 if device == "cuda" else torch.float32
    with torch.device(device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def adapter_config(method: str, rank: int | None):
    """(adapter config, LoRA implementation) for a method name; None for the base model."""
    from harness.adapters import FLoRAConfig, IA3Config, LoRAConfig

    table = {
        "base": lambda: None,
        "flora": lambda: (FLoRAConfig(r=rank), "gather"),
        "bmm-lora": lambda: (LoRAConfig(r=rank, lora_alpha=rank), "bmm"),
        "gather-lora": lambda: (LoRAConfig(r=rank, lora_alpha=rank), "gather"),
        "ia3": lambda: (IA3Config(), "gather"),
    }
    return table[method]()


def make_adapters(model, config, count: int, seed: int) -> list:
    """`count` adapters of `config` from the adapters package's init, each tensor perturbed
    so that no adapter is the identity (LoRA's B would otherwise start at zero)."""
    import torch

    from harness.adapters import content_hash, init_adapter

    specs = []
    for i in range(count):
        spec = init_adapter(model, config, name=f"serve-{i}", seed=seed + i)
        gen = torch.Generator().manual_seed(seed + 10_000 + i)
        tensors = {k: t + PERTURB * torch.randn(t.shape, generator=gen) for k, t in spec.tensors.items()}
        specs.append(replace(spec, tensors=tensors, content_hash=content_hash(config, tensors)))
    return specs


# ---------------------------------------------------------------------------------------
# The grid: models × (method, rank) × (throughput, latency) × repeats
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """Everything one invocation measures (recorded as the JSON's config)."""

    device: str
    models: tuple[str, ...]
    methods: tuple[str, ...]
    ranks: tuple[int, ...]
    requests: tuple[wl.ServeRequest, ...]
    rate: float | None  # None: no latency runs
    adapters: int
    max_batched_tokens: int
    max_rows: int
    repeats: int
    seed: int
    clock: str = "wall"

    def configs(self) -> list[tuple[str, int | None]]:
        """(method, rank) cells: rank-less methods once, the others at every rank."""
        return [(m, r) for m in self.methods for r in (self.ranks if has_rank(m) else (None,))]

    def rates(self) -> list[float | None]:
        return [None] if self.rate is None else [None, self.rate]


def measure_model(name: str, plan: Plan, log=print) -> list[dict]:
    """Raw measurements of one model: one dict per (method, rank, rate, repeat). Cells are
    interleaved within each repeat so that machine noise spreads over every method."""
    from harness.adapters import attach
    from harness.generate.budget import auto_slots
    from harness.generate.engine import Engine, EngineConfig
    from harness.models import byte_tokenizer

    model = build_model(name, plan.device)
    requests = list(plan.requests)
    longest = max(r.prompt_len + r.output_len for r in requests)
    if longest > model.config.n_positions:
        from harness.errors import UserError

        raise UserError(f"a request needs {longest} positions but {name} has {model.config.n_positions}; "
                        "use shorter requests or --scale")
    prompts = wl.prompt_ids(requests, model.config.vocab_size, plan.seed)
    adapter_of = {r.index: r.index % plan.adapters for r in requests}
    arrivals = {rate: wl.with_arrivals(requests, rate, plan.seed) for rate in plan.rates()}
    max_rows = min(plan.max_rows, auto_slots(model, longest) if plan.device == "cuda" else plan.max_rows)
    config = EngineConfig(temperature=0.0, top_p=1.0, max_new_tokens=max(r.output_len for r in requests),
                          slots=max_rows, max_positions=model.config.n_positions, ignore_eos=True)
    tokenizer = byte_tokenizer()  # only its end-of-text id is read: outputs ignore it, as in vLLM
    specs: dict = {}  # adapter config -> its adapters
    raw = []
    warm = Engine(model, tokenizer, config)
    serve_requests(warm, requests[:WARMUP_REQUESTS], prompts, {i: -1 for i in adapter_of},
                   plan.max_batched_tokens, max_rows, plan.clock)
    for repeat in range(plan.repeats):
        for method, rank in plan.configs():
            chosen = adapter_config(method, rank)
            handle = None
            if chosen is not None:
                adapters = specs.get(chosen[0]) or make_adapters(model, chosen[0], plan.adapters, plan.seed)
                if plan.repeats > 1:  # kept for the next repeat (bmm- and gather-LoRA share them)
                    specs[chosen[0]] = adapters
                handle = attach(model, adapters, lora_impl=chosen[1])
            rows_of = adapter_of if handle else {i: -1 for i in adapter_of}
            engine = Engine(model, tokenizer, config, set_rows=handle.set_rows if handle else None)
            try:
                for rate in plan.rates():
                    served = serve_requests(engine, arrivals[rate], prompts, rows_of,
                                            plan.max_batched_tokens, max_rows, plan.clock)
                    found = figures(served)
                    raw.append({"model": name, "method": method, "rank": rank, "rate": rate,
                                "repeat": repeat, **found})
                    log(f"  {name} {method:11} r={rank!s:4} rate={rate!s:5} "
                        f"{found['tokens_per_s']:9.1f} tok/s {found['s_per_output_token']:.4f} s/tok "
                        f"({found['seconds']:.1f} s, {found['mean_rows']:.1f} rows/step)")
            finally:
                if handle is not None:
                    handle.detach()
    del model
    return raw


def summarise(raw: list[dict]) -> list[dict]:
    """One row per (model, method, rank, rate): medians, spread, ratios to bmm-LoRA and base."""
    cells: dict[tuple, list[dict]] = {}
    for r in raw:
        cells.setdefault((r["model"], r["method"], r["rank"], r["rate"]), []).append(r)
    rows = []
    for (model, method, rank, rate), runs in cells.items():
        tps = [r["tokens_per_s"] for r in runs]
        spt = [r["s_per_output_token"] for r in runs]
        rows.append({"model": model, "method": method, "rank": rank, "rate": rate, "repeats": len(runs),
                     "output_tokens": runs[0]["output_tokens"],
                     "tokens_per_s": round(statistics.median(tps), 2),
                     "tokens_per_s_spread": [round(min(tps), 2), round(max(tps), 2)],
                     "s_per_output_token": round(statistics.median(spt), 5),
                     "s_per_output_token_spread": [round(min(spt), 5), round(max(spt), 5)],
                     "mean_rows": round(statistics.median(r["mean_rows"] for r in runs), 1)})
    index = {(r["model"], r["method"], r["rank"], r["rate"]): r for r in rows}
    for row in rows:
        bmm = index.get((row["model"], "bmm-lora", row["rank"], row["rate"])) if row["rank"] else None
        base = index.get((row["model"], "base", None, row["rate"]))
        row["ratio_to_bmm_lora"] = better(row, bmm)
        row["ratio_to_base"] = better(row, base)
    return rows


def better(row: dict, reference: dict | None) -> float | None:
    """How many times better than `reference`: tokens/s ratio without a rate, inverse s/token with one."""
    if reference is None:
        return None
    if row["rate"] is None:
        return round(row["tokens_per_s"] / reference["tokens_per_s"], 3)
    return round(reference["s_per_output_token"] / row["s_per_output_token"], 3)


# ---------------------------------------------------------------------------------------
# Entry point and output
# ---------------------------------------------------------------------------------------
def make_plan(args: argparse.Namespace) -> Plan:
    from harness.errors import UserError

    defaults = DEFAULTS[args.device][1 if args.full else 0]
    methods = tuple(_split(args.methods, str) or METHOD_NAMES)
    ranks = tuple(_split(args.ranks, int) or defaults["ranks"])
    unknown = sorted(set(methods) - set(METHOD_NAMES))
    if unknown:
        raise UserError(f"unknown method(s) {', '.join(unknown)}: choose from {', '.join(METHOD_NAMES)}")
    if any(r < 1 for r in ranks):
        raise UserError(f"ranks must be positive integers, not {args.ranks}")
    count = args.requests or defaults["requests"]
    if args.workload:
        requests = wl.read_workload(args.workload, count, args.tokenizer)
    else:
        requests = wl.synthetic_workload(count, args.seed, args.scale or defaults["scale"])
    too_long = [r for r in requests if r.prompt_len > args.max_batched_tokens]
    if too_long:
        raise UserError(f"request {too_long[0].index} has a {too_long[0].prompt_len}-token prompt, more than "
                        f"--max-batched-tokens {args.max_batched_tokens}; raise the budget")
    if args.rate is not None and args.rate <= 0:
        raise UserError(f"--rate must be positive requests/s, not {args.rate}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda but torch sees no CUDA device: run on a GPU or use --device cpu")
        if (args.clock or CLOCK[args.device]) == "process":
            raise UserError("--clock process counts CPU seconds only; use the wall clock with --device cuda")
    max_seqs = args.max_seqs or defaults["max_seqs"]
    return Plan(device=args.device, models=tuple(args.model or defaults["models"]), methods=methods,
                ranks=ranks, requests=tuple(requests), rate=None if args.no_latency else args.rate,
                adapters=args.adapters or min(len(requests), MAX_ADAPTERS),
                max_batched_tokens=args.max_batched_tokens, max_rows=min(max_seqs, args.max_batched_tokens),
                repeats=args.repeats or defaults["repeats"], seed=args.seed,
                clock=args.clock or CLOCK[args.device])


def _split(text: str | None, kind) -> list:
    return [kind(x.strip()) for x in text.split(",") if x.strip()] if text else []


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(args: argparse.Namespace) -> int:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(args.threads or THREADS[args.device] or before)
    try:
        return serve_http.run_http(args) if getattr(args, "http", False) else _run(args)
    finally:
        torch.set_num_threads(before)  # the caller's setting is back (tests share one process)


def _run(args: argparse.Namespace) -> int:
    import torch

    plan = make_plan(args)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    scale = args.scale or DEFAULTS[plan.device][bool(args.full)]["scale"]
    config = {"models": list(plan.models), "methods": list(plan.methods), "ranks": list(plan.ranks),
              "rate": plan.rate, "adapters": plan.adapters, "max_batched_tokens": plan.max_batched_tokens,
              "max_seqs": plan.max_rows, "repeats": plan.repeats, "seed": plan.seed, "full": bool(args.full),
              "clock": plan.clock, "threads": torch.get_num_threads(),
              "workload": str(args.workload) if args.workload else "synthetic",
              "scale": None if args.workload else scale, **wl.summary(list(plan.requests)),
              "torch": torch.__version__, "decoding": "greedy, end-of-text ignored"}
    log(f"bench serve: {config['requests']} requests ({config['prompt_tokens']} prompt, "
        f"{config['output_tokens']} output tokens), {plan.adapters} adapters, on {device_name(plan.device)}")
    raw = []
    for name in plan.models:
        raw.extend(measure_model(name, plan, log=lambda *a: print(*a, file=sys.stderr)))
    result = {"bench": "serve", "device": device_name(plan.device), "config": config, "rows": summarise(raw)}
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result["rows"])
    if args.out:
        write_outputs(result, args.out, log)
    return 0
