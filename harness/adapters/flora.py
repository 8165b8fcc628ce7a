"""FLoRA: W_i = W0 ∘ (s · B_i A_i), s = 1/r (mean over the rank, the paper's choice) or 1 (sum).

Orientation (PEFT-like, so files read like LoRA's): `flora_A` [r, in] scales the input,
`flora_B` [out, r] scales the output; the paper's B_i (d×r) is our flora_Aᵀ and its A_i
(r×k) our flora_Bᵀ. Per row i:  y_i = s · Σ_j B_i[:, j] ∘ ((A_i[j] ∘ x_i) W0ᵀ) + bias.

Batched eq. 6: stack the r scaled copies of each row's input as rows of ONE matrix
(M = Σ_i r_i · tokens_i), run ONE GEMM against W0, then scale by B and reduce over the rank.
No per-example weight and no [tokens, in, r] tensor is built. Mixed ranks cost exactly
Σ r_i (no padding): rows are expanded to (row, rank slot) pairs. A base row is the identity
entry (rank 1, all ones), i.e. one plain copy of its input through the same GEMM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.adapters.bank import AdapterBank, Tensor, as_rows, base_matmul
from harness.adapters.config import Targets, as_targets, split_fields, targets_json

REDUCTIONS = ("mean", "sum")
INIT_NOISE = 0.02  # zero-mean spread of flora_A across the rank at init (breaks the symmetry)


@dataclass(frozen=True)
class FLoRAConfig:
    r: int = 1
    target_modules: Targets = ("c_attn",)
    reduction: str = "mean"

    @property
    def rank(self) -> int:
        return self.r

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FLoRAConfig:
        fields = split_fields(data, {"r", "target_modules", "reduction"})
        fields["target_modules"] = as_targets(fields.get("target_modules", cls.target_modules))
        config = cls(**fields)
        if not isinstance(config.r, int) or config.r < 1:
            raise ValueError(f"r must be a positive integer, not {config.r!r}")
        if config.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, not {config.reduction!r}")
        return config

    def to_json(self) -> dict[str, Any]:
        return {
            "peft_type": "FLORA",
            "r": self.r,
            "target_modules": targets_json(self.target_modules),
            "reduction": self.reduction,
        }


@dataclass(frozen=True)
class FLoRAPlan:
    idx: Tensor  # local adapter per row (uniform rank) or per (row, slot) pair (mixed ranks)
    rank: int  # the common rank, or 0 when ranks differ
    row_of: Tensor | None = None  # mixed ranks: the batch row of each (row, slot) pair
    slot_of: Tensor | None = None  # mixed ranks: the rank slot of each pair


class FLoRABank(AdapterBank):
    peft_type = "FLORA"
    method = "flora"
    label = "FLoRA"
    default_lr = 8e-3  # the paper's (appendix A.1): a multiplicative method needs a larger one
    config_cls = FLoRAConfig
    rank_axes = {"A": 0, "B": 1}
    identity_rank = 1

    @staticmethod
    def rank_of(config: FLoRAConfig) -> int:
        return config.r

    @staticmethod
    def scale_of(config: FLoRAConfig) -> float:
        return 1.0 / config.r if config.reduction == "mean" else 1.0

    @classmethod
    def identity_value(cls, part: str) -> float:
        return 1.0

    @classmethod
    def expected_shapes(cls, config, module_name, in_f, out_f):
        return {"flora_A": (config.r, in_f), "flora_B": (out_f, config.r)}

    @classmethod
    def to_bank(cls, config, module_name, tensors, in_f, out_f):
        return {"A": tensors["flora_A"], "B": tensors["flora_B"]}

    @classmethod
    def from_bank(cls, config, module_name, parts):
        return {"flora_A": parts["A"], "flora_B": parts["B"]}

    @classmethod
    def fresh(cls, config, module_name, in_f, out_f, gen):
        """Ones (W_i = W0 under the mean), with zero-mean noise on flora_A across the rank so
        the r components do not stay identical; each column of A still sums to r."""
        noise = torch.randn((config.r, in_f), generator=gen) * INIT_NOISE
        a = 1.0 + noise - noise.mean(dim=0, keepdim=True)
        if config.reduction == "sum":
            a = a / config.r
        return {"flora_A": a, "flora_B": torch.ones(out_f, config.r)}

    @staticmethod
    def plan(local_idx: Tensor, ranks: Tensor, device: torch.device) -> FLoRAPlan:
        row_ranks = ranks[local_idx]
        if bool((local_idx == local_idx[0]).all()):  # one adapter: broadcast it, no per-row gather
            return FLoRAPlan(idx=local_idx[:1].to(device), rank=int(row_ranks[0]))
        if bool((row_ranks == row_ranks[0]).all()):
            return FLoRAPlan(idx=local_idx.to(device), rank=int(row_ranks[0]))
        rows = torch.arange(len(local_idx))
        row_of = torch.repeat_interleave(rows, row_ranks)
        starts = torch.cumsum(row_ranks, 0) - row_ranks
        slot_of = torch.arange(len(row_of)) - torch.repeat_interleave(starts, row_ranks)
        return FLoRAPlan(
            idx=local_idx[row_of].to(device), rank=0, row_of=row_of.to(device), slot_of=slot_of.to(device)
        )

    def forward(self, base, x, plan: FLoRAPlan):
        x3 = as_rows(x)
        a, b = self.for_plan(plan, x.dtype, lambda: self._row_factors(plan, x.dtype))
        if plan.rank == 1:  # the common case (the paper's rank 1), in as few operations as possible
            h = base_matmul(base, x3 * a)  # a, b: [b, 1, in], [b, 1, out]
            y = torch.addcmul(base.bias.to(h.dtype), h, b) if base.bias is not None else h * b
            return y.view(*x.shape[:-1], -1)
        if plan.rank:  # every row at rank r: [b, r, tokens, in] -> one GEMM -> [b, r, tokens, out]
            stacked = x3.unsqueeze(1) * a.unsqueeze(2)  # [b, r, tokens, in]: eq. 6's B ∘ X
            h = base_matmul(base, stacked.view(-1, x3.shape[-1])).view(*stacked.shape[:-1], -1)
            y = (h * b.unsqueeze(2)).sum(dim=1)
        else:  # mixed ranks: one GEMM over the Σ r_i (row, slot) pairs, reduced per row
            h = base_matmul(base, x3.index_select(0, plan.row_of) * a.unsqueeze(1))
            y = h.new_zeros(x3.shape[0], x3.shape[1], h.shape[-1]).index_add(
                0, plan.row_of, h * b.unsqueeze(1)
            )
        if base.bias is not None:
            y = y + base.bias.to(y.dtype)
        return y.view(*x.shape[:-1], y.shape[-1])

    def _row_factors(self, plan: FLoRAPlan, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Each row's A and scaled B: [b, r, in] and [b, r, out] at one rank, or per
        (row, rank slot) pair [pairs, in] and [pairs, out] for mixed ranks."""
        a_all, b_all = self.stacked("A", dtype), self.stacked("B", dtype)
        scales = self.scales[plan.idx].to(dtype)
        if plan.rank:  # rank 1: the same shapes read as [b, 1 token-broadcast, in / out]
            a = a_all[plan.idx, : plan.rank]
            b = b_all[plan.idx, :, : plan.rank].transpose(1, 2) * scales[:, None, None]
            return a, b
        return a_all[plan.idx, plan.slot_of], b_all[plan.idx, :, plan.slot_of] * scales[:, None]

    def merged(self, weight, bias, i):
        a, b = self.adapter_part(i, "A", torch.float32), self.adapter_part(i, "B", torch.float32)
        return weight * (self.scale_list[i] * (b @ a)).to(weight.dtype), bias
