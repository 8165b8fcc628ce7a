"""Adapter files: PEFT's own LoRA and IA3 files load and reproduce PEFT's logits, ours
round-trip and load in PEFT, names resolve, and every bad file is one UserError line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_adapters import perturbed

from harness.adapters import (
    FLoRAConfig,
    IA3Config,
    LoRAConfig,
    attach,
    init_adapter,
    load_adapter,
    resolve_adapter,
    save_adapter,
)
from harness.errors import UserError
from harness.models import build_tiny

IDS = torch.randint(1, 250, (3, 11), generator=torch.Generator().manual_seed(0))


def tiny():
    return build_tiny()[0].eval()


def logits(model, rows=None, handle=None):
    with torch.no_grad():
        if handle is not None:
            handle.set_rows(torch.tensor(rows or [0] * len(IDS)))
        return model(IDS).logits


def peft_saved(config, tmp_path):
    """A PEFT model with random non-identity adapter weights, saved by PEFT; its logits."""
    from peft import get_peft_model

    peft_model = get_peft_model(tiny(), config)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name or "ia3_" in name:
                param.copy_(param + 0.3 * torch.randn(param.shape, generator=gen))
    peft_model.save_pretrained(tmp_path)
    return logits(peft_model.eval())


@pytest.mark.parametrize(
    "make",
    [
        lambda: __import__("peft").LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM"),
        lambda: __import__("peft").LoraConfig(
            r=2, lora_alpha=3, target_modules=["c_attn", "c_fc"], use_rslora=True
        ),
        lambda: __import__("peft").IA3Config(task_type="CAUSAL_LM"),
    ],
    ids=["lora", "lora-rslora", "ia3"],
)
def test_peft_saved_adapters_reproduce_peft_logits(make, tmp_path):
    expected = peft_saved(make(), tmp_path)
    spec = load_adapter(tmp_path, base_model="tiny")
    model = tiny()
    assert not torch.allclose(logits(model), expected, atol=1e-3)  # the adapter matters
    handle = attach(model, [spec])
    torch.testing.assert_close(logits(model, handle=handle), expected, rtol=1e-5, atol=1e-5)
    handle.merge(0)
    torch.testing.assert_close(logits(model), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "config", [LoRAConfig(r=3, lora_alpha=6), FLoRAConfig(r=2), IA3Config()], ids=["lora", "flora", "ia3"]
)
def test_round_trip_is_identical(config, tmp_path):
    model = tiny()
    spec = perturbed(init_adapter(model, config, name="x", seed=1), seed=2)
    saved = save_adapter(spec, tmp_path / "x", metadata={"language": "rb", "base_model": "tiny"})
    loaded = load_adapter(tmp_path / "x", base_model="tiny")
    assert loaded.content_hash == spec.content_hash == saved.content_hash
    assert loaded.content_hash.startswith("sha256:")
    assert loaded.config == config and loaded.method == spec.method
    assert loaded.metadata["language"] == "rb" and loaded.metadata["rank"] == config.rank
    assert json.loads((tmp_path / "x" / "adapter_config.json").read_text())["peft_type"] == spec.peft_type
    first = attach(model, [spec])
    a = logits(model, handle=first)
    first.detach()
    b = logits(model, handle=attach(model, [loaded]))
    assert torch.equal(a, b)


@pytest.mark.parametrize("config", [LoRAConfig(r=3, lora_alpha=6), IA3Config()], ids=["lora", "ia3"])
def test_peft_reads_our_files(config, tmp_path):
    from peft import PeftModel

    model = tiny()
    spec = perturbed(init_adapter(model, config, name="x", seed=1), seed=2)
    save_adapter(spec, tmp_path)
    ours = logits(model, handle=attach(model, [spec]))
    theirs = logits(PeftModel.from_pretrained(tiny(), tmp_path).eval())
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_names_resolve_through_dir_env_and_path(tmp_path, monkeypatch):
    model = tiny()
    save_adapter(init_adapter(model, FLoRAConfig(r=1), name="ruby-r1"), tmp_path / "lib" / "ruby-r1")
    assert load_adapter("ruby-r1", adapters_dir=tmp_path / "lib").name == "ruby-r1"
    monkeypatch.setenv("FLORA_EVAL_ADAPTERS", str(tmp_path / "lib"))
    assert resolve_adapter("ruby-r1")[0] == tmp_path / "lib" / "ruby-r1"
    monkeypatch.chdir(tmp_path)
    assert load_adapter("lib/ruby-r1").path == tmp_path / "lib" / "ruby-r1"
    with pytest.raises(UserError, match="adapter 'nope' not found"):
        load_adapter("nope")


def test_short_name_finds_the_one_trained_method(tmp_path):
    """`--adapter rb-r1` finds `rb-r1-flora` (the trainer's `<lang>-r<R>-<method>` naming)."""
    model, lib = tiny(), tmp_path / "lib"
    save_adapter(init_adapter(model, FLoRAConfig(r=1), name="rb-r1-flora"), lib / "rb-r1-flora")
    assert resolve_adapter("rb-r1", lib) == ((lib / "rb-r1-flora").resolve(), "rb-r1-flora")
    save_adapter(init_adapter(model, LoRAConfig(r=1), name="rb-r1-lora"), lib / "rb-r1-lora")
    with pytest.raises(UserError, match="ambiguous.*rb-r1-flora, rb-r1-lora"):
        resolve_adapter("rb-r1", lib)
    with pytest.raises(UserError, match="not found"):
        resolve_adapter("rb-r2", lib)


def test_hub_id_offline_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        UserError, match="cannot fetch adapter 'someorg/ruby-r1' from the Hugging Face hub"
    ) as e:
        load_adapter("someorg/ruby-r1")
    assert "\n" not in str(e.value)


