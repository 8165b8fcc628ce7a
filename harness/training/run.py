"""One `flora-eval train` run, top to bottom: model → corpora → adapters → loop → held-out
evaluation → files. Everything heavy is imported here, not in the CLI module."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from harness.corpus import IGNORE, Corpus, encoder_for, heldout_blocks, open_corpus, train_blocks
from harness.errors import UserError
from harness.models import LoadedModel, load_model
from harness.training import session as adapter_session
from harness.training.checkpoint import CheckpointStore
from harness.training.config import AdapterJob, TrainConfig
from harness.training.loop import TrainState, heldout_loss, train

CHECKPOINTS = ".checkpoints"
LOSS_WINDOW = 20  # final training loss = mean of the last steps


@dataclass(frozen=True)
class HeldOut:
    """Held-out loss of the base model and of the adapter on the same sequences."""

    blocks: int
    tokens: int
    base_loss: float
    loss: float

    @property
    def base_perplexity(self) -> float:
        return math.exp(self.base_loss)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    def as_dict(self) -> dict:
        return {"blocks": self.blocks, "tokens": self.tokens, "base_loss": round(self.base_loss, 6),
                "loss": round(self.loss, 6), "base_perplexity": round(self.base_perplexity, 4),
                "perplexity": round(self.perplexity, 4)}


@dataclass(frozen=True)
class TrainedAdapter:
    job: AdapterJob
    path: Path
    content_hash: str
    first_loss: float
    final_loss: float
    heldout: HeldOut | None
    losses: tuple[float, ...] = ()  # training loss of every step
    metadata: dict = field(default_factory=dict)

    def summary(self) -> str:
        text = (f"{self.job.name}: train loss {self.first_loss:.3f} → {self.final_loss:.3f}")
        if self.heldout is not None:
            h = self.heldout
            text += f"; held-out ppl {h.perplexity:.3f} (base {h.base_perplexity:.3f})"
        return f"{text}; saved {self.path} ({self.content_hash[:19]})"


def train_adapters(config: TrainConfig, plans: list[dict], out: Path, resume: bool = False,
                   device: str | None = None, load_8bit: bool = False, progress: bool = True,
                   on_step=None) -> list[TrainedAdapter]:
    """Train one adapter per plan in one process (mixed batches) and save each under `out`."""
    corpora = {lang: open_corpus(lang, data, config.heldout_fraction)
               for lang, data in {p["lang"]: p["data"] for p in plans}.items()}
    loaded = load_base(config.model, device, config.precision, load_8bit)
    config = replace(config, precision=resolve_precision(config.precision, loaded.device))
    jobs = [AdapterJob(name=p["name"], method=p["method"], rank=p["rank"], lang=p["lang"], lr=p["lr"],
                       data=corpora[p["lang"]].describe()) for p in plans]
    adapters = adapter_session.start(loaded.model, jobs, config, alphas=[p.get("alpha") for p in plans])
    encoders = {lang: encoder_for(corpus, loaded.tokenizer) for lang, corpus in corpora.items()}
    eos = loaded.tokenizer.eos_token_id

    def streams(skip: list[int]):
        return [train_blocks(corpora[job.lang], encoders[job.lang], eos, config.seq_len, config.seed, skip=s)
                for job, s in zip(jobs, skip, strict=True)]

    store = CheckpointStore(out / CHECKPOINTS / run_key(jobs), config.fingerprint(jobs))
    checkpoint = store.latest() if resume else None
    if resume and checkpoint is None:
        print(f"train: no checkpoint in {store.root}; starting from step 0")
    elif not resume:
        store.clear()
    state = train(loaded.model, adapters, jobs, streams, config, store=store, resume=checkpoint,
                  on_step=on_step, progress=progress)
    heldouts = evaluate(loaded, adapters, jobs, corpora, config)
    return [save(loaded, adapters, i, job, config, state, heldouts[i], out) for i, job in enumerate(jobs)]


def load_base(model: str, device: str | None, precision: str, load_8bit: bool) -> LoadedModel:
    """The frozen base model: float32 on CPU; bf16 weights on GPU unless fp32 is asked."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = load_8bit or resolve_precision(precision, torch.device(device)) == "bf16"
    dtype = torch.bfloat16 if bf16 else torch.float32
    loaded = load_model(model, device=device, dtype=dtype, load_8bit=load_8bit)
    loaded.model.requires_grad_(False)
    loaded.model.eval()  # no dropout: training is deterministic and mixing adapters changes nothing
    return loaded


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    if precision == "bf16" and torch.device(device).type != "cuda":
        raise UserError("--precision bf16 needs a GPU; on CPU train in fp32 (the default)")
    return precision


