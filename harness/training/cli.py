"""`flora-eval train`: arguments → `TrainConfig` + one `AdapterJob` per (language, method, rank).

    flora-eval train --model tiny --method flora --rank 1 --lang pl --data /usr/share/perl --steps 200

Several `--lang`, `--method` or `--rank` train every combination in one process, with mixed
batches (each row routed to its own adapter). Imports stay light: the CLI imports this
module to build its parser.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import UserError
from harness.training.config import SCHEDULES, TrainConfig, adapter_name

DEFAULT_OUT = Path("adapters")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Train FLoRA, LoRA or IA3 adapters on one language's source code (The Stack, "
                          "a directory of source files or a .jsonl with `content`), the paper's way.")
    parser.add_argument("--model", required=True, help="alias (tiny, starcoderbase-1b, ...), hub id or path")
    parser.add_argument("--method", action="append",
                        help="adapter method, e.g. flora, lora (repeatable; default flora)")
    parser.add_argument("--rank", action="append", type=int, help="adapter rank (repeatable; default 1)")
    parser.add_argument("--lang", action="append", required=True, metavar="LANG",
                        help="MultiPL-E language key or name, e.g. rb, pl, rs, ruby (repeatable)")
    parser.add_argument("--data", action="append", metavar="[LANG=]PATH",
                        help="training data: a directory of source files, a .jsonl with a `content` field, "
                             "or hf:DATASET laid out like The Stack; LANG=... for one language "
                             "(default: bigcode/the-stack, streamed; gated)")
    parser.add_argument("--name", help="adapter name (one adapter only; default <lang>-r<rank>-<method>)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="adapters directory (default: adapters/)")
    group = parser.add_argument_group("optimisation (the paper's defaults)")
    group.add_argument("--steps", type=int, default=TrainConfig.steps)
    group.add_argument("--batch-size", type=int, default=TrainConfig.batch_size,
                       help="sequences per adapter per step")
    group.add_argument("--grad-accum", type=int, default=TrainConfig.grad_accum,
                       help="split each batch into this many micro-batches")
    group.add_argument("--lr", action="append", metavar="[METHOD=]LR",
                       help="learning rate, of every adapter or of one method (default: the method's "
                            "own, the paper's; docs/training.md lists them)")
    group.add_argument("--alpha", type=float, help="LoRA alpha (default: the adapters package's, PEFT's 8)")
    group.add_argument("--targets", help="comma-separated module names to adapt (default: PEFT's for the "
                                         "method: c_attn; IA3 also mlp.c_proj)")
    group.add_argument("--seq-len", type=int, default=TrainConfig.seq_len, help="tokens per packed sequence")
    group.add_argument("--schedule", choices=SCHEDULES, default=TrainConfig.schedule)
    group.add_argument("--warmup", type=int, default=TrainConfig.warmup, help="linear warmup steps")
    group.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay)
    group.add_argument("--max-grad-norm", type=float, default=TrainConfig.max_grad_norm,
                       help="per-adapter gradient clipping (0 = off)")
    group.add_argument("--seed", type=int, default=TrainConfig.seed)
    run_group = parser.add_argument_group("checkpoints, evaluation, hardware")
    run_group.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every,
                           help="steps between checkpoints (under <out>/.checkpoints/)")
    run_group.add_argument("--resume", action="store_true",
                           help="continue from the newest checkpoint of the same command")
    run_group.add_argument("--eval-blocks", type=int, default=TrainConfig.eval_blocks,
                           help="held-out sequences for the loss/perplexity vs the base model (0 = skip)")
    run_group.add_argument("--heldout-fraction", type=float, default=TrainConfig.heldout_fraction,
                           help="share of documents kept out of training for evaluation")
    run_group.add_argument("--device", help="torch device (default: cuda when available)")
    run_group.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                           help="auto: bf16 autocast and bf16 base weights on GPU, float32 on CPU")
    run_group.add_argument("--load-8bit", action="store_true",
                           help="8-bit base weights (GPU + bitsandbytes), as in the paper")
    run_group.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 is often "
                                                         "fastest for the tiny model on a busy machine)")
    run_group.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import torch

    from harness.training.run import train_adapters

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be at least 1, not {args.threads}")
        torch.set_num_threads(args.threads)
    plans = plan_adapters(args)
    results = train_adapters(config_from(args), plans, Path(args.out), resume=args.resume,
                             device=args.device, load_8bit=args.load_8bit, progress=not args.no_progress)
    for result in results:
        print(result.summary())
    return 0


def config_from(args: argparse.Namespace) -> TrainConfig:
    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size),
                        ("--grad-accum", args.grad_accum), ("--seq-len", args.seq_len),
                        ("--checkpoint-every", args.checkpoint_every)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, not {value}")
    if args.batch_size % args.grad_accum:
        raise UserError(f"--batch-size {args.batch_size} must be a multiple of --grad-accum "
                        f"{args.grad_accum}")
    if not 0 <= args.heldout_fraction < 1:
        raise UserError(f"--heldout-fraction must be in [0, 1), not {args.heldout_fraction}")
    targets = tuple(t.strip() for t in (args.targets or "").split(",") if t.strip())
    return TrainConfig(
        model=args.model, steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
        seq_len=args.seq_len, schedule=args.schedule, warmup=args.warmup, weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm, seed=args.seed, heldout_fraction=args.heldout_fraction,
        eval_blocks=args.eval_blocks, checkpoint_every=args.checkpoint_every, precision=args.precision,
        targets=targets,
    )


def plan_adapters(args: argparse.Namespace) -> list[dict]:
    """One plan per (language, method, rank): name, method, rank, lang, lr, alpha, data path."""
    from harness.adapters.methods import method as method_of
    from harness.execute.languages import load_language

    methods = _unique([method_of(m).method for m in args.method or ["flora"]])
    ranks = _unique(args.rank or [1])
    langs = _unique([load_language(lang).key for lang in args.lang])
    if any(r < 1 for r in ranks):
        raise UserError(f"--rank must be a positive integer, not {min(ranks)}")
    data = data_by_lang(args.data or [], langs)
    lrs = learning_rates(args.lr or [])
    combos = dict.fromkeys((lang, method, rank if method_of(method).has_rank else None)
                           for lang in langs for method in methods for rank in ranks)
    plans = [
        {"name": adapter_name(lang, rank, method), "method": method, "rank": rank, "lang": lang,
         "lr": lrs[method], "alpha": args.alpha,
         "data": data.get(lang)}
        for lang, method, rank in combos
    ]
    if args.name:
        if len(plans) != 1:
            raise UserError(f"--name names one adapter, but this run trains {len(plans)}; drop --name "
                            "(names default to <lang>-r<rank>-<method>)")
        plans[0]["name"] = args.name
    return plans


def data_by_lang(values: list[str], langs: list[str]) -> dict[str, str]:
    """`--data PATH` (every language) and `--data LANG=PATH` (one; LANG a key or a name) →
    {key: path}."""
    from harness.execute.languages import language_key

    out: dict[str, str] = {}
    for value in values:
        lang, sep, path = value.partition("=")
        if sep and language_key(lang) in langs:
            out[language_key(lang)] = path
        elif sep and not Path(value).exists():
            raise UserError(f"--data {value}: {lang!r} is not one of the --lang values ({', '.join(langs)})")
        else:
            out.update({lang: value for lang in langs if lang not in out})
    return out


def learning_rates(values: list[str]) -> dict[str, float]:
    """`--lr 0.01` (every method) and `--lr flora=0.1` (one) over each method's default."""
    from harness.adapters.methods import default_lrs

    out = default_lrs()
    for value in values:
        method, sep, number = value.rpartition("=")
        if sep and method not in out:
            raise UserError(f"--lr {value}: {method!r} is not a method ({', '.join(out)})")
        try:
            rate = float(number)
        except ValueError:
            raise UserError(f"--lr {value}: not a number; use --lr 1e-4 or --lr lora=1e-4") from None
        out.update({m: rate for m in ([method] if sep else list(out))})
    return out


def _unique(values: list) -> list:
    return list(dict.fromkeys(values))
