"""LoRA: y_i = x_i W0ᵀ + s · (x_i A_iᵀ) B_iᵀ, with A_i [r, in], B_i [out, r], s = alpha / r.

Two forms of the mixed-batch adapter term, chosen at `attach(..., lora_impl=...)`:
- `gather` (default): rows grouped by adapter once per `set_rows`; with one adapter, two
  GEMMs on the whole batch; with several of small rank in decode, the masked form (every
  row through all of the batch's adapters, a per-row mask keeps its own: `_masked_factors`);
  otherwise two grouped GEMMs (`torch._grouped_mm`: one kernel
  call runs every adapter's GEMM on its own rows, the SGMV idea) scattered back with
  `index_add_`, or, when gradients are needed, a loop of two GEMMs per adapter. When the
  adapters have at most two tokens each in the batch (decode with many adapters), the
  per-row gathered product instead: there the grouped GEMM's per-group dispatch dominates
  (measured on CPU, docs/adapters.md). Base rows cost nothing.
- `bmm`: the paper's baseline (appendix A.2): gather every row's A and B (padded to the
  largest rank in the batch) and run two `torch.bmm`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from harness.adapters.bank import AdapterBank, Tensor, as_rows, kaiming_uniform
from harness.adapters.config import Targets, as_targets, split_fields, targets_json


@dataclass(frozen=True)
class GatherPlan:
    groups: tuple[tuple[int, Tensor | None], ...]  # (adapter, its rows or None for all) per adapter
    rows: Tensor | None = None  # several adapters: adapted rows sorted by adapter
    adapters: Tensor | None = None  # the distinct adapters, in that order
    row_ends: Tensor | None = None  # int32 cumulative row counts per adapter
    idx: Tensor | None = None  # several adapters: local adapter per row (-1: none), for one-token rows
    rank: int = 0  # the largest rank among the rows


FEW_TOKENS = 2  # tokens per adapter at or below which the per-row product beats grouped GEMMs
# The masked form (decode only) while its wasted work is small: C·(in + out) multiply-adds per
# token at most this many. Measured on CPU, 100 rows over 16 adapters: it beats the grouped
# GEMM's per-adapter dispatch up to about 2^15 (tiny's c_attn to rank 8, a 512-wide layer
# to rank 2) and loses beyond; the waste grows with the layer, the dispatch cost does not.
MASKED_MACS = 1 << 15


def _needs_grad(x: Tensor, bank: AdapterBank) -> bool:
    """Grouped GEMM has no CPU backward here: training takes the per-adapter loop."""
    return torch.is_grad_enabled() and (x.requires_grad or bank.trainable)


@dataclass(frozen=True)
class LoRAConfig:
    r: int = 8
    lora_alpha: float = 8
    target_modules: Targets = ("c_attn",)
    lora_dropout: float = 0.0  # recorded for PEFT; the forward applies no dropout
    use_rslora: bool = False

    @property
    def rank(self) -> int:
        return self.r

    @property
    def scale(self) -> float:
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoRAConfig:
        fields = split_fields(data, {"r", "lora_alpha", "target_modules", "lora_dropout", "use_rslora"})
        fields["target_modules"] = as_targets(fields.get("target_modules", cls.target_modules))
        config = cls(**fields)
        if not isinstance(config.r, int) or config.r < 1:
            raise ValueError(f"r must be a positive integer, not {config.r!r}")
        return config

    def to_json(self) -> dict[str, Any]:
        return {
            "peft_type": "LORA",
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "target_modules": targets_json(self.target_modules),
            "lora_dropout": self.lora_dropout,
            "use_rslora": self.use_rslora,
            "bias": "none",
            "fan_in_fan_out": False,
        }


class LoRABank(AdapterBank):
    """Gather form: per distinct adapter in the batch, two GEMMs on its rows."""

    peft_type = "LORA"
    method = "lora"
    label = "LoRA"
    default_lr = 1e-4  # the paper's (appendix A.1)
    config_cls = LoRAConfig
    rank_axes = {"A": 0, "B": 1}
    rank_multiple = 8  # 16-byte aligned rank for grouped GEMM kernels; the padding is zeros
    variant = "gather"

    @staticmethod
    def rank_of(config: LoRAConfig) -> int:
        return config.r

    @staticmethod
    def scale_of(config: LoRAConfig) -> float:
        return config.scale

    @classmethod
    def expected_shapes(cls, config, module_name, in_f, out_f):
        return {"lora_A.weight": (config.r, in_f), "lora_B.weight": (out_f, config.r)}

    @classmethod
    def to_bank(cls, config, module_name, tensors, in_f, out_f):
        return {"A": tensors["lora_A.weight"], "B": tensors["lora_B.weight"]}

    @classmethod
    def from_bank(cls, config, module_name, parts):
        return {"lora_A.weight": parts["A"], "lora_B.weight": parts["B"]}

    @classmethod
    def fresh(cls, config, module_name, in_f, out_f, gen):
        """PEFT's init: A kaiming-uniform, B zero, so a new adapter starts as the base model."""
        return {
            "lora_A.weight": kaiming_uniform((config.r, in_f), gen),
            "lora_B.weight": torch.zeros(out_f, config.r),
        }

    @staticmethod
    def plan(local_idx: Tensor, ranks: Tensor, device: torch.device) -> GatherPlan:
        if bool((local_idx == local_idx[0]).all()):
            return GatherPlan(groups=() if local_idx[0] < 0 else ((int(local_idx[0]), None),))
        order = torch.argsort(local_idx, stable=True)
        order = order[local_idx[order] >= 0]  # adapted rows, grouped by adapter
        present, counts = torch.unique_consecutive(local_idx[order], return_counts=True)
        rows = order.to(device)
        groups = tuple(zip(present.tolist(), rows.split(counts.tolist()), strict=True))
        if len(groups) < 2:
            return GatherPlan(groups=groups)
        ends = torch.cumsum(counts, 0).to(torch.int32)
        rank = int(ranks[present].max())
        return GatherPlan(groups, rows, present.to(device), ends.to(device), local_idx.to(device), rank)

    def forward(self, base, x, plan: GatherPlan):
        y = base(x)  # added to in place: a Linear's backward does not need its output
        if not plan.groups:
            return y
        x3, y3 = as_rows(x), as_rows(y)
        if plan.rows is not None and x3.shape[1] <= FEW_TOKENS and not _needs_grad(x, self):
            masked = self.for_plan(plan, x3.dtype, lambda: self._masked_factors(plan, x3.dtype))
            if masked is not None:
                a, b_t, mask = masked
                hidden = (F.linear(x3, a) * mask).view(-1, b_t.shape[0])
                return y3.view(-1, y3.shape[-1]).addmm_(hidden, b_t).view(y.shape)
        if plan.rows is not None and x3.shape[1] * len(plan.rows) <= FEW_TOKENS * len(plan.groups):
            return self._per_row(x3, y, plan.idx, plan.rank)  # adapters with a token or two each
        if plan.rows is not None and self._grouped_ok and not _needs_grad(x, self):
            try:
                return self._grouped(x3, y3, plan).view(y.shape)
            except RuntimeError:  # a dtype or layout this build's grouped GEMM refuses: loop instead
                self._grouped_ok = False
        for i, rows in plan.groups:
            a, b = self.adapter_part(i, "A", x.dtype), self.adapter_part(i, "B", x.dtype)
            scale = self.scale_list[i]
            if rows is None:
                y3.add_(F.linear(F.linear(x3, a) * scale, b))
            else:
                y3.index_add_(0, rows, F.linear(F.linear(x3.index_select(0, rows), a) * scale, b))
        return y

    _grouped_ok = hasattr(torch, "_grouped_mm")

    def _grouped(self, x3: Tensor, y3: Tensor, plan: GatherPlan) -> Tensor:
        """Many adapters: rows sorted by adapter, two grouped GEMMs (one per adapter each,
        run by one kernel call, the SGMV idea) at the bank's padded rank."""
        tokens = x3.shape[1]
        xs = x3.index_select(0, plan.rows).reshape(-1, x3.shape[-1])
        offsets = plan.row_ends * tokens
        a, b = self.for_plan(plan, x3.dtype, lambda: self._group_factors(plan, x3.dtype), "grouped")
        hidden = torch._grouped_mm(xs, a.transpose(1, 2), offs=offsets)
        delta = torch._grouped_mm(hidden, b.transpose(1, 2), offs=offsets)
        return y3.index_add_(0, plan.rows, delta.view(len(plan.rows), tokens, -1))

    def _masked_factors(self, plan: GatherPlan, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor] | None:
        """The masked form, for a few adapters of small rank: every row through the batch's
        adapters side by side (A's rows concatenated, C = Σ rᵢ of them), then a per-row mask
        keeps its own adapter's columns (times its scale): two dense GEMMs and one multiply,
        no gathers, no per-adapter dispatch. Each row computes every adapter's C columns, so
        it is taken only while that waste is small (`MASKED_MACS`; None
        otherwise), and only in decode: with many tokens per row the grouped GEMM's dispatch
        is amortised and the waste is not. Returns A [C, in], Bᵀ [C, out], the mask [rows, 1, C]."""
        present = [i for i, _ in plan.groups]
        columns = sum(self.rank_list[i] for i in present)
        if columns * (self.in_features + self.out_features) > MASKED_MACS:
            return None
        a = torch.cat([self.adapter_part(i, "A", dtype) for i in present])
        b = torch.cat([self.adapter_part(i, "B", dtype) for i in present], dim=1)
        owners = [i for i in present for _ in range(self.rank_list[i])]
        owner = torch.tensor(owners, device=a.device)
        scale = torch.tensor([self.scale_list[i] for i in owners], dtype=dtype, device=a.device)
        mask = (plan.idx[:, None] == owner[None, :]).to(dtype) * scale
        return a, b.t(), mask.unsqueeze(1)

    def _group_factors(self, plan: GatherPlan, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """The batch's adapters' A [groups, R, in] and scaled B [groups, out, R]."""
        adapters = plan.adapters
        a = self.stacked("A", dtype)[adapters]
        b = self.stacked("B", dtype)[adapters] * self.scales[adapters].to(dtype)[:, None, None]
        return a, b

    def _per_row(self, x3: Tensor, y: Tensor, idx: Tensor, rank: int) -> Tensor:
        """Each row's own A and B gathered (padded to `rank`), two batched products: the
        paper's bmm form."""
        adapter_a = self.stacked("A", x3.dtype)[idx, :rank].transpose(1, 2)  # [b, in, r]
        adapter_b = self.stacked("B", x3.dtype)[idx, :, :rank].transpose(1, 2)  # [b, r, out]
        hidden = torch.bmm(x3, adapter_a) * self.scales[idx].to(x3.dtype)[:, None, None]
        return y + torch.bmm(hidden, adapter_b).view(y.shape)

    def merged(self, weight, bias, i):
        a, b = self.adapter_part(i, "A", torch.float32), self.adapter_part(i, "B", torch.float32)
        return weight + self.scale_list[i] * (b @ a).to(weight.dtype), bias


@dataclass(frozen=True)
class BmmPlan:
    idx: Tensor  # local adapter index per row, on the device (-1 = identity: zero delta)
    rank: int  # largest rank among the rows (0: no row is adapted)


class BmmLoRABank(LoRABank):
    """The paper's bmm baseline: per-row gathered A and B, two batched matrix products."""

    variant = "bmm"

    @staticmethod
    def plan(local_idx, ranks, device):
        return BmmPlan(idx=local_idx.to(device), rank=int(ranks[local_idx].max()))

    def forward(self, base, x, plan: BmmPlan):
        y = base(x)
        return y if plan.rank == 0 else self._per_row(as_rows(x), y, plan.idx, plan.rank)


LoRABank.variants = {"gather": LoRABank, "bmm": BmmLoRABank}
