"""`flora-eval train` on conversation data: MBPP's tasks as instructions and its reference
code as replies, rendered with the tiny model's chat template, the loss on the replies only.
FLoRA, LoRA and IA3 adapters trained this way lower the held-out loss on reply tokens and are
evaluated with --prompt-style instruct in one mixed batch, on HumanEval (not MBPP)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import MULTIPLE

from harness import api
from harness.adapters import load_adapter
from harness.cli import main
from harness.corpus import IGNORE, conversation_tokens, documents, encoder_for, heldout_blocks, open_corpus
from harness.errors import UserError
from harness.files import read_completions
from harness.models import build_tiny
from harness.records import SamplingConfig

MBPP = MULTIPLE / "mbpp" / "sanitized-mbpp.json"
TINY_LR = {"flora": 0.1, "lora": 0.005, "ia3": 0.2}  # as in test_train.py: the tiny model's rates


@pytest.fixture(scope="module")
def conversations(tmp_path_factory) -> Path:
    """MBPP as TRL-style conversation JSONL: the task text asks, the reference code answers."""
    if not MBPP.is_file():
        pytest.skip("../shared/multipl-e/mbpp/sanitized-mbpp.json is not present")
    path = tmp_path_factory.mktemp("chat") / "mbpp-chat.jsonl"
    with path.open("w") as f:
        for row in json.loads(MBPP.read_text()):
            messages = [{"role": "user", "content": row["prompt"]},
                        {"role": "assistant", "content": f"```python\n{row['code'].strip()}\n```"}]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def test_only_the_replies_are_targets():
    """The labels are the assistant's tokens (its reply and the end of turn after it), -100
    elsewhere; the ids are the template's text, the prompt part tokenized as at generation."""
    _, tokenizer = build_tiny()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add."},
                {"role": "assistant", "content": "def add(a, b): return a + b"},
                {"role": "user", "content": "Now subtract."}, {"role": "assistant", "content": "a - b"}]
    ids, labels = conversation_tokens(tokenizer, messages)
    assert len(ids) == len(labels)
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(messages, tokenize=False)
    targets = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != IGNORE])
    assert targets == "def add(a, b): return a + b<|endoftext|>a - b<|endoftext|>"
    first = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert ids[:labels.index(next(x for x in labels if x != IGNORE))] == tokenizer(
        first, add_special_tokens=False)["input_ids"]  # the prompt exactly as instruct runs see it


def test_a_conversation_file_is_read_as_conversations(conversations, tmp_path):
    corpus = open_corpus("py", conversations, heldout_fraction=0.2)
    assert corpus.kind == "chat"
    _, tokenizer = build_tiny()
    blocks = heldout_blocks(corpus, encoder_for(corpus, tokenizer), 0, 64, 4)
    assert len(blocks) == 4 and all(len(ids) == len(labels) == 64 for ids, labels in blocks)
    labels = [x for _, block in blocks for x in block]
    assert IGNORE in labels and any(x != IGNORE for x in labels)  # prompts and replies both there
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "x"}]}\n{"messages": "no"}\n')
    with pytest.raises(UserError, match="not a conversation"):
        list(documents(open_corpus("py", bad), 0, 0))
    tokenizer.chat_template = None
    with pytest.raises(UserError, match="no chat template"):
        encoder_for(corpus, tokenizer)


@pytest.mark.slow
def test_chat_trained_adapters_learn_the_replies_and_evaluate_in_one_mixed_batch(conversations, humaneval_dir,
                                                                               tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "adapters"
    for method in ("flora", "lora", "ia3"):  # the CLI, one run per method (rates differ)
        rank = [] if method == "ia3" else ["--rank", "1"]
        code = main(["train", "--model", "tiny", "--method", method, *rank, "--lang", "py",
                     "--data", str(conversations), "--steps", "60", "--batch-size", "8", "--seq-len", "64",
                     "--lr", str(TINY_LR[method]), "--heldout-fraction", "0.2", "--eval-blocks", "32",
                     "--out", str(out), "--no-progress"])
        assert code == 0, capsys.readouterr().err
    names = ("py-r1-flora", "py-r1-lora", "py-ia3")
    for name in names:
        held = load_adapter(out / name).metadata["heldout"]
        assert held["loss"] < held["base_loss"] - 0.01, (name, held)  # reply tokens only
        assert 0 < held["tokens"] < 32 * 64  # the replies' tokens, not the blocks'
        assert load_adapter(out / name).metadata["data_source"].startswith("chat:")

    evaluation = api.Evaluation("tiny", names, ("py",), SamplingConfig(2, 0.8, 0.95, 16, 3),
                                dataset=str(humaneval_dir), limit=2, adapters_dir=str(out),
                                prompt_style="instruct")
    run, _, telemetry = api.generate(evaluation, tmp_path / "run", device="cpu")
    made = [p for p in run.root.rglob("*.json.gz") if not p.name.endswith(".results.json.gz")]
    assert {p.parts[-3] for p in made} >= {"base", *names} and len(made) == 2 * 4
    assert all("HumanEval" in p.name and len(read_completions(p).replies) == 2 for p in made)
    # one mixed batch: an adapter alone has at most 2 problems × 2 samples = 4 rows per step
    assert telemetry.decode_tokens > 4 * telemetry.decode_steps, telemetry.as_dict()
