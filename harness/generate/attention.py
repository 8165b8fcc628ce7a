"""Decode attention over shared prompt prefixes (one copy of a prompt's keys/values for all
of its samples).

A decode step attends, for each row, over two parts of its context:
- the row's own columns in the slot cache (its generated tokens; or its whole prompt too,
  for prompts that were copied into the slot), masked per row;
- the shared prefix of its prompt, if it has one: the prompt's keys/values, stored once in
  the cache's `PrefixPool` however many rows sample from it.

Each part gives a softmax-normalised output with its log-sum-exp statistics (max, sum); the
two merge exactly (the rescaling that flash attention and cascade inference use). The
prefix part is one batched matrix product per layer for all prefixes (rows grouped by
prefix, padded to the largest group), so reading a 300-token prompt costs once per prompt,
not once per sample: for 100 samples per problem that removes most of a decode step's
memory traffic.

The function is registered with transformers' `AttentionInterface` under `SHARED_PREFIX`
and is selected only while the engine decodes (`shared_prefix_attention`); every call
without a prefix layout (prefill, training, other users of the model) falls through to
transformers' SDPA function.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

SHARED_PREFIX = "flora_shared_prefix"
BASE_IMPLEMENTATION = "sdpa"  # what the shared-prefix function falls back to, and requires


@dataclass(frozen=True)
class PrefixLayout:
    """Which rows read which shared prefix in this decode step.

    keys/values: per layer [prefixes, kv_heads, length, head_dim]; mask: additive
    [prefixes, 1, 1, length] (padding columns of shorter prefixes hidden); gather: row index
    of each (prefix, group position) [prefixes * group], padded with row 0; take: the
    positions in that padded list that are real rows; rows: those rows, in the same order.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor
    gather: torch.Tensor
    take: torch.Tensor
    rows: torch.Tensor
    group: int  # rows per prefix after padding
    whole: bool = False  # one prefix read by every row of the batch, in order: no gather needed


def _softmax_parts(scores: torch.Tensor, values: torch.Tensor):
    """Unnormalised attention output with its statistics: (max, sum of exp, exp @ values)."""
    top = scores.amax(dim=-1, keepdim=True)
    weights = (scores - top).exp()
    return top, weights.sum(dim=-1, keepdim=True), torch.matmul(weights.to(values.dtype), values).float()


def split_prefix_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           mask: torch.Tensor | None, layout: PrefixLayout, layer: int,
                           scaling: float) -> torch.Tensor:
    """Attention of one new token per row over its slot columns and its shared prefix.

    query [rows, heads, 1, dim]; key/value [rows, kv_heads, columns, dim]; mask additive,
    broadcastable to [rows, 1, 1, columns]. Returns [rows, 1, heads, dim] (transformers'
    attention-function layout)."""
    rows, heads, q_len, dim = query.shape
    if q_len != 1:
        raise ValueError(f"shared-prefix attention decodes one token per row, got {q_len}")
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    q = query.reshape(rows, kv_heads, groups, dim) * scaling

    scores = torch.matmul(q, key.transpose(-1, -2)).float()  # [rows, kv, groups, columns]
    if mask is not None:
        scores = scores + mask.reshape(mask.shape[0], 1, 1, mask.shape[-1]).float()
    top_s, sum_s, out_s = _softmax_parts(scores, value)

    prefixes, group = layout.mask.shape[0], layout.group
    q_p = q if layout.whole else q[layout.gather]
    q_p = q_p.view(prefixes, group, kv_heads, groups, dim)
    q_p = q_p.permute(0, 2, 1, 3, 4).reshape(prefixes, kv_heads, group * groups, dim)
    keys, values = layout.keys[layer], layout.values[layer]
    scores_p = torch.matmul(q_p, keys.transpose(-1, -2)).float() + layout.mask.float()
    parts = _softmax_parts(scores_p, values)  # each [prefixes, kv, group * groups, x]

    def per_row(t: torch.Tensor, fill: float) -> torch.Tensor:
        x = t.shape[-1]
        t = t.view(prefixes, kv_heads, group, groups, x).permute(0, 2, 1, 3, 4)
        t = t.reshape(prefixes * group, kv_heads, groups, x)
        if layout.whole:
            return t
        t = t[layout.take]
        full = t.new_full((rows, kv_heads, groups, x), fill)
        full[layout.rows] = t
        return full

    top_p = per_row(parts[0], float("-inf"))
    sum_p, out_p = per_row(parts[1], 0.0), per_row(parts[2], 0.0)

    top = torch.maximum(top_s, top_p)
    scale_s, scale_p = (top_s - top).exp(), (top_p - top).exp()
    out = (scale_s * out_s + scale_p * out_p) / (scale_s * sum_s + scale_p * sum_p)
    return out.to(query.dtype).reshape(rows, heads, 1, dim).transpose(1, 2)


def shared_prefix_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                                    scaling: float | None = None, shared_prefixes: PrefixLayout | None = None,
                                    **kwargs):
    """transformers attention function: the split form when the engine passes a layout."""
    if shared_prefixes is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = split_prefix_attention(query, key, value, attention_mask, shared_prefixes, module.layer_idx, scale)
    return out, None


AttentionInterface.register(SHARED_PREFIX, shared_prefix_attention_forward)
AttentionMaskInterface.register(SHARED_PREFIX, ALL_MASK_ATTENTION_FUNCTIONS[BASE_IMPLEMENTATION])


def supports_shared_prefix(model) -> bool:
    """Models running transformers' SDPA attention (the function falls back to it) whose class
    can switch its attention function at run time (transformers' own check)."""
    if getattr(model.config, "_attn_implementation", None) not in (BASE_IMPLEMENTATION, SHARED_PREFIX):
        return False
    can_switch = getattr(model, "_can_set_attn_implementation", None)
    return bool(can_switch()) if can_switch is not None else False


@contextmanager
def shared_prefix_attention(model) -> Iterator[None]:
    """Select the shared-prefix attention function for the duration; restore afterwards."""
    previous = model.config._attn_implementation
    if previous != SHARED_PREFIX:
        model.set_attn_implementation(SHARED_PREFIX)
        if model.config._attn_implementation != SHARED_PREFIX:
            raise RuntimeError(f"{type(model).__name__} did not switch to the shared-prefix attention")
    try:
        yield
    finally:
        if previous != SHARED_PREFIX:
            model.set_attn_implementation(previous)
