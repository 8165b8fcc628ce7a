"""Decode attention over shared prompt prefixes (one copy of a prompt's keys/values for all
of its samples).

A decode step attends, for each row, over two parts of its context:
- the row's own columns in the slot cache (its generated tokens; or its whole prompt too,
  for prompts that were copied into the slot), masked per row;
- the shared prefix of its prompt, if it has one: the prompt's keys/values, stored once in
  the cache's `PrefixPool` however many rows sample from it.

Each part gives a softmax-normalised output with its log-sum-exp; the two merge exactly
(the rescaling that flash attention and cascade inference use). The
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
# torch's fused CPU attention that also returns the log-sum-exp (a private op: None if absent)
CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
BASE_IMPLEMENTATION = "sdpa"  # what the shared-prefix function falls back to, and requires


@dataclass(frozen=True)
class PrefixLayout:
    """Which rows read which shared prefix in this decode step.

    keys/values: per layer [prefixes, kv_heads, length, head_dim]; mask: additive
    [prefixes, 1, 1, length] (padding columns of shorter prefixes hidden), None when all
    prefixes have the same length; gather: row index of each (prefix, group position)
    [prefixes * group], padded with row 0; position: each row's place in that padded list
    (0 for a row without a prefix); bare: which rows have no prefix (None: every row has one);
    rows: the rows that have one, in the padded list's order.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor | None
    gather: torch.Tensor
    position: torch.Tensor
    bare: torch.Tensor | None
    rows: torch.Tensor
    group: int  # rows per prefix after padding
    whole: bool = False  # one prefix read by every row of the batch, in order: no gather needed


def attention_with_lse(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       mask: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention [b, h, n, dim] (float32) and its log-sum-exp [b, h, n] (float32), the
    statistic that lets two attentions over disjoint columns merge exactly. On a CPU, torch's
    fused flash-attention kernel returns both in one pass (fewer passes over the scores than
    max, exp, sum and a product: 40 % less time at tiny's decode shapes); elsewhere, in plain ops."""
    if query.device.type == "cpu" and CPU_FLASH is not None:
        try:
            out, lse = CPU_FLASH(query, key, value, 0.0, False, attn_mask=mask, scale=scale)
            return out.float(), lse.float()
        except RuntimeError:  # a dtype or layout this build's kernel refuses: plain ops below
            pass
    scores = torch.matmul(query * scale, key.transpose(-1, -2)).float()
    if mask is not None:
        scores = scores + mask.float()
    lse = scores.logsumexp(dim=-1)
    weights = (scores - lse.unsqueeze(-1)).exp()
    return torch.matmul(weights.to(value.dtype), value).float(), lse


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
    q = query.reshape(rows, kv_heads, groups, dim)  # a kv head's query heads as its "tokens"
    if mask is not None:
        mask = mask.reshape(mask.shape[0], 1, 1, mask.shape[-1]).to(query.dtype)
    out_s, lse_s = attention_with_lse(q, key, value, mask, scaling)  # [rows, kv, groups, ...]

    prefixes, group = layout.keys[layer].shape[0], layout.group
    q_p = q if layout.whole else q[layout.gather]
    q_p = q_p.view(prefixes, group, kv_heads, groups, dim)
    q_p = q_p.permute(0, 2, 1, 3, 4).reshape(prefixes, kv_heads, group * groups, dim)
    prefix_mask = None if layout.mask is None else layout.mask.to(query.dtype)
    out_p, lse_p = attention_with_lse(q_p, layout.keys[layer], layout.values[layer], prefix_mask, scaling)

    def per_row(t: torch.Tensor) -> torch.Tensor:
        """[prefixes, kv, group * groups, x] -> [rows, kv, groups, x] (one gather)."""
        x = t.shape[-1]
        t = t.view(prefixes, kv_heads, group, groups, x).permute(0, 2, 1, 3, 4)
        t = t.reshape(prefixes * group, kv_heads, groups, x)
        return t if layout.whole else t[layout.position]

    out_p, lse_p = per_row(out_p), per_row(lse_p.unsqueeze(-1))
    if layout.bare is not None:  # rows without a prefix: its weight is zero (out_p is finite)
        lse_p = lse_p.masked_fill(layout.bare[:, None, None, None], float("-inf"))
    # the two parts' weights are exp(lse_s) and exp(lse_p): out_s's share is a sigmoid
    share_s = torch.sigmoid(lse_s.unsqueeze(-1) - lse_p)
    out = torch.lerp(out_p, out_s, share_s)
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
