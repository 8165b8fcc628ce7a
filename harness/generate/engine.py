"""The sampling engine: prefill each prompt once, decode many rows, continuous batching.

    requests ──► prefill (once per prompt) ──► place samples into free slots ──►
    decode_step (all slots, one token) ──► sample_tokens ──► stop check ──► retire / refill

A `Request` is one (problem, adapter) prompt and the sample indices it still needs. Its
prompt is prefilled once; the prompt's keys/values are copied into every slot that one of
its samples takes, and its last-position logits give each sample's first token. Rows stop
on their own (end of text, a stop token, max tokens) and leave the batch at once; waiting
samples take their slots, so one batch mixes problems, languages and adapters.

Speed tricks, each named where it lives: prefill once per prompt, the adapters of one
problem in one batch (`prefill`, `same_prompt_groups`), the prompt's keys/values kept once
and shared by its samples' rows (`SlotCache.place(share=...)`, attention.py), preallocated
KV slots with trimming (kvcache.py), top-p over a top-k prefix (sampling.py), incremental
stop detection on a short tail of tokens and only after tokens that can end a stop
(`_stopped`), dropping idle slots at the end of the work (`DecodeBatch.compact`), logits
for the last position only (`logits_to_keep=1`), adapter routing set only when it changes.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from harness.generate.attention import SHARED_PREFIX, shared_prefix_attention, supports_shared_prefix
from harness.generate.kvcache import SlotCache
from harness.generate.sampling import sample_tokens, sample_uniforms
from harness.generate.stops import stop_index, truncate_at_stop
from harness.generate.telemetry import GenerationTelemetry

TRIM_EVERY = 16  # decode steps between checks for unused leading cache columns
PREFILL_GROUP = 16  # requests sharing one prompt (adapters of one problem) prefilled together
BASE_ROW = -1  # adapter index of a base-model row
SHARE_MIN_SAMPLES = 4  # a prompt with this many samples keeps one shared copy of its keys/values

SetRows = Callable[[torch.Tensor], None]


@dataclass(frozen=True)
class Request:
    """One prompt (a problem under one adapter) and the samples it still needs."""

    key: tuple  # the caller's handle, e.g. (lang, problem, adapter)
    prompt_ids: tuple[int, ...]
    adapter_index: int  # BASE_ROW for the base model
    samples: tuple[tuple[int, int], ...]  # (sample index, seed)
    stop_tokens: tuple[str, ...] = ()
    max_new_tokens: int | None = None  # this request's own cap (≤ the engine's); None: the engine's
    temperature: float | None = None  # this request's own sampling settings; None: the engine's
    top_p: float | None = None
    end_ids: tuple[int, ...] = ()  # tokens that also end a row, besides the end of text (a chat
    # template's end of turn)


@dataclass(frozen=True)
class Sample:
    """One finished sample: its completion (cut at the earliest stop token), raw tokens, and
    why it ended ("stop": end of text or a stop token; "length": its token limit)."""

    index: int
    text: str
    tokens: tuple[int, ...]
    finish_reason: str = "stop"


@dataclass(frozen=True)
class EngineConfig:
    temperature: float
    top_p: float
    max_new_tokens: int
    slots: int  # rows decoded together
    max_positions: int = 1 << 30  # the model's context length: prompt + completion stop there
    ignore_eos: bool = False  # benchmarks: every row decodes exactly max_new_tokens
    share_prefixes: bool | None = None  # one copy of a prompt's keys/values; None: where it pays


@dataclass
class _Row:
    request: Request
    index: int
    tokens: list[int] = field(default_factory=list)
    limit: int = 0  # tokens after which the row ends: its max tokens or the context's end


@dataclass
class _Prompt:
    request: Request
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    logits: torch.Tensor  # [vocab] at the prompt's last position
    todo: deque  # (index, seed) not yet placed
    serial: int = 0  # this engine's number for the prompt: its key in the shared-prefix pool


class Engine:
    """Continuous-batching sampler over a transformers causal LM (GPTBigCode and alike)."""

    def __init__(self, model, tokenizer, config: EngineConfig, set_rows: SetRows | None = None,
                 telemetry: GenerationTelemetry | None = None):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.set_rows = set_rows
        self.telemetry = telemetry or GenerationTelemetry()
        self.device = next(model.parameters()).device
        self.dtype = model.get_input_embeddings().weight.dtype  # activations (not 8-bit weights)
        self.eos = tokenizer.eos_token_id
        wanted = config.share_prefixes
        if wanted is None:
            wanted = sharing_pays(model, self.device)
        self.share_prefixes = wanted and supports_shared_prefix(model)
        self._routed: torch.Tensor | None = None  # the adapter rows last given to set_rows
        self._serials = itertools.count()
        self._stop_enders: dict[tuple[str, ...], list[bool]] = {}

    # -- the three model-facing functions ----------------------------------------------
    @torch.inference_mode()
    def prefill(self, requests: list[Request]) -> list[_Prompt]:
        """Run prompts in one forward (one row each, each with its own adapter); keep each
        row's keys/values and last logits. Prompts of different lengths are padded on the
        right: causal attention keeps a row's real tokens from seeing its padding, so each
        row's keys/values (cut to its length) and last logits are those of the prompt alone."""
        start = time.perf_counter()
        lengths = [len(r.prompt_ids) for r in requests]
        longest = max(lengths)
        pad = self.eos if self.eos is not None else 0
        ids = torch.tensor([list(r.prompt_ids) + [pad] * (longest - n) for r, n in zip(requests, lengths,
                                                                                         strict=True)],
                           device=self.device)
        self._set_rows([r.adapter_index for r in requests])
        ragged = min(lengths) != longest
        last = sorted(set(n - 1 for n in lengths))
        keep = torch.tensor(last, device=self.device) if ragged else 1
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=keep)
        column = {position: i for i, position in enumerate(last)}
        prompts = [
            _Prompt(request, [(layer.keys[i:i + 1, :, :n], layer.values[i:i + 1, :, :n])
                              for layer in out.cache.layers],
                    out.logits[i, column[n - 1] if ragged else -1].float(), deque(request.samples),
                    next(self._serials))
            for i, (request, n) in enumerate(zip(requests, lengths, strict=True))
        ]
        self.telemetry.add("prefill", time.perf_counter() - start, tokens=sum(lengths), count=len(requests))
        return prompts

    @torch.inference_mode()
    def decode_step(self, cache: SlotCache, tokens: torch.Tensor, positions: torch.Tensor,
                    adapters: torch.Tensor) -> torch.Tensor:
        """One new token for every slot: logits [slots, vocab]. Rows that read a shared
        prefix need the shared-prefix attention selected (`generate` does it)."""
        valid = cache.next_mask()
        mask = torch.zeros(valid.shape, dtype=self.dtype, device=self.device)
        mask.masked_fill_(~valid, torch.finfo(self.dtype).min)
        self._set_rows(adapters)
        extra = {}
        layout = cache.shared_layout()
        if layout is not None:
            if self.model.config._attn_implementation != SHARED_PREFIX:
                raise RuntimeError("rows read shared prefixes: decode inside shared_prefix_attention(model)")
            extra["shared_prefixes"] = layout
        out = self.model(input_ids=tokens[:, None], position_ids=positions[:, None],
                         attention_mask=mask[:, None, None, :], cache=cache, use_cache=True,
                         logits_to_keep=1, **extra)
        return out.logits[:, -1].float()

    def sample(self, logits: torch.Tensor, uniforms: torch.Tensor,
               requests: list[Request] | None = None) -> torch.Tensor:
        """One token per row; rows of requests with their own temperature or top-p (a
        server's) are sampled in groups of equal settings, each row as it would be alone."""
        settings = self._settings(requests)
        if settings is None:
            return sample_tokens(logits, self.config.temperature, self.config.top_p, uniforms)
        tokens = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
        for (temperature, top_p), rows in settings.items():
            index = torch.tensor(rows, device=logits.device)
            tokens[index] = sample_tokens(logits[index], temperature, top_p, uniforms[rows])
        return tokens

    def _settings(self, requests: list[Request] | None) -> dict[tuple[float, float], list[int]] | None:
        if not requests or all(r.temperature is None and r.top_p is None for r in requests):
            return None
        groups: dict[tuple[float, float], list[int]] = {}
        for i, r in enumerate(requests):
            key = (self.config.temperature if r.temperature is None else r.temperature,
                   self.config.top_p if r.top_p is None else r.top_p)
            groups.setdefault(key, []).append(i)
        return groups

    # -- the loop ---------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, requests: Iterable[Request]) -> Iterator[tuple[Request, Sample]]:
        """Yield (request, sample) as each sample finishes; order depends on the batch,
        content does not."""
        with shared_prefix_attention(self.model) if self.share_prefixes else nullcontext():
            yield from self._generate(requests)

    def _generate(self, requests: Iterable[Request]) -> Iterator[tuple[Request, Sample]]:
        waiting = same_prompt_groups(requests, PREFILL_GROUP)
        batch = DecodeBatch(self)
        prompts: deque[_Prompt] = deque()  # prefilled, with samples still to place
        exhausted = False
        while True:
            # refill free slots with waiting samples (continuous batching)
            while not exhausted and batch.free_slots():
                while prompts and not prompts[0].todo:
                    prompts.popleft()
                if prompts:
                    yield from batch.place(prompts[0])
                    continue
                group = next(waiting, None)
                if group is None:
                    exhausted = True
                else:
                    prompts.extend(self.prefill(group))
            if not batch.active():
                return
            if exhausted:
                batch.compact()
            yield from batch.step()

    def _set_rows(self, adapters) -> None:
        """Route each row to its adapter; skipped while the routing is unchanged (speed trick:
        between refills every step has the same rows)."""
        if self.set_rows is None:
            return
        rows = torch.as_tensor(adapters, dtype=torch.long).cpu()
        if self._routed is None or not torch.equal(self._routed, rows):
            self.set_rows(rows)
            self._routed = rows.clone()

    # -- per-row finish rules -----------------------------------------------------------------
    def token_limit(self, request: Request) -> int:
        """How many tokens a row of `request` may generate: the engine's and the request's max
        new tokens, and no further than the model's context."""
        limit = self.config.max_new_tokens
        if request.max_new_tokens is not None:
            limit = min(limit, request.max_new_tokens)
        return min(limit, self.config.max_positions - len(request.prompt_ids))

    def finished(self, row: _Row) -> bool:
        """End of text, max tokens (`row.limit`), or a stop token in the completion so far."""
        if len(row.tokens) >= row.limit:
            return True
        if self._ended(row):
            return True
        return self._stopped(row)

    def _ended(self, row: _Row) -> bool:
        """The row's last token ends its text: the end of text, or an end of turn."""
        if self.config.ignore_eos or not row.tokens:
            return False
        return row.tokens[-1] == self.eos or row.tokens[-1] in row.request.end_ids

    def _stopped(self, row: _Row) -> bool:
        """Speed tricks: only a token whose text holds a stop token's last character can end
        one (`_enders`); then look in the decoded tail only (long enough to hold any stop
        token), and confirm on the whole completion before retiring the row. A stop missed
        here would only cost decode steps: `result` cuts the whole text at the earliest stop."""
        stops = row.request.stop_tokens
        if not stops:
            return False
        enders = self._enders(stops)
        token = row.tokens[-1]
        if token < len(enders) and not enders[token]:
            return False
        tail = max(len(s) for s in stops) + 2
        if not any(s in self.tokenizer.decode(row.tokens[-tail:]) for s in stops):
            return False
        return stop_index(self.text(row.tokens), stops) is not None

    def _enders(self, stops: tuple[str, ...]) -> list[bool]:
        """Per vocabulary id: can this token end one of `stops`? Its text holds a stop's last
        character, or, when such a character is not ASCII, an incomplete UTF-8 sequence that
        may become one (an ASCII byte always decodes to itself). Built once per stop set."""
        if stops not in self._stop_enders:
            last = {s[-1] for s in stops if s}
            partial_may_end = any(not c.isascii() for c in last)
            pieces = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
            self._stop_enders[stops] = [
                any(c in piece for c in last) or (partial_may_end and "\ufffd" in piece) for piece in pieces]
        return self._stop_enders[stops]

    def text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def result(self, row: _Row) -> Sample:
        ended = self._ended(row)
        tokens = row.tokens[:-1] if ended else row.tokens
        full = self.text(tokens)
        text = truncate_at_stop(full, row.request.stop_tokens)
        cut = not ended and len(row.tokens) >= row.limit and len(text) == len(full)
        return Sample(row.index, text, tuple(tokens), "length" if cut else "stop")


