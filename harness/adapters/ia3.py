"""IA3: one learned vector per adapter and module, with PEFT's semantics: an attention module
scales its OUTPUT (bias included), y_i = (x_i W0ᵀ + b) ∘ l_i; a feed-forward module scales its
INPUT, y_i = (x_i ∘ l_i) W0ᵀ + b. PEFT has no mixed-batch IA3; here it is a per-row broadcast
multiply. The bank keeps both an input and an output vector per adapter (ones where unused),
so adapters that disagree on which modules are feed-forward still share one bank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.adapters.bank import AdapterBank, Tensor
from harness.adapters.config import Targets, as_targets, matches, split_fields, targets_json


@dataclass(frozen=True)
class IA3Config:
    target_modules: Targets = ("c_attn", "mlp.c_proj")
    feedforward_modules: Targets = ("mlp.c_proj",)

    @property
    def rank(self) -> None:
        return None  # IA3 has no rank (the paper calls it "rank 0.5" FLoRA)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IA3Config:
        fields = split_fields(data, {"target_modules", "feedforward_modules"})
        fields["target_modules"] = as_targets(fields.get("target_modules", cls.target_modules))
        feedforward = fields.get("feedforward_modules", cls.feedforward_modules)
        fields["feedforward_modules"] = () if feedforward in (None, []) else as_targets(feedforward)
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        return {
            "peft_type": "IA3",
            "target_modules": targets_json(self.target_modules),
            "feedforward_modules": targets_json(self.feedforward_modules),
            "fan_in_fan_out": False,
        }

    def is_feedforward(self, module_name: str) -> bool:
        return bool(self.feedforward_modules) and matches(self.feedforward_modules, module_name)


class IA3Bank(AdapterBank):
    peft_type = "IA3"
    method = "ia3"
    label = "IA3"
    default_lr = 5e-3  # the paper's (appendix A.1): a multiplicative method needs a larger one
    has_rank = False  # one vector per module
    config_cls = IA3Config
    rank_axes = {"inp": None, "out": None}

    def __init__(self, in_features, out_features, module_name, entries, trainable=False):
        super().__init__(in_features, out_features, module_name, entries, trainable)
        feedforward = [config.is_feedforward(module_name) for config in self.configs]
        self.scales_input, self.scales_output = any(feedforward), not all(feedforward)
        if trainable:  # only the side PEFT learns is trainable; the other stays ones
            for params, side_is_ff in ((self.inp_params, False), (self.out_params, True)):
                for param, ff in zip(params, feedforward, strict=True):
                    param.requires_grad_(ff != side_is_ff)

    @staticmethod
    def rank_of(config: IA3Config) -> int:
        return 0

    @classmethod
    def identity_value(cls, part: str) -> float:
        return 1.0

    @classmethod
    def expected_shapes(cls, config, module_name, in_f, out_f):
        return {"ia3_l": (1, in_f) if config.is_feedforward(module_name) else (out_f, 1)}

    @classmethod
    def to_bank(cls, config, module_name, tensors, in_f, out_f):
        vector = tensors["ia3_l"].reshape(-1)
        if config.is_feedforward(module_name):
            return {"inp": vector, "out": torch.ones(out_f, dtype=vector.dtype)}
        return {"inp": torch.ones(in_f, dtype=vector.dtype), "out": vector}

    @classmethod
    def from_bank(cls, config, module_name, parts):
        if config.is_feedforward(module_name):
            return {"ia3_l": parts["inp"].reshape(1, -1)}
        return {"ia3_l": parts["out"].reshape(-1, 1)}

    @classmethod
    def fresh(cls, config, module_name, in_f, out_f, gen):
        return {"ia3_l": torch.ones(cls.expected_shapes(config, module_name, in_f, out_f)["ia3_l"])}

    def forward(self, base, x, plan: Tensor):
        inp, out = self.for_plan(plan, x.dtype, lambda: self._row_vectors(plan, x.dtype))
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (-1,)
        if inp is not None:
            x = x * inp.view(shape)
        y = base(x)
        return y if out is None else y * out.view(shape)

    def _row_vectors(self, plan: Tensor, dtype: torch.dtype) -> tuple[Tensor | None, Tensor | None]:
        """Each row's input and output scaling vectors (None for a side no adapter here scales)."""
        inp = self.stacked("inp", dtype)[plan] if self.scales_input else None
        out = self.stacked("out", dtype)[plan] if self.scales_output else None
        return inp, out

    def merged(self, weight, bias, i):
        inp, out = self.adapter_part(i, "inp"), self.adapter_part(i, "out")
        weight = weight * out.to(weight.dtype)[:, None] * inp.to(weight.dtype)[None, :]
        return weight, None if bias is None else bias * out.to(bias.dtype)
