"""Injection: `attach` wraps every targeted Linear of a causal LM once; the returned handle
switches rows between adapters (`set_rows`), merges one adapter, exposes trainable
parameters, exports adapters, and restores the original modules (`detach`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from harness.adapters.files import AdapterFile, content_hash
from harness.adapters.layer import AdapterLinear, Routing
from harness.adapters.methods import BY_CONFIG, METHODS, bank_class
from harness.adapters.validate import PREFIX, linear_layout, module_tensors
from harness.errors import UserError


class AdapterHandle:
    """The adapters attached to one model, in the order given to `attach`."""

    def __init__(
        self,
        model: nn.Module,
        adapters: list[AdapterFile],
        wrappers: dict[str, AdapterLinear],
        routings: list[Routing],
    ) -> None:
        self.model, self.adapters, self.wrappers, self.routings = model, adapters, wrappers, routings
        self.rows: torch.Tensor | None = None

    def set_rows(self, rows: torch.Tensor | Sequence[int]) -> None:
        """One adapter index per batch row (-1 = base model) for every following forward.
        Cheap: one small CPU computation per distinct routing, no re-wrapping."""
        rows = torch.as_tensor(rows).detach().to("cpu", torch.long)
        if rows.dim() != 1 or len(rows) == 0:
            raise ValueError(
                f"set_rows takes one index per batch row (a 1-d tensor), not shape {list(rows.shape)}"
            )
        if bool(((rows < -1) | (rows >= len(self.adapters))).any()):
            raise ValueError(f"adapter indices must be in -1..{len(self.adapters) - 1}, got {rows.tolist()}")
        self.rows = rows
        device = self._device()
        for routing in self.routings:
            routing.set_rows(rows, device)

    def merge(self, adapter: int) -> None:
        """Fold adapter `adapter` into the weights: every row then runs it at base-model cost."""
        self.unmerge()
        for wrapper in self.wrappers.values():
            wrapper.merge(adapter)

    def unmerge(self) -> None:
        """Restore the weights saved by `merge`, bit for bit."""
        for wrapper in self.wrappers.values():
            wrapper.unmerge()

    def detach(self) -> nn.Module:
        """Put the original Linear modules back; the handle is unusable afterwards."""
        self.unmerge()
        for name, wrapper in self.wrappers.items():
            self.model.set_submodule(name, wrapper.base)
        self.wrappers, self.routings = {}, []
        return self.model

    def parameters(self, adapter: int) -> list[nn.Parameter]:
        """Trainable parameters of one adapter (needs `attach(..., trainable=True)`)."""
        params = [
            p for w in self.wrappers.values() for p in self._bank_call(w, adapter, "adapter_parameters")
        ]
        if not params:
            raise ValueError("no trainable parameters: attach with trainable=True")
        return params

    def export(self, adapter: int, metadata: dict[str, Any] | None = None) -> AdapterFile:
        """The adapter as it is now (e.g. after training), ready for `save_adapter`."""
        spec = self.adapters[adapter]
        tensors = {}
        for name, wrapper in self.wrappers.items():
            for suffix, tensor in self._bank_call(wrapper, adapter, "export").items():
                tensors[f"{PREFIX}{name}.{suffix}"] = tensor
        return AdapterFile(
            name=spec.name,
            method=spec.method,
            config=spec.config,
            tensors=tensors,
            metadata={**spec.metadata, **(metadata or {})},
            content_hash=content_hash(spec.config, tensors),
            path=None,
        )

    @staticmethod
    def _bank_call(wrapper: AdapterLinear, adapter: int, method: str):
        slot = wrapper.routing.slots[adapter]
        if slot is None:
            return {} if method == "export" else []
        return getattr(wrapper.banks[slot[0]], method)(slot[1])

    def _device(self) -> torch.device:
        return next(iter(self.wrappers.values())).base.weight.device if self.wrappers else torch.device("cpu")


def attach(
    model: nn.Module, adapters: Sequence[AdapterFile], *, trainable: bool = False, lora_impl: str = "gather"
) -> AdapterHandle:
    """Wrap every Linear of `model` that one of `adapters` targets. Adapter tensors are cast
    to each layer's dtype and device. `lora_impl`: "gather" (fast) or "bmm" (paper's baseline)."""
    if any(isinstance(m, AdapterLinear) for m in model.modules()):
        raise ValueError("adapters are already attached to this model; detach the old handle first")
    adapters = list(adapters)
    layout = linear_layout(model)
    per_module: dict[str, list[tuple[int, type, dict]]] = {}
    for j, spec in enumerate(adapters):
        bank = bank_class(spec.peft_type, {"lora": lora_impl})
        found = module_tensors(
            spec.where, METHODS[spec.peft_type], spec.config, spec.tensors, layout, "this base model"
        )
        for name, tensors in found.items():
            per_module.setdefault(name, []).append((j, bank, tensors))
    routings: dict[tuple, Routing] = {}
    wrappers: dict[str, AdapterLinear] = {}
    for name, entries in per_module.items():
        base = model.get_submodule(name)
        kinds = list(dict.fromkeys(bank for _, bank, _ in entries))
        slots: list[tuple[int, int] | None] = [None] * len(adapters)
        banks = []
        for pos, kind in enumerate(kinds):
            mine = [(j, tensors) for j, bank, tensors in entries if bank is kind]
            for local, (j, _) in enumerate(mine):
                slots[j] = (pos, local)
            cast = [
                (adapters[j].config, {k: t.to(_bank_dtype(base, trainable)) for k, t in tensors.items()})
                for j, tensors in mine
            ]
            bank = kind(base.in_features, base.out_features, name, cast, trainable=trainable)
            banks.append(bank.to(base.weight.device))
        key = (tuple(kinds), tuple(slots))
        if key not in routings:
            routings[key] = Routing(
                tuple(kinds), tuple(slots), tuple(torch.tensor(b.rank_list) for b in banks)
            )
        wrappers[name] = AdapterLinear(base, banks, routings[key])
    for name, wrapper in wrappers.items():
        model.set_submodule(name, wrapper)
    return AdapterHandle(model, adapters, wrappers, list(routings.values()))


def _bank_dtype(base: nn.Linear, trainable: bool) -> torch.dtype:
    """Inference banks take a float base's dtype (no cast per forward); trainable banks and
    banks of a quantized base keep float32 and are cast to the input's dtype in the forward."""
    if trainable or not base.weight.is_floating_point():
        return torch.float32
    return base.weight.dtype


def init_adapter(
    model: nn.Module,
    config: Any,
    name: str = "adapter",
    seed: int = 0,
    metadata: dict[str, Any] | None = None,
) -> AdapterFile:
    """A new adapter for every Linear of `model` that `config` targets, initialised as its
    method prescribes (LoRA: B = 0; FLoRA and IA3: ones), reproducible from `seed`."""
    bank = BY_CONFIG[type(config)]
    layout = {n: s for n, s in linear_layout(model).items() if _targets(config, n)}
    if not layout:
        raise UserError(f"target_modules {config.target_modules!r} match no Linear module of this model")
    gen = torch.Generator().manual_seed(seed)
    tensors = {
        f"{PREFIX}{n}.{suffix}": t
        for n, (in_f, out_f) in layout.items()
        for suffix, t in bank.fresh(config, n, in_f, out_f, gen).items()
    }
    meta = {"name": name, "seed": seed, **(metadata or {})}
    return AdapterFile(
        name=name,
        method=bank.method,
        config=config,
        tensors=tensors,
        metadata=meta,
        content_hash=content_hash(config, tensors),
        path=None,
    )


def _targets(config: Any, module_name: str) -> bool:
    from harness.adapters.config import matches

    return matches(config.target_modules, module_name)
