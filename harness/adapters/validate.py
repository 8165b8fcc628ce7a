"""Checks that turn a bad adapter file into one line naming the file and the problem:
unknown tensors, missing partners, rank in config vs tensors, NaNs (file alone), and
missing or wrong-shaped tensors for a given base model (file against the model's Linears)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from harness.adapters.config import matches
from harness.errors import UserError

PREFIX = "base_model.model."  # PEFT's key prefix: base_model.model.<module name>.<suffix>
IN, OUT = -1, -2  # placeholders for the module's in/out features in expected shapes

Layout = Mapping[str, tuple[int, int]]  # Linear module name -> (in_features, out_features)


def split_key(key: str, suffixes: set[str]) -> tuple[str, str] | None:
    """`base_model.model.transformer.h.0.attn.c_attn.lora_A.weight` -> (module, suffix)."""
    body = key.removeprefix(PREFIX)
    for suffix in suffixes:
        if body.endswith(f".{suffix}"):
            return body[: -len(suffix) - 1], suffix
    return None


def check_file(where: str, bank: Any, config: Any, tensors: Mapping[str, torch.Tensor]) -> None:
    """Everything that can be checked without the base model."""
    if not tensors:
        raise UserError(f"{where}: holds no tensors; re-save the adapter")
    all_suffixes = set(bank.expected_shapes(config, "", IN, OUT))
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        found = split_key(key, all_suffixes)
        if found is None or not key.startswith(PREFIX):
            raise UserError(f"{where}: unexpected tensor {key} for a {bank.peft_type} adapter")
        module, suffix = found
        by_module.setdefault(module, {})[suffix] = tensor
        if not torch.isfinite(tensor).all():
            raise UserError(f"{where}: {key} contains NaN or infinite values; the adapter is corrupt")
    for module, got in by_module.items():
        expected = bank.expected_shapes(config, module, IN, OUT)
        for suffix in got.keys() - expected.keys():
            raise UserError(
                f"{where}: unexpected tensor {PREFIX}{module}.{suffix} for a {bank.peft_type} adapter"
            )
        for suffix in expected.keys() - got.keys():
            raise UserError(f"{where}: missing tensor {PREFIX}{module}.{suffix} (its partner is present)")
        sizes: dict[int, int] = {}
        for suffix, shape in expected.items():
            actual = tuple(got[suffix].shape)
            key = f"{PREFIX}{module}.{suffix}"
            if len(actual) != len(shape):
                raise UserError(f"{where}: {key} has shape {list(actual)}, expected {len(shape)} dimensions")
            for want, have in zip(shape, actual, strict=True):
                if want in (IN, OUT):
                    if sizes.setdefault(want, have) != have:
                        raise UserError(
                            f"{where}: {key} has shape {list(actual)}, inconsistent with its partner"
                        )
                elif want != have:
                    rank = getattr(config, "rank", None)
                    what = (
                        f"the config's rank r={rank}" if rank is not None else f"the expected {list(shape)}"
                    )
                    raise UserError(f"{where}: {key} has shape {list(actual)}, which does not match {what}")


def module_tensors(
    where: str, bank: Any, config: Any, tensors: Mapping[str, torch.Tensor], layout: Layout, model_desc: str
) -> dict[str, dict[str, torch.Tensor]]:
    """Split the file's tensors by the model's target modules: module -> {suffix: tensor}."""
    targeted = [name for name in layout if matches(config.target_modules, name)]
    if not targeted:
        raise UserError(
            f"{where}: target_modules {config.target_modules!r} match no Linear module of "
            f"{model_desc}; is the adapter for another base model?"
        )
    by_module, used = {}, set()
    for name in targeted:
        in_f, out_f = layout[name]
        by_module[name] = {}
        for suffix, shape in bank.expected_shapes(config, name, in_f, out_f).items():
            key = f"{PREFIX}{name}.{suffix}"
            if key not in tensors:
                raise UserError(f"{where}: missing tensor {key} for target module {name} of {model_desc}")
            if tuple(tensors[key].shape) != shape:
                raise UserError(
                    f"{where}: {key} has shape {list(tensors[key].shape)} but {model_desc} needs "
                    f"{list(shape)}; was the adapter trained for another base model?"
                )
            by_module[name][suffix] = tensors[key]
            used.add(key)
    orphans = sorted(set(tensors) - used)
    if orphans:
        more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
        raise UserError(
            f"{where}: tensor {orphans[0]}{more} matches no target module of {model_desc}; "
            "was the adapter trained for another base model?"
        )
    return by_module


def linear_layout(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    return {
        name: (m.in_features, m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
    }
