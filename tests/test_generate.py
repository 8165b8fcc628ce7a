"""The sampling engine on the tiny model and real MultiPL-E prompts: greedy equals
`model.generate`, samples do not depend on the batch, stop tokens cut as MultiPL-E does."""

from __future__ import annotations

import pytest
import torch

from harness.generate import sampling
from harness.generate.engine import BASE_ROW, Engine, EngineConfig, Request
from harness.generate.sampling import sample_seed, sample_tokens, sample_uniforms
from harness.generate.stops import truncate_at_stop
from harness.models import build_tiny
from harness.problems import load_problems


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = build_tiny()
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def problems(humaneval_dir):
    py = load_problems("py", humaneval_dir, limit=3).problems
    rb = load_problems("rb", humaneval_dir, limit=2).problems
    return py + rb  # prompts of different lengths and languages in one batch


def requests(tokenizer, problems, samples: int, stops: bool = True, adapter: int = BASE_ROW):
    return [
        Request(key=(p.language, p.name), prompt_ids=tuple(tokenizer(p.prompt.strip())["input_ids"]),
                adapter_index=adapter,
                samples=tuple((i, sample_seed(0, p.name, "base", i)) for i in range(samples)),
                stop_tokens=p.stop_tokens if stops else ())
        for p in problems
    ]


def run(tiny, reqs, slots: int, temperature: float = 0.8, max_new: int = 40, top_p: float = 0.95):
    model, tokenizer = tiny
    engine = Engine(model, tokenizer, EngineConfig(temperature, top_p, max_new, slots))
    return {(r.key, s.index): s for r, s in engine.generate(reqs)}


def test_greedy_matches_model_generate(tiny, problems):
    model, tokenizer = tiny
    reqs = requests(tokenizer, problems, samples=2, stops=False)
    ours = run(tiny, reqs, slots=3, temperature=0.0, max_new=48)  # 10 rows through 3 slots
    for req in reqs:
        ids = torch.tensor([req.prompt_ids])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=48, pad_token_id=tokenizer.pad_token_id)
        expected = out[0, ids.shape[1]:].tolist()
        if tokenizer.eos_token_id in expected:
            expected = expected[: expected.index(tokenizer.eos_token_id)]
        for index in range(2):
            assert list(ours[(req.key, index)].tokens) == expected, req.key


def test_samples_do_not_depend_on_batch_size(tiny, problems):
    reqs = requests(tiny[1], problems, samples=4)
    by_slots = [run(tiny, reqs, slots, max_new=24) for slots in (2, 7, 20)]
    assert len(by_slots[0]) == 20
    texts = [{k: s.tokens for k, s in result.items()} for result in by_slots]
    assert texts[0] == texts[1] == texts[2]
    # and the samples of one prompt differ from each other (each has its own stream)
    assert len({texts[0][(reqs[0].key, i)] for i in range(4)}) > 1


def test_samples_of_a_prompt_do_not_depend_on_the_other_prompts(tiny, problems):
    reqs = requests(tiny[1], problems, samples=3)
    together = run(tiny, reqs, slots=8)
    alone = run(tiny, reqs[2:3], slots=8)
    assert {k: s.tokens for k, s in alone.items()} == {
        k: s.tokens for k, s in together.items() if k[0] == reqs[2].key}


def test_stop_tokens_cut_exactly_as_multipl_e_and_rows_retire_at_once(tiny, problems):
    model, tokenizer = tiny
    unstopped = run(tiny, requests(tokenizer, problems, samples=3, stops=False), slots=6)
    # stop strings the tiny model does write: printable two-character pieces of its output
    found = [pieces(s.text) for s in unstopped.values()]
    stops = tuple(dict.fromkeys(stop for stop in found if stop))[:4]
    assert len(stops) == 4
    stopped_reqs = [Request(r.key, r.prompt_ids, r.adapter_index, r.samples, stops)
                    for r in requests(tokenizer, problems, samples=3, stops=False)]
    stopped = run(tiny, stopped_reqs, slots=6)
    cut = 0
    for key, full in unstopped.items():
        sample = stopped[key]
        assert sample.text == truncate_at_stop(full.text, stops)
        if sample.text != full.text:
            cut += 1
            # retired at the token that completed the stop token: no token more
            before = tokenizer.decode(list(sample.tokens[:-1]))
            assert all(s not in before for s in stops)
            assert any(s in tokenizer.decode(list(sample.tokens)) for s in stops)
            assert sample.tokens == full.tokens[: len(sample.tokens)]
    assert cut >= 3


def pieces(text: str) -> str:
    """The last printable ASCII two-character piece of `text` ('' if none)."""
    for i in range(len(text) - 2, -1, -1):
        if text[i:i + 2].isascii() and text[i:i + 2].isprintable():
            return text[i:i + 2]
    return ""


