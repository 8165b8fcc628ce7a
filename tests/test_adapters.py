"""Adapter math: every method against its explicit per-example formula, mixed batches against
each example alone, merge against the unmerged forward (tiny models, float32)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.adapters import (
    AdapterFile,
    FLoRAConfig,
    IA3Config,
    LoRAConfig,
    attach,
    content_hash,
    init_adapter,
    lora,
)
from harness.adapters.lora import LoRABank
from harness.models import build_tiny

PREFIX = "base_model.model."


def perturbed(spec: AdapterFile, seed: int, spread: float = 0.3) -> AdapterFile:
    """The adapter with random, non-identity values (fresh LoRA would be a no-op: B = 0)."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {k: v + spread * torch.randn(v.shape, generator=gen) for k, v in spec.tensors.items()}
    return AdapterFile(
        spec.name, spec.method, spec.config, tensors, spec.metadata, content_hash(spec.config, tensors)
    )


class OneLayer(nn.Module):
    """A model with one attention-like and one feed-forward-like Linear."""

    def __init__(self, in_f: int = 24, out_f: int = 40) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.attn = nn.Linear(in_f, out_f)
        self.ffn = nn.Linear(out_f, in_f)


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y - ref).norm() / ref.norm())


def explicit(spec: AdapterFile, name: str, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The per-example formula of each method, written from its definition (one example x)."""
    t = {
        k.removeprefix(f"{PREFIX}{name}."): v
        for k, v in spec.tensors.items()
        if k.startswith(f"{PREFIX}{name}.")
    }
    w, b = layer.weight, layer.bias
    if spec.method == "lora":
        s = spec.config.lora_alpha / spec.config.r
        return x @ w.T + b + s * (x @ t["lora_A.weight"].T) @ t["lora_B.weight"].T
    if spec.method == "flora":
        s = 1 / spec.config.r if spec.config.reduction == "mean" else 1.0
        return x @ (w * (s * t["flora_B"] @ t["flora_A"])).T + b
    if spec.config.is_feedforward(name):
        return (x * t["ia3_l"].reshape(-1)) @ w.T + b
    return (x @ w.T + b) * t["ia3_l"].reshape(-1)


def layer_adapters(model: nn.Module) -> list[AdapterFile]:
    configs = [
        LoRAConfig(r=2, lora_alpha=4, target_modules=("attn", "ffn")),
        LoRAConfig(r=5, lora_alpha=3, target_modules=("attn",)),
        FLoRAConfig(r=1, target_modules=("attn", "ffn")),
        FLoRAConfig(r=4, target_modules=("attn", "ffn")),
        FLoRAConfig(r=3, target_modules=("attn",), reduction="sum"),
        IA3Config(target_modules=("attn", "ffn"), feedforward_modules=("ffn",)),
        IA3Config(target_modules=("attn", "ffn"), feedforward_modules=()),
    ]
    return [
        perturbed(init_adapter(model, c, name=f"a{i}", seed=i), seed=10 + i) for i, c in enumerate(configs)
    ]


@pytest.mark.parametrize("tokens", [7, 1])
@pytest.mark.parametrize("lora_impl", ["gather", "bmm"])
@pytest.mark.parametrize("method", ["lora", "flora", "ia3", "all"])
def test_each_method_equals_its_per_example_formula(method, lora_impl, tokens):
    model = OneLayer()
    adapters = [a for a in layer_adapters(model) if method in (a.method, "all")]
    rows = [*range(len(adapters)), -1, *reversed(range(len(adapters))), -1]  # mixed ranks, base rows
    x = torch.randn(len(rows), tokens, 24)
    handle = attach(model, adapters, lora_impl=lora_impl)
    handle.set_rows(torch.tensor(rows))
    with torch.no_grad():
        h = model.attn(x)
        y = model.ffn(h)
        for i, a in enumerate(rows):
            ref_h = explicit(adapters[a], "attn", handle.wrappers["attn"].base, x[i]) if a >= 0 else None
            if ref_h is None:
                ref_h = handle.wrappers["attn"].base(x[i])
            assert rel_err(h[i], ref_h) <= 1e-5, (i, a)
            ffn = handle.wrappers.get("ffn")
            targets_ffn = a >= 0 and any(k.startswith(f"{PREFIX}ffn.") for k in adapters[a].tensors)
            ref_y = (
                explicit(adapters[a], "ffn", ffn.base, h[i])
                if targets_ffn
                else model.get_submodule("ffn" if ffn is None else "ffn.base")(h[i])
            )
            assert rel_err(y[i], ref_y) <= 1e-5, (i, a)


def test_flora_one_gemm_against_w0(monkeypatch):
    """The batched eq. 6 calls the base weight once per layer, with M = sum of ranks x tokens."""
    model = OneLayer()
    adapters = [a for a in layer_adapters(model) if a.method == "flora"]
    handle = attach(model, adapters)
    calls = []
    real = torch.nn.functional.linear

    def spy(x, w, b=None):
        calls.append((x.shape, w is handle.wrappers["attn"].base.weight))
        return real(x, w, b)

    monkeypatch.setattr(torch.nn.functional, "linear", spy)
    handle.set_rows(torch.tensor([0, 1, 2, -1, 1]))  # ranks 1, 4, 3, base (1), 4
    with torch.no_grad():
        model.attn(torch.randn(5, 6, 24))
    assert [c for c in calls if c[1]] == [(torch.Size([1 + 4 + 3 + 1 + 4, 6, 24]), True)]


def row_by_row(model, handle, ids, rows):
    with torch.no_grad():
        handle.set_rows(torch.tensor(rows))
        mixed = model(ids).logits
        alone = []
        for i, a in enumerate(rows):
            handle.set_rows(torch.tensor([a]))
            alone.append(model(ids[i : i + 1]).logits)
    return mixed, torch.cat(alone)


def model_adapters(model):
    configs = [
        LoRAConfig(r=1, lora_alpha=2),
        LoRAConfig(r=8, lora_alpha=16, target_modules=("c_attn", "c_fc")),
        FLoRAConfig(r=1),
        FLoRAConfig(r=4, target_modules=("c_attn", "mlp.c_proj")),
        IA3Config(),
    ]
    return [
        perturbed(init_adapter(model, c, name=f"m{i}", seed=i), seed=20 + i, spread=0.1)
        for i, c in enumerate(configs)
    ]


def larger_bigcode():
    from transformers import AutoModelForCausalLM, GPTBigCodeConfig

    config = GPTBigCodeConfig(
        vocab_size=300,
        n_positions=64,
        n_embd=96,
        n_layer=3,
        n_head=6,
        n_inner=200,
        multi_query=True,
        attn_pdrop=0.0,
        embd_pdrop=0.0,
        resid_pdrop=0.0,
    )
    torch.manual_seed(1)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("lora_impl", ["gather", "bmm"])
@pytest.mark.parametrize("make", [lambda: build_tiny()[0].eval(), larger_bigcode], ids=["tiny", "bigcode-96"])
def test_mixed_batch_equals_each_example_alone(make, lora_impl):
    model = make()
    with torch.no_grad():
        ids = torch.randint(1, 250, (9, 12))
        base = model(ids).logits
    handle = attach(model, model_adapters(model), lora_impl=lora_impl)
    rows = [0, 1, 2, 3, 4, -1, 3, 0, 2]
    mixed, alone = row_by_row(model, handle, ids, rows)
    torch.testing.assert_close(mixed, alone, rtol=1e-5, atol=1e-5)
    for i, a in enumerate(rows):  # the adapters do change the output; the base rows do not
        changed = not torch.allclose(mixed[i], base[i], atol=1e-4)
        assert changed == (a >= 0), (i, a)
    handle.detach()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, base)


@pytest.mark.parametrize("which", range(5))
def test_merged_equals_unmerged_and_unmerge_is_exact(which):
    model = build_tiny()[0].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    handle = attach(model, model_adapters(model))
    ids = torch.randint(1, 250, (3, 10))
    with torch.no_grad():
        handle.set_rows(torch.tensor([which] * 3))
        unmerged = model(ids).logits
        handle.merge(which)
        merged = model(ids).logits
        handle.unmerge()
        again = model(ids).logits
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, unmerged)
    handle.detach()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # bit-exact: merge keeps the weights aside


def test_set_rows_checks_its_input():
    model = build_tiny()[0].eval()
    handle = attach(model, model_adapters(model)[:2])
    with pytest.raises(ValueError, match="-1..1"):
        handle.set_rows(torch.tensor([0, 2]))
    handle.set_rows(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="set_rows gave 2"):
        model(torch.randint(1, 250, (3, 4)))


def test_gather_lora_grouped_gemm_equals_per_adapter_loop():
    """Inference takes one grouped GEMM over all adapters; training the per-adapter loop."""
    model = OneLayer()
    adapters = [a for a in layer_adapters(model) if a.method == "lora"]
    handle = attach(model, adapters)
    handle.set_rows(torch.tensor([1, 0, -1, 1, 0]))
    x = torch.randn(5, 3, 24)
    bank = handle.wrappers["attn"].banks[0]
    with torch.no_grad():
        grouped = model.attn(x)
        assert bank._grouped_ok  # the grouped kernel ran (it switches itself off on failure)
        bank._grouped_ok = False
        looped = model.attn(x)
    torch.testing.assert_close(grouped, looped, rtol=1e-5, atol=1e-6)


class Int8Linear(nn.Linear):
    """A weight-only int8 Linear (per-row scales), like bitsandbytes' 8-bit layers: its weight
    is not a float tensor, so FLoRA must reach W0 through the module itself."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear.in_features, linear.out_features)
        scale = linear.weight.detach().abs().amax(dim=1, keepdim=True) / 127
        self.weight = nn.Parameter(
            torch.round(linear.weight.detach() / scale).to(torch.int8), requires_grad=False
        )
        self.register_buffer("scale", scale)
        self.bias = nn.Parameter(linear.bias.detach().clone())

    def dequantized(self) -> torch.Tensor:
        return self.weight.float() * self.scale

    def forward(self, x):
        return torch.nn.functional.linear(x, self.dequantized(), self.bias)


def test_flora_lora_ia3_over_a_quantized_base():
    model = OneLayer()
    adapters = layer_adapters(model)
    model.attn, model.ffn = Int8Linear(model.attn), Int8Linear(model.ffn)
    handle = attach(model, adapters)
    rows = list(range(len(adapters)))
    handle.set_rows(torch.tensor(rows))
    x = torch.randn(len(rows), 4, 24)
    reference = nn.Linear(24, 40)
    with torch.no_grad():
        reference.weight.copy_(handle.wrappers["attn"].base.dequantized())
        reference.bias.copy_(handle.wrappers["attn"].base.bias)
        h = model.attn(x)
        for i, a in enumerate(rows):
            assert rel_err(h[i], explicit(adapters[a], "attn", reference, x[i])) <= 1e-5, (i, a)


@pytest.mark.parametrize(("form", "tokens"), [("masked", 1), ("_per_row", 1), ("_grouped", 3)])
def test_gather_lora_forms_agree_with_bmm(form, tokens, monkeypatch):
    """In decode (a token per row) several adapters of small rank take the masked form;
    without it, 1 token x 4 adapted rows over 2 adapters take the per-row product; 3 tokens
    take the grouped GEMM. Each must equal the bmm baseline."""
    model = OneLayer()
    adapters = [a for a in layer_adapters(model) if a.method == "lora"]
    x = torch.randn(5, tokens, 24)
    taken = []
    if form != "masked":
        monkeypatch.setattr(lora, "MASKED_MACS", 0)
    spied = "_masked_factors" if form == "masked" else form
    real = getattr(LoRABank, spied)

    def spy(self, *args):
        out = real(self, *args)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(LoRABank, spied, spy)
    outputs = []
    for impl in ("gather", "bmm"):
        handle = attach(model, adapters, lora_impl=impl)
        handle.set_rows(torch.tensor([1, 0, -1, 1, 0]))
        with torch.no_grad():
            outputs.append(model.attn(x))
        handle.detach()
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)
    assert taken[:1] == [True]  # the gather run (the first) took that form
