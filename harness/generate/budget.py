"""How many rows to decode together: a token budget that fits the device memory.

A row costs its KV cache (prompt + completion tokens × layers × kv heads × head dim × 2)
plus its logits and the sampling buffers (vocabulary × a few float32 copies). On a GPU the
budget is a share of the free memory; on a CPU memory is rarely the limit, so the row count
is capped where larger batches stop paying (measured with `flora-eval bench generate`).
"""

from __future__ import annotations

import torch

GPU_MEMORY_SHARE = 0.6  # of the free memory after the weights are loaded
CPU_MEMORY_BYTES = 8 << 30
MAX_ROWS = {"cuda": 256, "cpu": 64}
LOGIT_COPIES = 6  # logits, probabilities, sorted copy, cumsum, ... (float32)


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    """Keys + values of one token over all layers (multi-query attention: one kv head)."""
    layers = getattr(config, "n_layer", None) or config.num_hidden_layers
    hidden = getattr(config, "n_embd", None) or config.hidden_size
    heads = getattr(config, "n_head", None) or config.num_attention_heads
    if getattr(config, "multi_query", False):
        kv_heads = 1
    else:
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return 2 * layers * kv_heads * (hidden // heads) * torch.finfo(dtype).bits // 8


def row_bytes(model, max_len: int) -> int:
    dtype = next(model.parameters()).dtype
    vocab = model.config.vocab_size
    return max_len * kv_bytes_per_token(model.config, dtype) + LOGIT_COPIES * vocab * 4


def auto_slots(model, max_len: int) -> int:
    """Rows whose caches for `max_len` tokens fit the budget, at least 1."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        budget = int(free * GPU_MEMORY_SHARE)
    else:
        budget = CPU_MEMORY_BYTES
    rows = budget // max(row_bytes(model, max_len), 1)
    return int(max(1, min(rows, MAX_ROWS.get(device.type, MAX_ROWS["cpu"]))))