def run_key(jobs: list[AdapterJob]) -> str:
    """The checkpoint folder of a run: its adapters' names."""
    return "+".join(job.name for job in jobs)


def evaluate(loaded: LoadedModel, adapters, jobs: list[AdapterJob], corpora: dict[str, Corpus],
             config: TrainConfig) -> list[HeldOut | None]:
    """Held-out loss of each adapter and of the base model on its language's held-out blocks."""
    if config.eval_blocks <= 0:
        return [None] * len(jobs)
    eos = loaded.tokenizer.eos_token_id
    blocks = {lang: heldout_blocks(corpus, encoder_for(corpus, loaded.tokenizer), eos, config.seq_len,
                                   config.eval_blocks)
              for lang, corpus in corpora.items()}
    for lang, held in blocks.items():
        if not held:
            print(f"train: no held-out {lang} documents (raise --heldout-fraction or add data); "
                  "skipping the held-out evaluation")
    base = {lang: heldout_loss(loaded.model, adapters, held, -1, config=config)
            for lang, held in blocks.items() if held}
    return [
        HeldOut(blocks=len(blocks[job.lang]), tokens=scored_tokens(blocks[job.lang], config.seq_len),
                base_loss=base[job.lang], loss=heldout_loss(loaded.model, adapters, blocks[job.lang], i,
                                                            config=config))
        if blocks[job.lang] else None
        for i, job in enumerate(jobs)
    ]


def scored_tokens(blocks: list, seq_len: int) -> int:
    """The tokens a held-out loss is over: every token of text blocks, the labelled (reply)
    tokens of conversation blocks."""
    return sum(sum(label != IGNORE for label in block[1]) if isinstance(block, tuple) else seq_len
               for block in blocks)


def save(loaded: LoadedModel, adapters, i: int, job: AdapterJob, config: TrainConfig, state: TrainState,
         heldout: HeldOut | None, out: Path) -> TrainedAdapter:
    losses = [step[i] for step in state.losses]
    first = losses[0] if losses else float("nan")
    final = sum(losses[-LOSS_WINDOW:]) / len(losses[-LOSS_WINDOW:]) if losses else float("nan")
    metadata = {
        "method": job.method, "rank": job.rank, "language": job.lang,
        "base_model": loaded.name, "base_model_source": loaded.source, "data_source": job.data,
        "steps": state.step, "batch_size": config.batch_size, "grad_accum": config.grad_accum,
        "seq_len": config.seq_len, "tokens_seen": state.step * config.batch_size * config.seq_len,
        "learning_rate": job.lr, "schedule": config.schedule, "warmup": config.warmup,
        "weight_decay": config.weight_decay, "max_grad_norm": config.max_grad_norm, "seed": config.seed,
        "precision": config.precision,
        "train_loss_first": round(first, 6), "train_loss_final": round(final, 6),
        "train_seconds": round(state.seconds, 1), "heldout": heldout.as_dict() if heldout else None,
        "trained_by": "flora-eval train",
    }
    path = out / job.name
    content_hash = adapter_session.save(adapters, i, path, metadata)
    return TrainedAdapter(job=job, path=path, content_hash=content_hash, first_loss=first, final_loss=final,
                          heldout=heldout, losses=tuple(losses), metadata=metadata)
