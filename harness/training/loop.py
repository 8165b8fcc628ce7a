"""The training loop: N adapters, one mixed batch per micro-step, each row routed to its adapter.

Why mixing changes nothing: adapter i's parameters only touch rows routed to i, the loss is
the SUM over adapters of each adapter's own mean loss, the base model runs without dropout,
AdamW is element-wise and gradients are clipped per adapter. So every adapter receives the
gradient it would receive alone, and training N adapters together gives (up to float
rounding of the bigger batch) the weights of training each one by one on the same data.

The loop sees adapters only through `TrainableAdapters` (routing, per-adapter parameters,
state for checkpoints); `harness.training.session` implements it with `harness.adapters`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Protocol

import torch
from torch.nn import functional as F

from harness.corpus import IGNORE
from harness.training.checkpoint import Checkpoint, CheckpointStore, TrainState
from harness.training.config import AdapterJob, TrainConfig, lr_at

Tensor = torch.Tensor


class TrainableAdapters(Protocol):
    """What the loop needs of the adapters attached to the model."""

    def set_rows(self, rows: Tensor) -> None: ...  # per-row adapter index, -1 = base model
    def parameters_of(self, i: int) -> list[torch.nn.Parameter]: ...


def build_optimizer(adapters: TrainableAdapters, jobs: list[AdapterJob], config: TrainConfig):
    """AdamW with one parameter group per adapter (its own learning rate)."""
    groups = [{"params": adapters.parameters_of(i), "lr": job.lr, "base_lr": job.lr}
              for i, job in enumerate(jobs)]
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def row_sums(logits: Tensor, ids: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Summed next-token cross-entropy of each row over its targets, and how many targets it
    has: [rows, seq] ids → ([rows], [rows]). `labels` (default: the ids) marks the tokens that
    are not targets with -100 (a conversation's prompt tokens)."""
    shift_logits = logits[:, :-1].float()
    targets = (ids if labels is None else labels)[:, 1:]
    token_loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), targets.reshape(-1),
                                 reduction="none", ignore_index=IGNORE).view(targets.shape)
    return token_loss.sum(dim=1), (targets != IGNORE).sum(dim=1)


def row_losses(logits: Tensor, ids: Tensor, labels: Tensor | None = None) -> Tensor:
    """Mean next-token cross-entropy of each row over its targets: [rows, seq] ids → [rows]."""
    sums, counts = row_sums(logits, ids, labels)
    return sums / counts.clamp(min=1)


def adapter_losses(logits: Tensor, ids: Tensor, labels: Tensor, n: int) -> Tensor:
    """Each adapter's mean loss over the targets of its rows (rows in adapter order, as many
    each): with text every row has the same number of targets, so this is the mean of its
    rows' losses; conversation rows count by their reply tokens (a row without any counts
    nothing, instead of a zero that would dilute the mean)."""
    sums, counts = row_sums(logits, ids, labels)
    return sums.view(n, -1).sum(dim=1) / counts.view(n, -1).sum(dim=1).clamp(min=1)


def batch_tensors(blocks: list, device) -> tuple[Tensor, Tensor]:
    """A batch's ids and labels: a block is a list of ids (every token a target) or an
    (ids, labels) pair (`harness.corpus.conversation_tokens`)."""
    pairs = [block if isinstance(block, tuple) else (block, block) for block in blocks]
    ids = torch.tensor([p[0] for p in pairs], dtype=torch.long, device=device)
    return ids, torch.tensor([p[1] for p in pairs], dtype=torch.long, device=device)


def clip_per_adapter(adapters: TrainableAdapters, n: int, max_norm: float) -> None:
    if max_norm > 0:
        for i in range(n):
            torch.nn.utils.clip_grad_norm_(adapters.parameters_of(i), max_norm)


def train(
    model: torch.nn.Module,
    adapters: TrainableAdapters,
    jobs: list[AdapterJob],
    streams: Callable[[list[int]], list[Iterator[list[int]]]],
    config: TrainConfig,
    store: CheckpointStore | None = None,
    resume: Checkpoint | None = None,
    on_step: Callable[[TrainState], None] | None = None,
    progress: bool = True,
) -> TrainState:
    """Train `jobs` (one adapter each) for `config.steps` optimizer steps.

    `streams(skip)` opens one endless block stream per adapter, each skipping `skip[i]`
    blocks (so a resumed run reads what the interrupted one would have read next).
    """
    from tqdm import tqdm

    device = next(model.parameters()).device
    n, micro = len(jobs), config.micro_batch
    optimizer = build_optimizer(adapters, jobs, config)
    state = TrainState(blocks_used=[0] * n)
    if resume is not None:
        state = resume.restore(adapters, optimizer, n)
    its = streams(state.blocks_used)
    rows = torch.arange(n).repeat_interleave(micro)
    autocast = _autocast(config, device)
    bar = tqdm(total=config.steps, initial=state.step, desc="train", unit="step", disable=not progress,
               dynamic_ncols=True)
    start = time.perf_counter() - state.seconds
    while state.step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_at(state.step, config)
        step_loss = torch.zeros(n)
        for _ in range(config.grad_accum):
            batch = [next(its[i]) for i in range(n) for _ in range(micro)]
            ids, labels = batch_tensors(batch, device)
            adapters.set_rows(rows)
            with autocast:
                logits = model(input_ids=ids).logits
            per_adapter = adapter_losses(logits, ids, labels, n)
            (per_adapter.sum() / config.grad_accum).backward()
            step_loss += per_adapter.detach().float().cpu() / config.grad_accum
        clip_per_adapter(adapters, n, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.blocks_used = [b + config.batch_size for b in state.blocks_used]
        state.losses.append([round(float(v), 6) for v in step_loss])
        state.seconds = time.perf_counter() - start
        bar.update(1)
        bar.set_postfix_str(_loss_text(jobs, state.losses[-1]), refresh=False)
        if store is not None and (state.step % config.checkpoint_every == 0 or state.step == config.steps):
            store.save(Checkpoint.of(state, adapters, optimizer, n))
        if on_step is not None:
            on_step(state)
    bar.close()
    return state


def _loss_text(jobs: list[AdapterJob], losses: list[float]) -> str:
    if len(jobs) == 1:
        return f"loss={losses[0]:.3f}"
    return " ".join(f"{job.name}={loss:.3f}" for job, loss in zip(jobs, losses, strict=True))


def _autocast(config: TrainConfig, device: torch.device):
    """bf16 autocast on GPU when asked; float32 (no autocast) otherwise."""
    enabled = config.precision == "bf16" and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, adapters: TrainableAdapters, blocks: list[list[int]], index: int,
                 config: TrainConfig) -> float:
    """Mean token loss of the rows routed to adapter `index` (-1 = base model) on `blocks`,
    over their targets (a conversation's reply tokens)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(blocks), config.micro_batch):
        ids, labels = batch_tensors(blocks[start:start + config.micro_batch], device)
        adapters.set_rows(torch.full((ids.shape[0],), index, dtype=torch.long))
        with _autocast(config, device):
            logits = model(input_ids=ids).logits
        sums, counts = row_sums(logits, ids, labels)
        total += float(sums.sum())
        count += int(counts.sum())
    return total / max(count, 1)
