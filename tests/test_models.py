import pytest
import torch

from harness.errors import UserError
from harness.models import ALIASES, load_model, resolve


def test_aliases_resolve_to_hub_ids():
    assert resolve("starcoder-15b") == "bigcode/starcoder"
    assert ALIASES["starcoderbase-1b"] == "bigcode/starcoderbase-1b"
    assert resolve("org/some-model") == "org/some-model"


def test_unknown_alias_is_one_clear_line():
    with pytest.raises(UserError, match="unknown model 'starcoder-99b'"):
        resolve("starcoder-99b")


def test_tiny_is_deterministic_and_round_trips_text():
    a, b = load_model("tiny", device="cpu"), load_model("tiny", device="cpu")
    assert a.model.config.model_type == "gpt_bigcode"
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    text = 'def f(x):\n    return "é" + x\n'
    ids = a.tokenizer(text)["input_ids"]
    assert a.tokenizer.decode(ids) == text
    assert a.tokenizer.eos_token_id == 0
