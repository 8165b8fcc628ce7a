"""The part every method shares: N adapters' tensors for one Linear, stacked along a new first
axis and zero-padded to the largest rank, plus one identity entry at index -1.

Why an identity entry: a row with no adapter reads index -1 like any other row, so a batch
that mixes adapted and base rows needs no branch and no second pass. Why two storages:
inference reads one stacked buffer per part (no copy per forward); training keeps one
leaf `nn.Parameter` per adapter and part (so an optimizer sees each adapter) and stacks them
in the forward, which is cheap next to the backward pass.

A method subclasses `AdapterBank` and fills in the class attributes and the methods marked
"method-specific"; nothing outside the method modules knows which methods exist.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

Tensor = torch.Tensor


class AdapterBank(nn.Module):
    """Stacked tensors of N adapters of one method at one Linear (in_features → out_features)."""

    peft_type: ClassVar[str]  # "LORA" | "FLORA" | "IA3" (adapter_config.json's peft_type)
    method: ClassVar[str]  # "lora" | "flora" | "ia3" (our lower-case name)
    label: ClassVar[str]  # what tables show: "LoRA" | "FLoRA" | "IA3" (the paper's Table 1)
    default_lr: ClassVar[float]  # training's learning rate unless --lr says otherwise
    has_rank: ClassVar[bool] = True  # False: `--rank` does not apply (IA3: one vector a module)
    config_cls: ClassVar[type]
    rank_axes: ClassVar[dict[str, int | None]]  # bank part -> its rank axis in one adapter's tensor
    identity_rank: ClassVar[int] = 0  # rank of the identity entry (FLoRA needs one slot of ones)
    rank_multiple: ClassVar[int] = 1  # pad the stacked rank axis to a multiple (kernel alignment)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        module_name: str,
        entries: list[tuple[Any, Mapping[str, Tensor]]],
        trainable: bool = False,
    ) -> None:
        """`entries`: per adapter, its config and its PEFT-suffix tensors for this module."""
        super().__init__()
        self.in_features, self.out_features, self.module_name = in_features, out_features, module_name
        self.configs = [config for config, _ in entries]
        self.trainable = trainable
        ranks = [self.rank_of(config) for config in self.configs]
        self.max_rank = -(-max([self.identity_rank, *ranks]) // self.rank_multiple) * self.rank_multiple
        # python lists for host-side use (no device sync), a buffer for per-row gathers
        self.rank_list = [*ranks, self.identity_rank]
        self.scale_list = [self.scale_of(config) for config in self.configs] + [1.0]
        self.register_buffer("scales", torch.tensor(self.scale_list), persistent=False)
        per_adapter = [
            self.to_bank(config, module_name, tensors, in_features, out_features)
            for config, tensors in entries
        ]
        for part in self.rank_axes:
            tensors = [t[part] for t in per_adapter]
            if trainable:
                self.register_module(
                    f"{part}_params", nn.ParameterList([nn.Parameter(t.detach().clone()) for t in tensors])
                )
            else:
                self.register_buffer(part, self._stack(part, tensors), persistent=False)

    # --- storage -------------------------------------------------------------------------
    def _identity(self, part: str, like: Tensor) -> Tensor:
        """The identity entry of `part`, shaped like a padded adapter tensor."""
        axis = self.rank_axes[part]
        out = torch.zeros_like(like)
        if axis is None:
            return out.fill_(self.identity_value(part))
        index = [slice(None)] * out.dim()
        index[axis] = slice(0, self.identity_rank)
        out[tuple(index)] = self.identity_value(part)
        return out

    def _pad(self, part: str, tensor: Tensor) -> Tensor:
        axis = self.rank_axes[part]
        missing = 0 if axis is None else self.max_rank - tensor.shape[axis]
        if missing == 0:
            return tensor
        pad = [0, 0] * tensor.dim()
        pad[2 * (tensor.dim() - 1 - axis) + 1] = missing  # F.pad lists the last axis first
        return F.pad(tensor, pad)

    def _stack(self, part: str, tensors: list[Tensor]) -> Tensor:
        padded = [self._pad(part, t) for t in tensors]
        return torch.stack([*padded, self._identity(part, padded[0])])

    def stacked(self, part: str, dtype: torch.dtype | None = None) -> Tensor:
        """[N + 1, ...] padded tensors of `part`, entry -1 = identity (rebuilt when trainable),
        in `dtype` (the input's: trainable banks keep float32 under a bf16 or 8-bit base)."""
        if not self.trainable:
            tensor = getattr(self, part)
        else:
            tensor = self._stack(part, list(getattr(self, f"{part}_params")))
        return tensor if dtype is None else tensor.to(dtype)

    def for_plan(self, plan: Any, dtype: torch.dtype, build: Callable[[], Any], form: str = "") -> Any:
        """Tensors `build` derives from this bank for one routing plan (per-row gathers),
        kept while the plan lasts. Speed trick: every decode step between two `set_rows`
        calls reuses one plan. Trainable banks rebuild them (their parameters move). `form`
        names what `build` makes when a bank has several (LoRA: masked, grouped)."""
        if self.trainable:
            return build()
        memo = self.__dict__.setdefault("_plan_memo", {})
        kept = memo.get(form)
        if kept is not None and kept[0] is plan and kept[1] == dtype:
            return kept[2]
        value = build()
        memo[form] = (plan, dtype, value)
        return value

    def adapter_part(self, i: int, part: str, dtype: torch.dtype | None = None) -> Tensor:
        """Adapter i's own (unpadded) tensor of `part`: a leaf parameter when trainable."""
        if self.trainable:
            tensor = getattr(self, f"{part}_params")[i]
        else:
            axis = self.rank_axes[part]
            tensor = getattr(self, part)[i]
            tensor = tensor if axis is None else tensor.narrow(axis, 0, self.rank_list[i])
        return tensor if dtype is None else tensor.to(dtype)

    def adapter_parameters(self, i: int) -> list[nn.Parameter]:
        """Adapter i's trainable parameters (empty unless the bank was built trainable)."""
        if not self.trainable:
            return []
        params = [getattr(self, f"{part}_params")[i] for part in self.rank_axes]
        return [p for p in params if p.requires_grad]

    def export(self, i: int) -> dict[str, Tensor]:
        """Adapter i's tensors under PEFT suffixes (detached copies on the CPU)."""
        parts = {part: self.adapter_part(i, part).detach().to("cpu").clone() for part in self.rank_axes}
        return self.from_bank(self.configs[i], self.module_name, parts)

    # --- method-specific -------------------------------------------------------------------
    @staticmethod
    def rank_of(config: Any) -> int:
        raise NotImplementedError

    @staticmethod
    def scale_of(config: Any) -> float:
        return 1.0

    @classmethod
    def identity_value(cls, part: str) -> float:
        return 0.0

    @classmethod
    def expected_shapes(cls, config: Any, module_name: str, in_f: int, out_f: int) -> dict[str, tuple]:
        """PEFT suffix -> shape that a file must hold for this module."""
        raise NotImplementedError

    @classmethod
    def to_bank(cls, config: Any, module_name: str, tensors: Mapping[str, Tensor], in_f: int, out_f: int):
        """PEFT-suffix tensors of one adapter -> bank parts."""
        raise NotImplementedError

    @classmethod
    def from_bank(cls, config: Any, module_name: str, parts: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Bank parts of one adapter -> PEFT-suffix tensors (inverse of `to_bank`)."""
        raise NotImplementedError

    @classmethod
    def fresh(cls, config: Any, module_name: str, in_f: int, out_f: int, gen: torch.Generator):
        """Initial PEFT-suffix tensors of a new trainable adapter for this module."""
        raise NotImplementedError

    @staticmethod
    def plan(local_idx: Tensor, ranks: Tensor, device: torch.device) -> Any:
        """Per-batch bookkeeping computed once per `set_rows` (on the CPU) and shared by all
        layers with the same adapters, so the forward never syncs with the device."""
        return local_idx.to(device)

    def forward(self, base: nn.Linear, x: Tensor, plan: Any) -> Tensor:
        """Output of `base` for rows x [b, ..., in], row i adapted by local adapter plan-index i."""
        raise NotImplementedError

    def merged(self, weight: Tensor, bias: Tensor | None, i: int) -> tuple[Tensor, Tensor | None]:
        """The weight and bias of `base` with adapter i folded in."""
        raise NotImplementedError


def base_matmul(base: nn.Linear, x: Tensor) -> Tensor:
    """x W0ᵀ without the bias. A quantized base (e.g. bitsandbytes' 8-bit Linear, whose weight
    is not a float tensor) is called as a module and its bias taken off again."""
    if base.weight.is_floating_point():
        return F.linear(x, base.weight.to(x.dtype))
    y = base(x)
    return y if base.bias is None else y - base.bias.to(y.dtype)


def as_rows(x: Tensor) -> Tensor:
    """[b, ..., in] -> [b, tokens, in] (a view): every method works per batch row."""
    return x.reshape(x.shape[0], -1, x.shape[-1])


def kaiming_uniform(shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """PEFT's default lora_A init (nn.Linear's kaiming_uniform with a = sqrt(5))."""
    bound = 1.0 / math.sqrt(shape[-1])
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound
