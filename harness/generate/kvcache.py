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
- finished rows' slots are reused by new rows (`place`) and dropped at the end (`select_rows`);
- a prompt with many samples is stored once, in the `PrefixPool`, and shared by all of its
  rows (`place(..., share=key)`): its rows' slots then hold only their generated tokens and
  decode attention reads the prompt once per step (harness.generate.attention).
"""

from __future__ import annotations

from collections.abc import Hashable

import torch
from transformers.cache_utils import Cache, DynamicLayer

from harness.generate.attention import PrefixLayout

MIN_CAPACITY = 64
PREFIX_ENTRIES = 32  # shared prompts held at once; beyond that prompts are copied into slots
FIRST_ENTRIES = 4  # the pool's first allocation (it doubles when full)


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


class PrefixPool:
    """Shared prompts, one copy each: per layer keys/values [entries, kv_heads, capacity, dim],
    prompts left-aligned, plus each entry's length, owner key and live-row count. Free
    entries are reused lowest first, so the live ones stay at the front. The entries grow by
    doubling up to `max_entries` (an evaluation rarely holds more than a few prompts at once)."""

    def __init__(self, like: list[tuple[torch.Tensor, torch.Tensor]], max_entries: int = PREFIX_ENTRIES):
        entries = min(FIRST_ENTRIES, max_entries)
        self.max_entries = max_entries
        self.keys = [k.new_zeros(entries, k.shape[1], MIN_CAPACITY, k.shape[3]) for k, _ in like]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.lengths = [0] * entries
        self.owners: list[Hashable | None] = [None] * entries
        self.rows = [0] * entries

    def _grow_entries(self) -> None:
        old = len(self.owners)
        new = min(2 * old, self.max_entries)
        self.keys = [torch.cat([k, k.new_zeros(new - old, *k.shape[1:])]) for k in self.keys]
        self.values = [torch.cat([v, v.new_zeros(new - old, *v.shape[1:])]) for v in self.values]
        self.lengths += [0] * (new - old)
        self.owners += [None] * (new - old)
        self.rows += [0] * (new - old)

    def find(self, owner: Hashable) -> int | None:
        return self.owners.index(owner) if owner in self.owners else None

    def add(self, owner: Hashable, prompt_kv: list[tuple[torch.Tensor, torch.Tensor]]) -> int | None:
        """Store a prompt's keys/values [1, kv_heads, length, dim]; None when the pool is full."""
        if None not in self.owners:
            if len(self.owners) >= self.max_entries:
                return None
            self._grow_entries()
        entry = self.owners.index(None)
        length = prompt_kv[0][0].shape[2]
        capacity = self.keys[0].shape[2]
        if length > capacity:
            while capacity < length:
                capacity *= 2
            self.keys = [_moved(k, capacity, k.shape[2], 0) for k in self.keys]
            self.values = [_moved(v, capacity, v.shape[2], 0) for v in self.values]
        for buf_k, buf_v, (keys, values) in zip(self.keys, self.values, prompt_kv, strict=True):
            buf_k[entry, :, :length] = keys[0].to(buf_k.dtype)
            buf_v[entry, :, :length] = values[0].to(buf_v.dtype)
        self.lengths[entry], self.owners[entry], self.rows[entry] = length, owner, 0
        return entry

    def release(self, entry: int) -> None:
        self.lengths[entry], self.owners[entry], self.rows[entry] = 0, None, 0

    def layout(self, row_prefix: list[int]) -> PrefixLayout:
        """The step's grouping: rows by prefix entry, each group padded to the largest."""
        members: dict[int, list[int]] = {}
        for row, entry in enumerate(row_prefix):
            if entry >= 0:
                members.setdefault(entry, []).append(row)
        entries = max(members) + 1
        group = max(len(rows) for rows in members.values())
        gather, rows = [], []
        position = [0] * len(row_prefix)
        for entry in range(entries):
            mine = members.get(entry, [])
            for j in range(group):
                if j < len(mine):
                    position[mine[j]] = len(gather)
                    rows.append(mine[j])
                gather.append(mine[j] if j < len(mine) else 0)
        length = max(self.lengths[:entries])
        device, dtype = self.keys[0].device, self.keys[0].dtype
        mask = None
        if min(self.lengths[:entries]) < length:
            columns = torch.arange(length, device=device)
            hidden = columns[None, :] >= torch.tensor(self.lengths[:entries], device=device)[:, None]
            mask = torch.zeros(entries, 1, 1, length, dtype=dtype, device=device)
            mask.masked_fill_(hidden[:, None, None, :], torch.finfo(dtype).min)
        return PrefixLayout(
            keys=[k[:entries, :, :length] for k in self.keys],
            values=[v[:entries, :, :length] for v in self.values],
            mask=mask,
            gather=torch.tensor(gather, device=device),
            position=torch.tensor(position, device=device),
            bare=None if len(rows) == len(row_prefix) else torch.tensor(
                [entry < 0 for entry in row_prefix], device=device),
            rows=torch.tensor(rows, device=device),
            group=group,
            whole=entries == 1 and group == len(row_prefix),
        )