# --- bad files: each kind is one line that names the file and the problem -------------------------
def good(tmp_path, config=None):
    model = tiny()
    spec = perturbed(init_adapter(model, config or LoRAConfig(r=2), name="x", seed=1), seed=2)
    save_adapter(spec, tmp_path)
    return tmp_path / "adapter_config.json", tmp_path / "adapter_model.safetensors"


def edit_config(path, **changes):
    data = json.loads(path.read_text()) | changes
    path.write_text(json.dumps(data))


def edit_tensors(path, change):
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)  # drops our metadata (and its hash), as another tool would


KEY = "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"


@pytest.mark.parametrize(
    "breaks, message",
    [
        (lambda c, w: edit_config(c, peft_type="LOHA"), "adapter_config.json: unknown peft_type 'LOHA'"),
        (lambda c, w: edit_config(c, use_dora=True), "adapter_config.json: unsupported option use_dora=True"),
        (
            lambda c, w: edit_config(c, r=3),
            "lora_A.weight has shape \\[2, 64\\], which does not match the config's rank r=3",
        ),
        (
            lambda c, w: edit_tensors(w, lambda t: t.pop(KEY)),
            "safetensors: missing tensor .*h.0.attn.c_attn.lora_A.weight",
        ),
        (
            lambda c, w: edit_tensors(w, lambda t: t[KEY].__setitem__((0, 3), float("nan"))),
            "lora_A.weight contains NaN",
        ),
        (lambda c, w: c.write_text("{not json"), "adapter_config.json: corrupt or not JSON"),
        (lambda c, w: w.write_bytes(b"garbage"), "adapter_model.safetensors: corrupt safetensors file"),
        (lambda c, w: w.unlink(), "no adapter_model.safetensors"),
        (lambda c, w: c.unlink(), "no adapter_config.json"),
    ],
    ids=[
        "peft_type",
        "unsupported",
        "rank",
        "missing",
        "nan",
        "json",
        "safetensors",
        "no-weights",
        "no-config",
    ],
)
def test_bad_file_is_one_line_naming_file_and_problem(tmp_path, breaks, message):
    config_path, weights_path = good(tmp_path)
    breaks(config_path, weights_path)
    with pytest.raises(UserError, match=message) as e:
        load_adapter(tmp_path)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)


def test_tampered_tensors_fail_the_recorded_hash(tmp_path):
    _, weights = good(tmp_path)
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0x01  # flip a bit of the last tensor's data, keep the header (and the recorded hash)
    weights.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="records content hash sha256:.* but its tensors hash to"):
        load_adapter(tmp_path)


def test_wrong_shapes_for_this_base_model(tmp_path):
    from test_adapters import larger_bigcode

    other = larger_bigcode()
    save_adapter(perturbed(init_adapter(other, FLoRAConfig(r=1), name="x"), seed=1), tmp_path)
    load_adapter(tmp_path)  # a sound file on its own
    with pytest.raises(UserError, match="has shape \\[1, 96\\] but base model 'tiny' needs \\[1, 64\\]"):
        load_adapter(tmp_path, base_model="tiny")
    with pytest.raises(UserError, match="was the adapter trained for another base model"):
        attach(tiny(), [load_adapter(tmp_path)])


def test_tensors_for_layers_the_model_lacks(tmp_path):
    model = tiny()
    spec = init_adapter(model, IA3Config(), name="x")
    extra = {k.replace("h.1.", "h.7."): v for k, v in spec.tensors.items() if ".h.1." in k}
    save_adapter(type(spec)(**{**spec.__dict__, "tensors": {**spec.tensors, **extra}}), tmp_path)
    with pytest.raises(UserError, match="h.7.* \\(and 1 more\\) matches no target module"):
        load_adapter(tmp_path, base_model="tiny")
