"""The decode batch's KV cache: one slot per row, rows right-aligned, per-row validity mask.

Layout per layer: keys/values [slots, kv_heads, capacity, head_dim] (multi-query attention
has one kv head). Every row's latest token sits in the same column, so a decode step
appends one column for all rows; a row's prompt is written right-aligned into the columns
before it and the columns left of its prompt are marked invalid (left padding).

Speed tricks, all here:
- preallocated buffers that grow by doubling: `update` writes one column in place instead
  of the `torch.cat` per step that DynamicLayer does (a full cache copy every token);
- leading columns that no row uses any more are trimmed (`trim_left`), so the cache stays
  as long as the longest live row, not as long as the whole run;
- finished rows' slots are reused by new rows (`place`) and dropped at the end (`select_rows`).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

MIN_CAPACITY = 64


class SlotLayer(DynamicLayer):
    """One layer's slots. Subclasses DynamicLayer so transformers treats it as full attention."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        super().__init__()
        self.device = keys.device
        self.buf_k, self.buf_v, self.length = keys, values, length
        self.is_initialized = True
        self._views()

    def _views(self) -> None:
        self.keys = self.buf_k[:, :, : self.length]
        self.values = self.buf_v[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        new = key_states.shape[-2]
        self.reserve(self.length + new)
        self.buf_k[:, :, self.length : self.length + new] = key_states
        self.buf_v[:, :, self.length : self.length + new] = value_states
        self.length += new
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def reserve(self, columns: int, shift: int = 0) -> None:
        """Make room for `columns` columns; `shift` moves the filled ones right (left padding)."""
        capacity = self.buf_k.shape[2]
        if columns <= capacity and shift == 0:
            return
        capacity = max(capacity, MIN_CAPACITY)
        while capacity < columns:
            capacity *= 2
        self.buf_k = _moved(self.buf_k, capacity, self.length, shift)
        self.buf_v = _moved(self.buf_v, capacity, self.length, shift)
        self.length += shift
        self._views()

    def trim_left(self, columns: int) -> None:
        keep = self.length - columns
        self.buf_k[:, :, :keep] = self.buf_k[:, :, columns : self.length].clone()
        self.buf_v[:, :, :keep] = self.buf_v[:, :, columns : self.length].clone()
        self.length = keep
        self._views()

    def select_rows(self, rows: torch.Tensor) -> None:
        self.buf_k, self.buf_v = self.buf_k[rows], self.buf_v[rows]
        self._views()

    def place(self, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Write one prompt's keys/values [1, heads, L, dim] right-aligned into `slots`."""
        start = self.length - keys.shape[2]
        self.buf_k[slots, :, start : self.length] = keys.to(self.buf_k.dtype)
        self.buf_v[slots, :, start : self.length] = values.to(self.buf_v.dtype)


def _moved(buf: torch.Tensor, capacity: int, length: int, shift: int) -> torch.Tensor:
    out = buf.new_zeros(buf.shape[0], buf.shape[1], capacity, buf.shape[3])
    out[:, :, shift : shift + length] = buf[:, :, :length]
    return out


class SlotCache(Cache):
    """All layers' slots plus `valid` [slots, capacity]: which columns each row attends to."""

    def __init__(self, prompt_kv: list[tuple[torch.Tensor, torch.Tensor]], slots: int):
        """An empty cache of `slots` rows shaped like a prefilled prompt's keys/values."""
        layers = []
        for keys, _values in prompt_kv:
            _, heads, _, dim = keys.shape
            buf_k = keys.new_zeros(slots, heads, MIN_CAPACITY, dim)
            layers.append(SlotLayer(buf_k, torch.zeros_like(buf_k), 0))
        super().__init__(layers=layers)
        self.valid = torch.zeros(slots, MIN_CAPACITY, dtype=torch.bool, device=prompt_kv[0][0].device)

    @property
    def length(self) -> int:
        return self.layers[0].length

    @property
    def slots(self) -> int:
        return self.valid.shape[0]

    def place(self, slots: torch.Tensor, prompt_kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Put one prompt into `slots` (a LongTensor), left-padding every row if it is longer."""
        prompt_len = prompt_kv[0][0].shape[2]
        if prompt_len > self.length:
            self._pad_left(prompt_len - self.length)
        for layer, (keys, values) in zip(self.layers, prompt_kv, strict=True):
            layer.place(slots, keys, values)
        self.valid[slots] = False
        self.valid[slots, self.length - prompt_len : self.length] = True

    def next_mask(self) -> torch.Tensor:
        """Mark the column the next decode step writes as valid; the [slots, length + 1] mask."""
        columns = self.length + 1
        self._reserve_valid(columns)
        self.valid[:, self.length] = True
        return self.valid[:, :columns]

    def unused_prefix(self) -> int:
        """How many leading columns no row attends to."""
        used = self.valid[:, : self.length].any(dim=0)
        return int(used.to(torch.int8).argmax()) if bool(used.any()) else self.length

    def trim_left(self, columns: int) -> None:
        if columns <= 0:
            return
        for layer in self.layers:
            layer.trim_left(columns)
        keep = self.length
        self.valid[:, :keep] = self.valid[:, columns : columns + keep].clone()
        self.valid[:, keep:] = False

    def select_rows(self, rows: torch.Tensor) -> None:
        for layer in self.layers:
            layer.select_rows(rows)
        self.valid = self.valid[rows]

    def _pad_left(self, columns: int) -> None:
        old = self.length
        for layer in self.layers:
            layer.reserve(old + columns, shift=columns)
        valid = torch.zeros(self.slots, self.layers[0].buf_k.shape[2], dtype=torch.bool,
                            device=self.valid.device)
        valid[:, columns : columns + old] = self.valid[:, :old]
        self.valid = valid

    def _reserve_valid(self, columns: int) -> None:
        for layer in self.layers:
            layer.reserve(columns)
        capacity = self.layers[0].buf_k.shape[2]
        if self.valid.shape[1] < capacity:
            grown = torch.zeros(self.slots, capacity, dtype=torch.bool, device=self.valid.device)
            grown[:, : self.valid.shape[1]] = self.valid
            self.valid = grown