def sharing_pays(model, device: torch.device) -> bool:
    """Shared prompts save reading a prompt's keys/values once per sample but cost a few more
    operations per layer. On a CPU they pay (measured: bench generate). On a GPU a
    multi-query model (StarCoder: one kv head) reads little and decoding is bound by kernel
    launches, so the prompt is copied; models with several kv heads share. (Not measured on
    a GPU yet.)"""
    if device.type == "cpu":
        return True
    return not getattr(model.config, "multi_query", False) and getattr(
        model.config, "num_key_value_heads", 2) > 1


def same_prompt_groups(requests: Iterable[Request], limit: int) -> Iterator[list[Request]]:
    """Consecutive requests with the same prompt, at most `limit` together (speed trick: the
    adapters of one problem share a prefill batch with no padding)."""
    group: list[Request] = []
    for request in requests:
        if group and (request.prompt_ids != group[0].prompt_ids or len(group) == limit):
            yield group
            group = []
        group.append(request)
    if group:
        yield group


class DecodeBatch:
    """The slots being decoded: per-slot rows, next input token, position, adapter, uniforms.

    `Engine.generate` drives one (pull: refill whenever a slot frees); a server drives one
    itself (`harness.bench.serve_loop`: place requests as they arrive, `resize` with the
    load). Both go through `place` and `step`, which yield each sample as it finishes."""

    def __init__(self, engine: Engine, slots: int | None = None):
        self.engine = engine
        self.size = slots or engine.config.slots
        self.cache: SlotCache | None = None
        self.rows: list[_Row | None] = []
        self.steps = 0

    def free_slots(self) -> list[int]:
        if self.cache is None:
            return list(range(self.size))
        return [i for i, row in enumerate(self.rows) if row is None]

    def live(self) -> list[int]:
        return [i for i, row in enumerate(self.rows) if row is not None]

    def active(self) -> int:
        return sum(row is not None for row in self.rows)

    def _allocate(self, prompt: _Prompt) -> None:
        n, device = self.size, self.engine.device
        self.cache = SlotCache(prompt.kv, n)
        self.rows = [None] * n
        self.next_tokens = torch.zeros(n, dtype=torch.long, device=device)
        self.positions = torch.zeros(n, dtype=torch.long, device=device)
        self.adapters = torch.full((n,), BASE_ROW, dtype=torch.long)  # CPU: only set_rows reads it
        self.uniforms = torch.zeros(n, self.engine.config.max_new_tokens, dtype=torch.float64)
        self.counts = torch.zeros(n, dtype=torch.long)  # tokens each slot's row has (CPU)
        self.max_position = min(self.engine.config.max_positions, 1 << 62) - 1

    def place(self, prompt: _Prompt) -> Iterator[tuple[Request, Sample]]:
        """Give free slots to the prompt's waiting samples; sample their first tokens."""
        if self.cache is None:
            self._allocate(prompt)
        free = self.free_slots()
        take = [prompt.todo.popleft() for _ in range(min(len(free), len(prompt.todo)))]
        slots = free[: len(take)]
        steps = self.engine.config.max_new_tokens
        for slot, (_, seed) in zip(slots, take, strict=True):
            self.uniforms[slot] = sample_uniforms(seed, steps)
        index_t = torch.tensor(slots, device=self.engine.device)
        shared = self.engine.share_prefixes and len(prompt.request.samples) >= SHARE_MIN_SAMPLES
        self.cache.place(index_t, prompt.kv, share=prompt.serial if shared else None)
        logits = prompt.logits.expand(len(slots), -1)
        request = prompt.request
        first = self.engine.sample(logits, self.uniforms[slots, 0], [request] * len(slots)).tolist()
        self.positions[index_t] = len(request.prompt_ids)
        self.adapters[slots] = request.adapter_index
        self.counts[slots] = 1
        limit = self.engine.token_limit(request)
        for slot, (index, _), token in zip(slots, take, first, strict=True):
            self.rows[slot] = _Row(request, index, [token], limit)
            self.next_tokens[slot] = token
        yield from self._retire(slots)

    def step(self) -> Iterator[tuple[Request, Sample]]:
        """One decode step for every slot, then retire the rows that finished."""
        engine, telemetry = self.engine, self.engine.telemetry
        start = time.perf_counter()
        logits = engine.decode_step(self.cache, self.next_tokens, self.positions, self.adapters)
        live = self.live()
        every = len(live) == len(self.rows)
        steps = self.uniforms.shape[1] - 1  # idle slots' counts may run past the end: clamp
        uniforms = self.uniforms.gather(1, self.counts.clamp(max=steps)[:, None]).squeeze(1)
        live_t = None if every else torch.tensor(live, device=engine.device)
        if not every:
            logits, uniforms = logits[live_t], uniforms[live]
        tokens_t = engine.sample(logits, uniforms, [self.rows[slot].request for slot in live])
        tokens = tokens_t.tolist()
        telemetry.add("decode", time.perf_counter() - start, tokens=len(live), slots=len(self.rows))
        if every:
            self.next_tokens.copy_(tokens_t)
        else:
            self.next_tokens[live_t] = tokens_t
        self.counts += 1
        self.positions += 1
        self.positions.clamp_(max=self.max_position)  # idle slots keep stepping; stay in range
        rows = self.rows
        for slot, token in zip(live, tokens, strict=True):
            rows[slot].tokens.append(token)
        start = time.perf_counter()
        yield from self._retire(live)
        telemetry.add("stop_check", time.perf_counter() - start)
        self.steps += 1
        if self.steps % TRIM_EVERY == 0:
            self.cache.trim_left(self.cache.unused_prefix())

    def _retire(self, slots: list[int]) -> Iterator[tuple[Request, Sample]]:
        for slot in slots:
            row = self.rows[slot]
            if self.engine.finished(row):
                self.rows[slot] = None
                self.cache.free(slot)
                yield row.request, self.engine.result(row)

    def evict(self, keys: set) -> int:
        """Drop the live rows of requests whose key is in `keys` (a server's cancelled
        requests): their slots are free for the next placement. Returns how many."""
        dropped = 0
        for slot, row in enumerate(self.rows):
            if row is not None and row.request.key in keys:
                self.rows[slot] = None
                self.cache.free(slot)
                dropped += 1
        return dropped

    def compact(self) -> None:
        """Speed trick: once no work waits, drop idle slots when at most half are busy."""
        live = self.active()
        if live and live <= len(self.rows) // 2:
            self.resize(live)

    def resize(self, size: int) -> None:
        """Move the live rows (in slot order) to the first slots and make the batch `size`
        slots: grow under load, shrink when rows finish (an idle slot still costs its share of
        every decode step)."""
        live = self.live()
        if size < max(len(live), 1):
            raise ValueError(f"cannot resize {len(live)} live rows into {size} slots")
        if self.cache is None:
            self.size = size
            return
        pad = size - len(live)
        keep = live + [live[0] if live else 0] * pad  # padding rows are copies, freed at once
        index = torch.tensor(keep, device=self.engine.device)
        self.cache.select_rows(index)
        for slot in range(len(live), size):
            self.cache.free(slot)
        self.rows = [self.rows[i] for i in live] + [None] * pad
        self.next_tokens, self.positions = self.next_tokens[index], self.positions[index]
        self.adapters, self.uniforms = self.adapters[keep], self.uniforms[keep]
        self.counts = self.counts[keep]
        self.positions[len(live):], self.adapters[len(live):] = 0, BASE_ROW
        self.size = size
