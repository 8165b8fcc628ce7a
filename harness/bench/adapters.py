"""`flora-eval bench adapters`: forward tokens/s of one layer (StarCoder's fused `c_attn`) and
of a whole GPTBigCode model, for the base model, FLoRA, bmm-LoRA (the paper's baseline),
gather-LoRA, IA3 and PEFT's own mixed batches (`adapter_names`), over ranks and numbers of
distinct adapters per batch (rows are assigned round-robin). Every figure is a ratio to the
base model timed in the same group, right before and after the methods (machines are noisy).

Phases: `prefill` (seq tokens per row) and `decode` (one token per row, no KV cache: the
Linear cost of a decode step). CPU default: StarCoder's architecture scaled down (see
SHAPES); `--device cuda` uses StarCoderBase-1B shapes unless `--shape` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace

# n_embd, n_layer, n_head, n_inner, vocab; head_dim 128 (multi-query) as in StarCoder
SHAPES = {
    # cpu-small keeps the lm_head at ~16 % of the Linear weights (StarCoderBase-1B: ~10 %)
    "cpu-small": (512, 8, 4, 2048, 8192),
    "starcoderbase-1b": (2048, 24, 16, 8192, 49152),
    "starcoderbase-3b": (2816, 36, 22, 11264, 49152),
    "starcoder-15b": (6144, 40, 48, 24576, 49152),
    "test-tiny": (128, 2, 1, 256, 512),
}
LAYER_REPS = 4  # one layer is ~1 ms: more repetitions for the same wall time, steadier medians
METHODS = ("flora", "bmm-lora", "gather-lora", "ia3", "peft-mixed")


@dataclass(frozen=True)
class BenchConfig:
    device: str = "cpu"
    dtype: str = "float32"
    shape: str = "cpu-small"
    scopes: tuple[str, ...] = ("layer", "model")
    phases: tuple[str, ...] = ("prefill", "decode")
    methods: tuple[str, ...] = METHODS
    ranks: tuple[int, ...] = (1, 8)
    n_adapters: tuple[int, ...] = (1, 64)
    model_ranks: tuple[int, ...] = (1,)  # the model scope is ~50x dearer: a smaller grid
    model_n_adapters: tuple[int, ...] = (1, 64)
    batch: int = 64
    seq: int = 8  # prefill tokens per row
    reps: int = 3
    # torch threads; 1 by default on CPU: on a machine shared with other jobs, OpenMP barriers
    # with 2+ threads make every small op wait for a free core (100x slower elementwise ops
    # measured here at load 10 on 2 cores), which times the scheduler, not the methods
    threads: int | None = 1


QUICK = BenchConfig()
FULL = replace(
    QUICK,
    ranks=(1, 2, 4, 8, 16, 32, 64),
    n_adapters=(1, 4, 16, 64),
    model_ranks=(1, 2, 4, 8, 16, 32, 64),
    model_n_adapters=(1, 64),
    seq=16,
    reps=5,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ints = lambda text: tuple(int(v) for v in text.split(","))  # noqa: E731
    words = lambda text: tuple(v for v in text.split(",") if v)  # noqa: E731
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="default cpu-small; cuda starcoderbase-1b")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default fp32; cuda bf16")
    parser.add_argument("--ranks", type=ints, help="comma-separated ranks for the layer scope")
    parser.add_argument("--adapters", type=ints, help="comma-separated distinct adapters per batch (layer)")
    parser.add_argument("--model-ranks", type=ints, help="ranks for the model scope")
    parser.add_argument("--model-adapters", type=ints, help="distinct adapters per batch for the model scope")
    parser.add_argument("--scopes", type=words, help="layer,model")
    parser.add_argument("--phases", type=words, help="prefill,decode")
    parser.add_argument("--methods", type=words, help=",".join(METHODS))
    parser.add_argument("--batch", type=int, help="rows per batch (>= the largest number of adapters)")
    parser.add_argument("--seq", type=int, help="prefill tokens per row")
    parser.add_argument("--reps", type=int, help="timed repetitions per cell (median reported)")
    parser.add_argument(
        "--threads", type=int, help="torch threads on CPU (default 1: steady on a shared machine)"
    )


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    config = FULL if getattr(args, "full", False) else QUICK
    if args.device.startswith("cuda"):
        config = replace(config, shape="starcoderbase-1b", dtype="bfloat16", batch=64, seq=128, threads=None)
    overrides = {
        "device": args.device, "shape": args.shape, "dtype": args.dtype, "ranks": args.ranks,
        "n_adapters": args.adapters, "model_ranks": args.model_ranks, "model_n_adapters": args.model_adapters,
        "scopes": args.scopes, "phases": args.phases, "methods": args.methods, "batch": args.batch,
        "seq": args.seq, "reps": args.reps, "threads": args.threads,
    }  # fmt: skip
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    from harness.errors import UserError

    config = config_from_args(args)
    counts = (config.n_adapters if "layer" in config.scopes else ()) + (
        config.model_n_adapters if "model" in config.scopes else ()
    )
    if max(counts, default=1) > config.batch:
        raise UserError(f"--batch {config.batch} is smaller than the number of distinct adapters asked for")
    if config.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda but torch sees no GPU; run on CPU (the default)")
    result = measure(config, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
    return 0


# --- measuring ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """What one scope runs: the module adapters attach to, our forward, PEFT's forward."""

    scope: str
    module: object
    forward: object  # () -> output, through whatever wrappers are attached
    peft_forward: object  # (peft_model, adapter_names | None) -> output
    tokens: int


