"""Shared prompt prefixes: the split attention equals attention over the whole context, the
pool keeps one copy per prompt and frees it with its last row, and the engine's samples are
the same whether a prompt is shared or copied into every slot."""

from __future__ import annotations

import pytest
import torch

from harness.generate import attention
from harness.generate.attention import SHARED_PREFIX, split_prefix_attention
from harness.generate.engine import BASE_ROW, Engine, EngineConfig, Request
from harness.generate.kvcache import PrefixPool, SlotCache
from harness.generate.sampling import sample_seed
from harness.models import build_tiny
from harness.problems import load_problems


def reference_attention(q, prefix, suffix_k, suffix_v, valid, scaling):
    """Row by row in float64: softmax over [the row's prefix columns; its valid slot columns]."""
    rows, heads, _, dim = q.shape
    kv_heads = suffix_k.shape[1]
    out = torch.zeros(rows, 1, heads, dim, dtype=torch.float64)
    for r in range(rows):
        keys, values = suffix_k[r][:, valid[r]], suffix_v[r][:, valid[r]]
        if prefix[r] is not None:
            keys = torch.cat([prefix[r][0], keys], dim=1)
            values = torch.cat([prefix[r][1], values], dim=1)
        for h in range(heads):
            kv = h // (heads // kv_heads)
            scores = keys[kv].double() @ q[r, h, 0].double() * scaling
            out[r, 0, h] = torch.softmax(scores, -1) @ values[kv].double()
    return out


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("every_row_on_one_prompt", [False, True])
@pytest.mark.parametrize("heads,kv_heads", [(4, 1), (4, 2), (2, 2)])
def test_split_attention_equals_attention_over_the_whole_context(heads, kv_heads, every_row_on_one_prompt,
                                                                 fused, monkeypatch):
    """Both ways of computing each half: torch's fused CPU kernel and plain operations (the
    path other devices take)."""
    if not fused:
        monkeypatch.setattr(attention, "CPU_FLASH", None)
    gen = torch.Generator().manual_seed(heads * 10 + kv_heads)
    rows, dim, columns = 9, 8, 6
    lengths = [5, 12, 3]  # three prompts of different lengths in one pool
    like = [(torch.zeros(1, kv_heads, 1, dim), torch.zeros(1, kv_heads, 1, dim))]
    pool = PrefixPool(like, max_entries=4)
    prompts = []
    for i, length in enumerate(lengths):
        kv = tuple(torch.randn(1, kv_heads, length, dim, generator=gen) for _ in range(2))
        prompts.append(kv)
        assert pool.add(f"p{i}", [kv]) == i
    row_prefix = [0, 2, -1, 1, 0, 1, -1, 2, 1]  # two rows carry their prompt in their slot
    if every_row_on_one_prompt:
        row_prefix = [0] * rows
    layout = pool.layout(row_prefix)
    assert layout.whole == every_row_on_one_prompt
    q = torch.randn(rows, heads, 1, dim, generator=gen)
    k = torch.randn(rows, kv_heads, columns, dim, generator=gen)
    v = torch.randn(rows, kv_heads, columns, dim, generator=gen)
    valid = torch.rand(rows, columns, generator=gen) > 0.4
    valid[:, -1] = True  # the column the step writes
    mask = torch.zeros(rows, 1, 1, columns)
    mask.masked_fill_(~valid[:, None, None, :], torch.finfo(torch.float32).min)

    got = split_prefix_attention(q, k, v, mask, layout, layer=0, scaling=dim ** -0.5)
    prefix = [None if e < 0 else (prompts[e][0][0], prompts[e][1][0]) for e in row_prefix]
    expected = reference_attention(q, prefix, k, v, valid, dim ** -0.5)
    assert got.shape == (rows, 1, heads, dim)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_pool_keeps_one_copy_per_prompt_and_frees_it_with_its_last_row():
    kv = [(torch.randn(1, 1, 7, 4), torch.randn(1, 1, 7, 4))]
    cache = SlotCache(kv, slots=6, prefix_entries=2)
    cache.place(torch.tensor([0, 1, 2]), kv, share="a")
    cache.place(torch.tensor([3]), kv, share="a")  # the same prompt again: found, not copied
    assert cache.pool.owners == ["a", None] and cache.pool.rows == [4, 0]
    assert cache.length == 0  # shared rows start with empty slots
    cache.place(torch.tensor([4]), kv, share="b")
    cache.place(torch.tensor([5]), kv, share="c")  # the pool is full: copied into the slot
    assert cache.row_prefix == [0, 0, 0, 0, 1, -1] and cache.length == 7
    layout = cache.shared_layout()
    assert layout.group == 4 and layout.rows.tolist() == [0, 1, 2, 3, 4]
    for slot in (0, 1, 2):
        cache.free(slot)
    assert cache.pool.owners == ["a", "b"]
    cache.free(3)
    assert cache.pool.owners == [None, "b"]  # last reader gone: the entry is free again
    assert cache.shared_layout().rows.tolist() == [4]
    cache.select_rows(torch.tensor([5]))  # compaction drops row 4: its prompt goes too
    assert cache.pool.owners == [None, None] and cache.shared_layout() is None


def test_pool_grows_by_doubling_up_to_its_limit():
    kv = [(torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4))]
    cache = SlotCache(kv, slots=10, prefix_entries=6)
    for slot in range(7):
        cache.place(torch.tensor([slot]), kv, share=f"p{slot}")
    assert len(cache.pool.owners) == 6 and cache.pool.keys[0].shape[0] == 6  # 4, then 6 (the limit)
    assert cache.row_prefix == [0, 1, 2, 3, 4, 5, -1, -1, -1, -1]  # the seventh was copied
    layout = cache.shared_layout()
    assert layout.keys[0].shape[0] == 6 and layout.rows.tolist() == [0, 1, 2, 3, 4, 5]