class SlotCache(Cache):
    """All layers' slots plus `valid` [slots, capacity]: which columns each row attends to."""

    def __init__(self, prompt_kv: list[tuple[torch.Tensor, torch.Tensor]], slots: int,
                 prefix_entries: int = PREFIX_ENTRIES):
        """An empty cache of `slots` rows shaped like a prefilled prompt's keys/values."""
        layers = []
        for keys, _values in prompt_kv:
            _, heads, _, dim = keys.shape
            buf_k = keys.new_zeros(slots, heads, MIN_CAPACITY, dim)
            layers.append(SlotLayer(buf_k, torch.zeros_like(buf_k), 0))
        super().__init__(layers=layers)
        self.valid = torch.zeros(slots, MIN_CAPACITY, dtype=torch.bool, device=prompt_kv[0][0].device)
        self.row_prefix = [-1] * slots  # each row's PrefixPool entry, -1: none (prompt in its slot)
        self.pool: PrefixPool | None = None
        self.prefix_entries = prefix_entries
        self._layout: PrefixLayout | None = None
        self._layout_stale = True

    @property
    def length(self) -> int:
        return self.layers[0].length

    @property
    def slots(self) -> int:
        return self.valid.shape[0]

    def place(self, slots: torch.Tensor, prompt_kv: list[tuple[torch.Tensor, torch.Tensor]],
              share: Hashable | None = None) -> None:
        """Put one prompt into `slots` (a LongTensor). With a `share` key the prompt is kept
        once in the prefix pool (found again by that key) and the rows start with empty slots;
        otherwise (or when the pool is full) it is copied into every slot, left-padding every
        row if it is longer than the cache."""
        if share is not None and self._place_shared(slots, prompt_kv, share):
            return
        prompt_len = prompt_kv[0][0].shape[2]
        if prompt_len > self.length:
            self._pad_left(prompt_len - self.length)
        for layer, (keys, values) in zip(self.layers, prompt_kv, strict=True):
            layer.place(slots, keys, values)
        self.valid[slots] = False
        self.valid[slots, self.length - prompt_len : self.length] = True

    def _place_shared(self, slots: torch.Tensor, prompt_kv, share: Hashable) -> bool:
        if self.pool is None:
            self.pool = PrefixPool(prompt_kv, self.prefix_entries)
        entry = self.pool.find(share)
        if entry is None:
            entry = self.pool.add(share, prompt_kv)
        if entry is None:
            return False
        for slot in slots.tolist():
            self.row_prefix[slot] = entry
        self.pool.rows[entry] += len(slots)
        self.valid[slots] = False
        self._layout_stale = True
        return True

    def free(self, slot: int) -> None:
        """A row finished: its columns are no longer attended to, its prefix loses a reader."""
        self.valid[slot] = False
        entry = self.row_prefix[slot]
        if entry >= 0:
            self.row_prefix[slot] = -1
            self.pool.rows[entry] -= 1
            if self.pool.rows[entry] == 0:
                self.pool.release(entry)
            self._layout_stale = True

    def shared_layout(self) -> PrefixLayout | None:
        """This step's rows-to-prefix grouping, or None when no row reads a shared prefix."""
        if self._layout_stale:
            shared = any(entry >= 0 for entry in self.row_prefix)
            self._layout = self.pool.layout(self.row_prefix) if shared else None
            self._layout_stale = False
        return self._layout

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
        """Keep rows `rows` in that order (each at most once); the others are freed."""
        for layer in self.layers:
            layer.select_rows(rows)
        self.valid = self.valid[rows]
        self.row_prefix = [self.row_prefix[i] for i in rows.tolist()]
        if self.pool is not None:
            for entry in range(len(self.pool.rows)):
                self.pool.rows[entry] = self.row_prefix.count(entry)
                if self.pool.rows[entry] == 0 and self.pool.owners[entry] is not None:
                    self.pool.release(entry)
        self._layout_stale = True

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