def measure(config: BenchConfig, log=lambda msg: None) -> dict:
    import torch

    device, dtype = torch.device(config.device), getattr(torch, config.dtype)
    if config.threads:
        torch.set_num_threads(config.threads)
    n_embd, n_layer, n_head, n_inner, vocab = SHAPES[config.shape]
    rows: list[dict] = []
    torch.manual_seed(0)
    with torch.inference_mode():
        for phase in config.phases:
            seq = config.seq if phase == "prefill" else 1
            tokens = config.batch * seq
            if "layer" in config.scopes:
                block = Block(n_embd, n_embd + 2 * 128).to(device, dtype)  # c_attn: q + one k, v head
                x = torch.randn(config.batch, seq, n_embd, device=device, dtype=dtype)
                target = Target(
                    "layer",
                    block,
                    lambda b=block, x=x: b.c_attn(x),
                    lambda p, names, x=x: p.base_model.model.c_attn(x, **_names(names)),
                    tokens,
                )
                rows += sweep(config, target, phase, config.ranks, config.n_adapters, log)
            if "model" in config.scopes:
                model = bigcode(n_embd, n_layer, n_head, n_inner, vocab, device, dtype)
                ids = torch.randint(1, vocab, (config.batch, seq), device=device)
                target = Target(
                    "model",
                    model,
                    lambda m=model, ids=ids: m(ids, use_cache=False),
                    lambda p, names, ids=ids: p(input_ids=ids, use_cache=False, **_names(names)),
                    tokens,
                )
                rows += sweep(config, target, phase, config.model_ranks, config.model_n_adapters, log)
                del model
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    dims = dict(zip(["n_embd", "n_layer", "n_head", "n_inner", "vocab"], SHAPES[config.shape], strict=True))
    extra = {"threads": torch.get_num_threads(), "torch": torch.__version__, "dims": dims,
             "load_average": [round(v, 1) for v in os.getloadavg()]}  # fmt: skip
    return {"bench": "adapters", "device": device_name, "config": asdict(config) | extra, "rows": rows}


def _names(names):
    return {} if names is None else {"adapter_names": names}


