"""What the three config dataclasses share: PEFT's target-module rule and reading PEFT's
adapter_config.json without silently dropping options we do not implement."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

Targets = tuple[str, ...] | str  # a list of names (exact or dotted suffix) or one regex (fullmatch)

# adapter_config.json fields that every method accepts and that change nothing in the math
NEUTRAL = {
    "peft_type",
    "task_type",
    "base_model_name_or_path",
    "revision",
    "inference_mode",
    "peft_version",
    "auto_mapping",
    "megatron_config",
    "megatron_core",
    "qalora_group_size",
    "init_lora_weights",
    "init_ia3_weights",
    "lora_dropout",
    "loftq_config",
    "eva_config",
    "corda_config",
    "astra_config",  # PEFT 0.22: Astra's initialisation (the saved weights carry its result)
    "arrow_config",
    "kasa_config",
    "lora_ga_config",
    "monteclora_config",
    "velora_config",
    "ensure_weight_tying",
    "layers_pattern",
    "trainable_token_indices",
}
# options that change the math: accepted only at these "off" values
OFF_VALUES: dict[str, tuple] = {
    "use_dora": (False, None),
    "rank_pattern": ({}, None),
    "alpha_pattern": ({}, None),
    "layers_to_transform": (None, []),
    "fan_in_fan_out": (False, None),
    "lora_bias": (False, None),
    "bias": ("none", None),
    "modules_to_save": (None, []),
    "exclude_modules": (None, []),
    "target_parameters": (None, []),
    "layer_replication": (None, []),
    "use_qalora": (False, None),
    "alora_invocation_tokens": (None, []),
    "use_bdlora": (None, False),
}


def matches(targets: Targets, module_name: str) -> bool:
    """PEFT's rule: a regex must match the whole name; a list entry must equal the name or be
    a dotted suffix of it (`c_attn` matches `transformer.h.0.attn.c_attn`)."""
    if isinstance(targets, str):
        return re.fullmatch(targets, module_name) is not None
    return any(module_name == t or module_name.endswith(f".{t}") for t in targets)


def as_targets(value: Any) -> Targets:
    """JSON list (any order, PEFT saves sets) or regex string -> a canonical, hashable value."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list | tuple | set) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"target_modules must be a non-empty list of names or a regex, not {value!r}")
    return tuple(sorted(set(value)))


def targets_json(targets: Targets) -> list[str] | str:
    return targets if isinstance(targets, str) else list(targets)


def split_fields(data: Mapping[str, Any], own: set[str]) -> dict[str, Any]:
    """The fields of `data` that the method reads; refuse math-changing options we do not run
    (so a DoRA or rank-pattern adapter is never applied wrongly) and unknown ones."""
    for key, value in data.items():
        if key in own or key in NEUTRAL:
            continue
        if key in OFF_VALUES:
            if value not in OFF_VALUES[key]:
                raise ValueError(f"unsupported option {key}={value!r} (flora-eval runs plain adapters only)")
            continue
        raise ValueError(f"unknown field {key!r} in adapter_config.json")
    return {key: data[key] for key in own if key in data}