def test_greedy_is_argmax_and_sampling_stays_in_the_nucleus():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0]])
    assert sample_tokens(logits, 0.0, 1.0, torch.zeros(2)).tolist() == [1, 0]
    probs = torch.softmax(logits[0], -1)  # sorted: 1, 3, 2, 0
    uniforms = torch.rand(4000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    drawn = sample_tokens(logits[0].expand(4000, -1), 1.0, 0.8, uniforms)
    # nucleus for top_p 0.8: tokens 1 (0.64) and 3 (0.24) -> 0.88 >= 0.8
    assert set(drawn.tolist()) == {1, 3}
    share = (drawn == 1).double().mean().item()
    expected = (probs[1] / (probs[1] + probs[3])).item()
    assert abs(share - expected) < 0.03
    # inverse CDF: the uniform decides, row by row
    low, high = torch.tensor([0.0, 0.999], dtype=torch.float64).split(1)
    assert sample_tokens(logits[:1], 1.0, 0.8, low).item() == 1
    assert sample_tokens(logits[:1], 1.0, 0.8, high).item() == 3


def nucleus_reference(logits_row: torch.Tensor, temperature: float, top_p: float, uniform: float) -> int:
    """The sampling rule written out for one row: τ where the descending running sum reaches
    top_p, the tokens with probability ≥ τ, the uniform's token among them in vocabulary order."""
    probs = torch.softmax(logits_row / temperature, -1)
    ranked = probs.sort(descending=True).values
    end = min(int((ranked.cumsum(-1) < top_p).sum()), len(ranked) - 1)
    nucleus = torch.nonzero(probs >= ranked[end]).flatten()
    cdf = probs[nucleus].cumsum(-1)
    target = torch.tensor(uniform, dtype=torch.float32) * cdf[-1]
    return nucleus[min(int((cdf <= target).sum()), len(nucleus) - 1)].item()


def test_top_k_prefix_gives_the_same_tokens_as_a_full_sort(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 33000, generator=gen) * 4  # large enough for every prefix
    # rows of every flatness in one batch: each row takes the prefix (16, 128, 1024) or the
    # full sort that holds its own nucleus
    mixed = logits * torch.tensor([4.0, 1.2, 1.0, 0.3]).repeat(16)[:, None]
    uniforms = torch.rand(64, generator=gen, dtype=torch.float64)
    cases = ((logits, 0.3), (logits, 50.0), (mixed, 1.0), (logits[:, :257], 0.1), (mixed[:, :257], 1.0))
    for logits_, temperature in cases:
        got = sample_tokens(logits_, temperature, 0.95, uniforms)
        expected = [nucleus_reference(logits_[r], temperature, 0.95, uniforms[r].item()) for r in range(64)]
        assert got.tolist() == expected, temperature
        # a row's token does not depend on the other rows of the batch
        alone = [sample_tokens(logits_[r:r + 1], temperature, 0.95, uniforms[r:r + 1]).item()
                 for r in range(8)]
        assert alone == got[:8].tolist()
        with monkeypatch.context() as patch:  # no prefixes: every row through the full sort
            patch.setattr(sampling, "TOP_K_PREFIXES", ())
            assert sample_tokens(logits_, temperature, 0.95, uniforms).tolist() == expected
    nucleus = (torch.softmax(mixed, -1).sort(-1, descending=True).values.cumsum(-1) < 0.95).sum(-1)
    for low, high in ((0, 16), (16, 128), (128, 1024), (1024, 33000)):  # every path taken
        assert ((nucleus >= low) & (nucleus < high)).any(), (low, high)


def test_seeds_and_uniforms_are_fixed_by_the_sample_identity():
    assert sample_seed(0, "py/HumanEval_0", "base", 3) == sample_seed(0, "py/HumanEval_0", "base", 3)
    seeds = {sample_seed(s, p, a, i) for s in (0, 1) for p in ("a", "b") for a in ("base", "x")
             for i in range(3)}
    assert len(seeds) == 24
    assert torch.equal(sample_uniforms(5, 10), sample_uniforms(5, 20)[:10])


def test_rows_stop_at_the_context_length_and_idle_slots_stay_in_range(tiny, problems):
    model, tokenizer = tiny
    reqs = requests(tokenizer, problems[:2], samples=2, stops=False)
    longest = max(len(r.prompt_ids) for r in reqs)
    config = EngineConfig(0.8, 0.95, 200, slots=3, max_positions=longest + 12, ignore_eos=True)
    out = {(r.key, s.index): s for r, s in Engine(model, tokenizer, config).generate(reqs)}
    for req in reqs:
        for index in range(2):
            assert len(req.prompt_ids) + len(out[(req.key, index)].tokens) == longest + 12