def sweep(config: BenchConfig, target: Target, phase: str, ranks, counts, log) -> list[dict]:
    """Every (n adapters, rank, method) cell: base and method timed alternately, so both see the
    same machine load; ratio_to_base is the median of the per-pair ratios."""
    out, all_base = [], []
    reps = config.reps * (LAYER_REPS if target.scope == "layer" else 1)
    for n in counts:
        for rank in ranks:
            cells = {}
            for method in config.methods:
                if method == "ia3" and rank != ranks[0]:
                    continue  # IA3 has no rank: once per number of adapters
                log(f"{target.scope} {phase} {method} r={rank} n={n}")
                cell = peft_cell if method == "peft-mixed" else ours_cell
                cells[method] = cell(config, target, method, rank, n, reps)
            for method, (base_t, times) in cells.items():
                all_base += base_t
                median = statistics.median(times)
                row = {"scope": target.scope, "phase": phase, "method": method,
                       "rank": None if method == "ia3" else rank, "n_adapters": n,
                       "tokens_per_s": round(target.tokens / median, 1),
                       "spread": round((max(times) - min(times)) / median, 3),
                       "ratio_to_base": round(statistics.median(map(operator.truediv, base_t, times)), 3),
                       }  # fmt: skip
                out.append(row)
            peft = next((r for r in out[-len(cells) :] if r["method"] == "peft-mixed"), None)
            for row in out[-len(cells) :]:
                if peft is not None and row is not peft:
                    row["ratio_to_peft_mixed"] = round(row["ratio_to_base"] / peft["ratio_to_base"], 3)
    median = statistics.median(all_base)
    out.append({"scope": target.scope, "phase": phase, "method": "base", "rank": None, "n_adapters": 0,
                "tokens_per_s": round(target.tokens / median, 1),
                "spread": round((max(all_base) - min(all_base)) / median, 3),
                "ratio_to_base": 1.0})  # fmt: skip
    return out


def paired(base, method, reps: int, device) -> tuple[list[float], list[float]]:
    """Alternate base and method `reps` times; each is (prepare, forward), only forward is timed
    (preparing = `set_rows`, once per batch, shared by all layers)."""
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def clock(prepare, forward) -> float:
        prepare()
        sync()
        start = time.perf_counter()
        forward()
        sync()
        return time.perf_counter() - start

    clock(*base), clock(*method)  # warm-up: allocations, kernels, PEFT's first-call work
    pairs = [(clock(*base), clock(*method)) for _ in range(reps)]
    return [b for b, _ in pairs], [t for _, t in pairs]


def ours_cell(config: BenchConfig, target: Target, method: str, rank: int, n: int, reps: int):
    """Our wrappers; the base is the same wrapped model with every row on -1 (no adapter)."""
    import torch

    from harness.adapters import FLoRAConfig, IA3Config, LoRAConfig, attach, init_adapter

    make = {
        "flora": lambda: FLoRAConfig(r=rank, target_modules=("c_attn",)),
        "bmm-lora": lambda: LoRAConfig(r=rank, lora_alpha=2 * rank, target_modules=("c_attn",)),
        "gather-lora": lambda: LoRAConfig(r=rank, lora_alpha=2 * rank, target_modules=("c_attn",)),
        "ia3": lambda: IA3Config(target_modules=("c_attn",), feedforward_modules=()),
    }[method]
    specs = [init_adapter(target.module, make(), name=f"a{i}", seed=i) for i in range(n)]
    handle = attach(target.module, specs, lora_impl="bmm" if method == "bmm-lora" else "gather")
    rows, base_rows = torch.arange(config.batch) % n, torch.full((config.batch,), -1)

    try:
        base = (lambda: handle.set_rows(base_rows), target.forward)
        return paired(base, (lambda: handle.set_rows(rows), target.forward), reps, config.device)
    finally:
        handle.detach()


