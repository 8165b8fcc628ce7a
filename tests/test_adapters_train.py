"""Training through the banks: each example's gradient reaches only its own adapter, a mixed
batch's gradients equal the sum over examples run alone, and trained adapters export/save."""

from __future__ import annotations

import torch
from test_adapters import perturbed

from harness.adapters import (
    FLoRAConfig,
    IA3Config,
    LoRAConfig,
    attach,
    init_adapter,
    load_adapter,
    save_adapter,
)
from harness.models import build_tiny

ROWS = [0, 1, 2, 0, -1, 1, 2]


def setup(spread=0.1):
    model = build_tiny()[0]
    model.requires_grad_(False)  # freeze the base before attach: the banks stay trainable
    configs = [LoRAConfig(r=2, lora_alpha=4), FLoRAConfig(r=2), IA3Config()]
    adapters = [init_adapter(model, c, name=f"t{i}", seed=i) for i, c in enumerate(configs)]
    if spread:
        adapters = [perturbed(a, seed=30 + i, spread=spread) for i, a in enumerate(adapters)]
    handle = attach(model, adapters, trainable=True)
    ids = torch.randint(1, 250, (len(ROWS), 9), generator=torch.Generator().manual_seed(3))
    return model, handle, ids


def loss_of(model, ids):
    logits = model(ids).logits[:, :-1]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
    )


def grads(handle):
    return [[p.grad.clone() if p.grad is not None else None for p in handle.parameters(i)] for i in range(3)]


def test_mixed_batch_gradients_equal_per_example_sums():
    model, handle, ids = setup()
    handle.set_rows(torch.tensor(ROWS))
    loss_of(model, ids).backward()
    mixed = grads(handle)
    for i in range(3):
        for p in handle.parameters(i):
            p.grad = None
    for row, adapter in enumerate(ROWS):
        if adapter < 0:
            continue  # a base row has no adapter to train: no graph at all
        handle.set_rows(torch.tensor([adapter]))
        loss_of(model, ids[row : row + 1]).backward()
    summed = grads(handle)
    for i in range(3):
        assert len(mixed[i]) > 0
        for g_mixed, g_sum in zip(mixed[i], summed[i], strict=True):
            assert g_mixed is not None and g_mixed.abs().sum() > 0
            torch.testing.assert_close(g_mixed, g_sum, rtol=1e-4, atol=1e-5)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_only_rows_of_an_adapter_train_it():
    model, handle, ids = setup()
    handle.set_rows(torch.tensor([0, 0, -1, 2, 2, 2, -1]))
    loss_of(model, ids).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in handle.parameters(1))
    assert all(p.grad.abs().sum() > 0 for p in handle.parameters(0) + handle.parameters(2))
    # IA3 learns the output of c_attn and the input of mlp.c_proj only, as PEFT does
    assert len(handle.parameters(2)) == 2 * len(model.transformer.h)


def test_fresh_adapters_start_as_the_base_model_and_flora_is_not_symmetric():
    model, handle, ids = setup(spread=0)
    with torch.no_grad():
        handle.set_rows(torch.tensor([-1] * len(ROWS)))
        base = model(ids).logits
        handle.set_rows(torch.tensor(ROWS))
        torch.testing.assert_close(model(ids).logits, base, rtol=1e-5, atol=1e-5)
    flora_a = [p for p in handle.parameters(1) if p.shape[0] == 2 and p.shape[1] == 64]
    assert flora_a and all(not torch.equal(p[0], p[1]) for p in flora_a)


def test_trained_adapter_exports_saves_and_reloads(tmp_path):
    model, handle, ids = setup()
    before = handle.export(1)
    opt = torch.optim.AdamW(
        [{"params": handle.parameters(i), "lr": lr} for i, lr in enumerate([1e-3, 8e-3, 5e-3])]
    )
    handle.set_rows(torch.tensor(ROWS))
    loss_of(model, ids).backward()
    opt.step()
    after = handle.export(1, metadata={"language": "rb", "steps": 1})
    assert after.content_hash != before.content_hash
    with torch.no_grad():
        trained = model(ids).logits
    saved = [
        save_adapter(handle.export(i), tmp_path / f"a{i}", metadata={"base_model": "tiny"}) for i in range(3)
    ]
    handle.detach()
    reloaded = [load_adapter(s.path, base_model="tiny") for s in saved]
    served = attach(model, reloaded)  # not trainable: stacked buffers
    served.set_rows(torch.tensor(ROWS))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, trained, rtol=1e-5, atol=1e-5)


def test_trainable_banks_stay_float32_under_a_bf16_base():
    model = build_tiny()[0].to(torch.bfloat16)
    model.requires_grad_(False)
    adapters = [
        init_adapter(model, c, seed=i) for i, c in enumerate([LoRAConfig(r=2), FLoRAConfig(r=2), IA3Config()])
    ]
    handle = attach(model, adapters, trainable=True)
    handle.set_rows(torch.tensor([0, 1, 2, -1]))
    ids = torch.randint(1, 250, (4, 6))
    logits = model(ids).logits
    assert logits.dtype == torch.bfloat16
    logits.float().square().mean().backward()
    for i in range(3):
        assert all(p.dtype == torch.float32 and p.grad is not None for p in handle.parameters(i))
