"""The wrapper around one `nn.Linear`: it holds one bank per method present at this module
and reads the current per-row plan from a `Routing` shared by every wrapper that holds the
same adapters. It never looks at method names: each bank computes the full output of its rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from harness.adapters.bank import AdapterBank


@dataclass(frozen=True)
class Group:
    bank: int  # position in the wrapper's banks
    rows: torch.Tensor | None  # batch rows on the device; None = the whole batch
    plan: Any  # the bank's own per-batch plan


@dataclass(eq=False)
class Routing:
    """Where each adapter of a handle lives at the wrappers that share this routing, and the
    plan for the current batch (set by `AdapterHandle.set_rows`, read by every such wrapper)."""

    banks: tuple[type[AdapterBank], ...]
    slots: tuple[tuple[int, int] | None, ...]  # per adapter: (bank position, index in that bank)
    ranks: tuple[torch.Tensor, ...]  # per bank: ranks of its entries, identity last (CPU)
    groups: list[Group] = field(default_factory=list)  # empty: every row uses the base layer
    batch: int | None = None

    def __post_init__(self) -> None:
        # per adapter index (and -1 last): its bank and its index there, -1 = not at these layers
        self._bank_of = torch.tensor([s[0] if s else -1 for s in self.slots] + [-1])
        self._local = torch.tensor([s[1] if s else -1 for s in self.slots] + [-1])

    def set_rows(self, rows: torch.Tensor, device: torch.device) -> None:
        """Group the batch by bank; rows without an adapter here ride along with the first
        group as identity rows (index -1), so a uniform batch is one call with no gathers."""
        bank_of, local = self._bank_of[rows], self._local[rows]
        present = [int(k) for k in torch.unique(bank_of) if k >= 0]
        self.batch = len(rows)
        if len(present) == 1:
            k = present[0]
            self.groups = [Group(k, None, self.banks[k].plan(local, self.ranks[k], device))]
            return
        self.groups = []
        for n, k in enumerate(present):
            mask = bank_of == k
            if n == 0:
                mask |= bank_of < 0
            picked = torch.nonzero(mask).flatten()
            plan = self.banks[k].plan(local[picked], self.ranks[k], device)
            self.groups.append(Group(k, picked.to(device), plan))


class AdapterLinear(nn.Module):
    """nn.Linear plus adapter banks; row i of a batch uses the adapter `set_rows` gave it."""

    def __init__(self, base: nn.Linear, banks: list[AdapterBank], routing: Routing) -> None:
        super().__init__()
        self.base = base
        self.banks = nn.ModuleList(banks)
        self.routing = routing
        self.in_features, self.out_features = base.in_features, base.out_features
        self.saved: tuple[torch.Tensor, torch.Tensor | None] | None = None  # weights before `merge`
        self.merged = False

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.routing.groups
        if self.merged or not groups:
            return self.base(x)
        if x.shape[0] != self.routing.batch:
            raise ValueError(f"batch of {x.shape[0]} rows but set_rows gave {self.routing.batch}")
        if groups[0].rows is None:  # banks are called through `forward`: no module-call overhead
            return self.banks[groups[0].bank].forward(self.base, x, groups[0].plan)
        out = None
        for group in groups:
            y = self.banks[group.bank].forward(self.base, x.index_select(0, group.rows), group.plan)
            if out is None:
                out = y.new_empty((x.shape[0], *y.shape[1:]))
            out.index_copy_(0, group.rows, y)
        return out

    @torch.no_grad()
    def merge(self, adapter: int) -> None:
        """Fold one adapter into the base weights (kept aside, so `unmerge` is bit-exact)."""
        slot = self.routing.slots[adapter]
        if slot is not None:
            weight, bias = self.base.weight, self.base.bias
            self.saved = (
                weight.detach().to("cpu", copy=True),
                None if bias is None else bias.detach().to("cpu", copy=True),
            )
            new_weight, new_bias = self.banks[slot[0]].merged(weight, bias, slot[1])
            weight.copy_(new_weight)
            if bias is not None:
                bias.copy_(new_bias)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.saved is not None:
            weight, bias = self.saved
            self.base.weight.copy_(weight)
            if bias is not None:
                self.base.bias.copy_(bias)
        self.saved, self.merged = None, False