def greedy_generate(model, ids: tuple[int, ...], new_tokens: int, pad_token_id: int) -> list[int]:
    """The reference: transformers' own greedy `generate`, exactly `new_tokens` new tokens."""
    prompt = torch.tensor([ids])
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                         max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=pad_token_id)
    return out[0, len(ids):].tolist()


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = build_tiny()
    return model.eval(), tokenizer


def test_shared_and_copied_prompts_give_the_same_samples(tiny, humaneval_dir):
    model, tokenizer = tiny
    problems = (load_problems("py", humaneval_dir, limit=2).problems
                + load_problems("rb", humaneval_dir, limit=1).problems)
    reqs = [Request((p.language, p.name), tuple(tokenizer(p.prompt.strip())["input_ids"]), BASE_ROW,
                    tuple((i, sample_seed(0, p.name, "base", i)) for i in range(6)), p.stop_tokens)
            for p in problems]
    results = {}
    for share in (True, False):
        engine = Engine(model, tokenizer, EngineConfig(0.8, 0.95, 32, slots=8, share_prefixes=share))
        assert engine.share_prefixes is share
        results[share] = {(r.key, s.index): s.tokens for r, s in engine.generate(reqs)}
        assert model.config._attn_implementation == "sdpa"  # restored after the run
    assert len(results[True]) == 18
    assert results[True] == results[False]


def test_greedy_with_shared_prompts_matches_model_generate(tiny, humaneval_dir):
    model, tokenizer = tiny
    problem = load_problems("py", humaneval_dir, limit=1).problems[0]
    ids = tuple(tokenizer(problem.prompt.strip())["input_ids"])
    req = Request(("p",), ids, BASE_ROW, tuple((i, i) for i in range(5)))
    engine = Engine(model, tokenizer, EngineConfig(0.0, 1.0, 40, slots=5, ignore_eos=True))
    ours = [s.tokens for _, s in engine.generate([req])]
    expected = greedy_generate(model, ids, 40, tokenizer.pad_token_id)
    assert all(list(tokens) == expected for tokens in ours)


def test_decoding_shared_rows_without_the_attention_switch_is_refused(tiny):
    model, tokenizer = tiny
    engine = Engine(model, tokenizer, EngineConfig(0.8, 0.95, 8, slots=2))
    [prompt] = engine.prefill([Request(("p",), (5, 6, 7), BASE_ROW, ((0, 0), (1, 1)))])
    cache = SlotCache(prompt.kv, slots=2)
    cache.place(torch.tensor([0, 1]), prompt.kv, share=0)
    assert model.config._attn_implementation != SHARED_PREFIX
    with pytest.raises(RuntimeError, match="shared_prefix_attention"):
        engine.decode_step(cache, torch.tensor([1, 2]), torch.tensor([3, 3]), torch.tensor([-1, -1]))


@pytest.mark.parametrize("method", ["base", "flora", "lora", "ia3"])
def test_bfloat16_shared_prompts_match_copied_ones(humaneval_dir, method):
    """The GPU dtype, on the CPU: shared-prefix attention, the prefix pool and the adapters run
    in bfloat16, and greedy tokens agree with prompts copied into every slot (SDPA)."""
    from harness.adapters import attach
    from harness.bench.generate import our_adapters

    model, tokenizer = build_tiny()
    model = model.to(torch.bfloat16).eval()
    specs = [] if method == "base" else our_adapters(model, method, 2)
    handle = attach(model, specs) if specs else None
    problems = load_problems("py", humaneval_dir, limit=2).problems
    reqs = [Request((p.name, a), tuple(tokenizer(p.prompt.strip())["input_ids"]), a if specs else BASE_ROW,
                    tuple((i, sample_seed(0, p.name, str(a), i)) for i in range(5)), p.stop_tokens)
            for p in problems for a in range(2)]
    try:
        out = {}
        for share in (True, False):
            config = EngineConfig(0.0, 1.0, 24, slots=8, share_prefixes=share)
            engine = Engine(model, tokenizer, config, set_rows=handle.set_rows if handle else None)
            out[share] = {(r.key, s.index): s.tokens for r, s in engine.generate(reqs)}
    finally:
        if handle is not None:
            handle.detach()
    assert len(out[True]) == 20
    same = sum(out[True][key] == out[False][key] for key in out[True])
    assert same >= 18, same  # bfloat16 rounds the two attention forms differently: rare flips


def test_a_llama_style_model_shares_prompts_too():
    """Grouped kv heads and rotary positions (a Llama-style model, random weights): greedy
    samples from shared prompts equal `model.generate`, two prompts through six slots."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.models import byte_tokenizer

    tokenizer = byte_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval()
    prompts = {"a": tuple(tokenizer("def add(a, b):\n    return")["input_ids"]),
               "b": tuple(tokenizer("fn main() {\n    let x = 1;")["input_ids"])}
    reqs = [Request((key,), ids, BASE_ROW, tuple((i, i) for i in range(5))) for key, ids in prompts.items()]
    config = EngineConfig(0.0, 1.0, 20, slots=6, ignore_eos=True, share_prefixes=True)
    engine = Engine(model, tokenizer, config)
    assert engine.share_prefixes
    out = {(r.key[0], s.index): list(s.tokens) for r, s in engine.generate(reqs)}
    for key, ids in prompts.items():
        expected = greedy_generate(model, ids, 20, tokenizer.pad_token_id)
        assert all(out[(key, i)] == expected for i in range(5)), key