def peft_cell(config: BenchConfig, target: Target, method: str, rank: int, n: int, reps: int):
    """PEFT's LoRA with n adapters and `adapter_names`; the base: its adapter layers disabled."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        from harness.errors import UserError

        raise UserError(
            "the peft-mixed rows need PEFT: pip install peft, or pass --methods without it"
        ) from None
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["c_attn"])
    peft_model = get_peft_model(target.module, lora, adapter_name="a0").eval()  # mixed batches need eval
    for i in range(1, n):
        peft_model.add_adapter(f"a{i}", lora)
    names = [f"a{i % n}" for i in range(config.batch)]

    lora_model = peft_model.base_model  # switching adapters off is the untimed "prepare" step
    base = (lora_model.disable_adapter_layers, lambda: target.peft_forward(peft_model, None))
    method = (lora_model.enable_adapter_layers, lambda: target.peft_forward(peft_model, names))
    try:
        return paired(base, method, reps, config.device)
    finally:
        peft_model.unload().eval()


def Block(in_features: int, out_features: int):  # noqa: N802 (a tiny nn.Module factory)
    """A module holding one `c_attn` Linear, so adapters target it by name as in StarCoder."""
    from torch import nn

    block = nn.Module()
    block.c_attn = nn.Linear(in_features, out_features)
    return block


def bigcode(n_embd: int, n_layer: int, n_head: int, n_inner: int, vocab: int, device, dtype):
    """A random-weight GPTBigCode (StarCoder's architecture, multi-query attention), built
    directly on the device in its dtype (15B in fp32 on the host would not fit)."""
    import torch
    from transformers import AutoModelForCausalLM, GPTBigCodeConfig

    config = GPTBigCodeConfig(vocab_size=vocab, n_positions=2048, n_embd=n_embd, n_layer=n_layer,
                              n_head=n_head, n_inner=n_inner, multi_query=True, bos_token_id=0,
                              eos_token_id=0, activation_function="gelu_pytorch_tanh", attn_pdrop=0.0,
                              embd_pdrop=0.0, resid_pdrop=0.0)  # fmt: skip
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


# --- output ---------------------------------------------------------------------------------
def format_table(result: dict) -> str:
    """Per (scope, phase, adapters per batch): methods down, ranks across, ratio to the base
    model; then the two comparisons the paper and issue ask about."""
    config, rows = result["config"], result["rows"]
    setup = f"{config['shape']}, batch {config['batch']}, prefill {config['seq']} tokens/row"
    lines = [f"bench adapters on {result['device']} ({setup}, {config['threads']} thread(s)): "
             "tokens/s, ratio to the base model"]  # fmt: skip
    for scope, phase in dict.fromkeys((r["scope"], r["phase"]) for r in rows):
        mine = [r for r in rows if r["scope"] == scope and r["phase"] == phase]
        base = next(r for r in mine if r["method"] == "base")
        lines += [
            "",
            f"### {scope} / {phase}: base {base['tokens_per_s']:.0f} tokens/s (spread {base['spread']})",
        ]
        for n in sorted({r["n_adapters"] for r in mine if r["method"] != "base"}):
            cell = {(r["method"], r["rank"]): r for r in mine if r["n_adapters"] == n}
            ranks = sorted({rank for _, rank in cell if rank is not None})
            lines += ["", f"| n={n} adapters | " + " | ".join(f"r={r}" for r in ranks) + " |",
                      "|---|" + "---|" * len(ranks)]  # fmt: skip
            for method in [m for m in METHODS if any(k[0] == m for k in cell)]:
                values = [cell.get((method, None if method == "ia3" else r)) for r in ranks]
                shown = [f"{v['ratio_to_base']:.2f}" if v and (method != "ia3" or i == 0) else ""
                         for i, v in enumerate(values)]  # fmt: skip
                lines.append(f"| {method} | " + " | ".join(shown) + " |")
            for name, top, bottom in (("flora ÷ bmm-lora", "flora", "bmm-lora"),
                                      ("gather-lora ÷ peft-mixed", "gather-lora", "peft-mixed")):  # fmt: skip
                pairs = [(cell.get((top, r)), cell.get((bottom, r))) for r in ranks]
                if all(a and b for a, b in pairs):
                    ratios = [a["ratio_to_base"] / b["ratio_to_base"] for a, b in pairs]
                    lines.append(f"| *{name}* | " + " | ".join(f"*{v:.2f}*" for v in ratios) + " |")
    return "\n".join(lines)
