"""The instruct prompt style: chat prompts rendered with the model's own template, samples ended
at its end of turn, replies kept beside the extracted completions, the style and template in
provenance (resume and the gate compare them), and the report's style and extraction table."""

from __future__ import annotations

import json

import pytest
from serve_helpers import ADAPTERS, save_adapters

from harness.cli import main
from harness.errors import UserError
from harness.extract import extract
from harness.files import read_completions
from harness.generate import AdapterChoice, generate_run
from harness.generate.engine import Engine, EngineConfig, Request
from harness.models import build_tiny, byte_tokenizer, load_model
from harness.problems import load_problems
from harness.prompts import (
    INSTRUCT,
    conversation,
    end_of_turn_ids,
    prompt_ids,
    render,
    style_for,
    template_hash,
)
from harness.records import Provenance, SamplingConfig
from harness.report.baseline import Baseline, cell_settings
from harness.report.gate import differences
from harness.runs import RunDir

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def loaded():
    return load_model("tiny", device="cpu")


@pytest.fixture(scope="module")
def rows(humaneval_dir):
    return {lang: load_problems(lang, humaneval_dir, limit=2) for lang in ("py", "rb")}


def test_tiny_renders_the_conversation_with_its_own_template(rows):
    tokenizer = byte_tokenizer()
    problem = rows["rb"].problems[0]
    messages = conversation(problem, "rb")
    assert messages[0]["role"] == "system"
    assert "```ruby\n" + problem.prompt.strip() + "\n```" in messages[1]["content"]
    assert "Ruby" in messages[1]["content"]
    text = render(tokenizer, messages)
    assert text.startswith("<|system|>\n") and text.endswith("<|assistant|>\n")
    style = style_for(INSTRUCT, tokenizer, "tiny")
    assert tokenizer.decode(prompt_ids(problem, "rb", style, tokenizer)) == text
    assert end_of_turn_ids(tokenizer) == (tokenizer.eos_token_id,)


def test_a_chatml_template_ends_at_its_end_of_turn_and_its_hash_follows_the_template():
    tokenizer = byte_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    before = template_hash(tokenizer)
    tokenizer.chat_template = CHATML
    assert template_hash(tokenizer) not in ("", before)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert set(end_of_turn_ids(tokenizer)) == {tokenizer.eos_token_id, im_end}


def test_a_template_that_refuses_a_system_message_gets_it_in_the_first_user_turn(rows):
    tokenizer = byte_tokenizer()
    tokenizer.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    text = render(tokenizer, conversation(rows["py"].problems[0], "py"))
    assert text.startswith("[user] You are a helpful programming assistant") and "[system]" not in text


def test_a_model_without_a_chat_template_stops_with_one_line(tmp_path, capsys, humaneval_dir):
    model, tokenizer = build_tiny()
    tokenizer.chat_template = None
    model.save_pretrained(tmp_path / "plain")
    tokenizer.save_pretrained(tmp_path / "plain")
    with pytest.raises(UserError, match="no chat template"):
        style_for(INSTRUCT, tokenizer, "plain")
    code = main(["generate", "--model", str(tmp_path / "plain"), "--prompt-style", "instruct", "--lang", "py",
                 "--dataset", str(humaneval_dir), "--limit", "1", "-n", "1",
                 "--run-dir", str(tmp_path / "run")])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the libraries' progress bars
    assert code == 2 and last.startswith("flora-eval: error:") and "no chat template" in last
    assert "--prompt-style completion" in last


def test_a_row_ends_at_an_end_of_turn_token(loaded, rows):
    """Greedy decoding once without and once with one of its tokens as the end of turn."""
    ids = tuple(loaded.tokenizer(rows["py"].problems[0].prompt.strip())["input_ids"])
    engine = Engine(loaded.model, loaded.tokenizer, EngineConfig(0.0, 1.0, 12, 2))
    ((_, free),) = list(engine.generate([Request("a", ids, -1, ((0, 1),))]))
    end = free.tokens[3]
    cut = free.tokens.index(end)
    ((_, ended),) = list(engine.generate([Request("a", ids, -1, ((0, 1),), end_ids=(end,))]))
    assert ended.tokens == free.tokens[:cut] and ended.finish_reason == "stop"
    assert ended.text == loaded.tokenizer.decode(free.tokens[:cut], skip_special_tokens=True)


def test_mixed_adapter_batches_with_chat_prompts(loaded, rows, tmp_path):
    """py and rb rows, base and three adapters, one pass: every file keeps its replies and
    records the style and the template; each completion is the reply's extraction; each
    adapter's replies are those it gives alone; a run resumed with other settings stops."""
    from harness.adapters import load_adapter

    save_adapters(loaded.model, tmp_path / "adapters")
    specs = [load_adapter(tmp_path / "adapters" / name, base_model=loaded.model) for name in ADAPTERS]
    choices = [AdapterChoice()] + [AdapterChoice(s.name, s.content_hash, s) for s in specs]
    sampling = SamplingConfig(n=4, temperature=0.8, max_tokens=24, seed=3)
    style = style_for(INSTRUCT, loaded.tokenizer, "tiny")
    sets = list(rows.values())
    run = RunDir.open(tmp_path / "all")
    generate_run(loaded, sets, choices, sampling, run, batch_size=5, style=style)
    alone = RunDir.open(tmp_path / "alone")
    generate_run(loaded, sets, choices[2:3], sampling, alone, batch_size=3, style=style)
    for ps in sets:
        for problem in ps.problems:
            for choice in choices:
                record = read_completions(run.completions_path("tiny", choice.name, ps.lang, problem.name))
                assert record.provenance.prompt_style == INSTRUCT
                assert record.provenance.chat_template == template_hash(loaded.tokenizer)
                assert len(record.replies) == 4
                extracted = tuple(extract(r, problem, ps.lang).completion for r in record.replies)
                assert record.completions == extracted
            mixed = read_completions(run.completions_path("tiny", choices[2].name, ps.lang, problem.name))
            single = read_completions(alone.completions_path("tiny", choices[2].name, ps.lang, problem.name))
            assert mixed.replies == single.replies
    with pytest.raises(UserError, match="prompt_style"):
        generate_run(loaded, sets, choices[:1], sampling, run)  # completion prompts now


def test_the_gate_refuses_runs_of_another_style():
    def baseline(provenance):
        return Baseline(cells={("tiny", "base", "humaneval", "py"): {}},
                        settings={("tiny", "base", "humaneval", "py"): cell_settings(provenance)})

    completion, instruct = Provenance(), Provenance(prompt_style=INSTRUCT, chat_template="sha256:ab")
    lines = differences(baseline(completion), baseline(instruct))
    assert any(line.startswith("prompt_style is 'instruct' in the run, 'completion' in the baseline")
               for line in lines), lines
    other_template = Provenance(prompt_style=INSTRUCT, chat_template="sha256:cd")
    unlike = differences(baseline(instruct), baseline(other_template))
    assert [d.split(" ")[0] for d in unlike] == ["chat_template"]
    older = baseline(completion)  # a baseline saved before prompt styles existed: completion prompts
    older.settings[("tiny", "base", "humaneval", "py")].pop("prompt_style")
    older.settings[("tiny", "base", "humaneval", "py")].pop("chat_template")
    assert differences(older, baseline(completion)) == []


@pytest.mark.docker
@pytest.mark.slow
def test_main_command_with_instruct_prompts_end_to_end(loaded, tmp_path, humaneval_dir, monkeypatch, capsys):
    """`flora-eval --model tiny --prompt-style instruct --adapter A --lang py --lang rb`: the
    report shows the style, the extraction breakdown and each reply beside its completion."""
    monkeypatch.setenv("FLORA_EVAL_CACHE", str(tmp_path / "cache.sqlite"))
    save_adapters(loaded.model, tmp_path / "adapters")
    run_dir = tmp_path / "run"
    argv = ["--model", "tiny", "--prompt-style", "instruct", "--adapter", ADAPTERS[0], "--adapters-dir",
            str(tmp_path / "adapters"), "--lang", "py", "--lang", "rb", "--dataset", str(humaneval_dir),
            "--limit", "1", "-n", "2", "--max-tokens", "16", "--run-dir", str(run_dir)]
    assert main(argv) == 0
    table = (run_dir / "table.md").read_text()
    assert "Prompt style: run: instruct" in table and "tiny (instruct)" in table
    assert "## Extraction (% of replies)" in table and "fenced in the language" in table
    html = (run_dir / "report.html").read_text()
    assert "prompt style:" in html and 'id="extraction"' in html and ">reply</div>" in html
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["invocations"][0]["config"]["prompt_style"] == INSTRUCT
    assert len(list(run_dir.glob("tiny/*/humaneval-*/*.results.json.gz"))) == 4
    capsys.readouterr()


def test_scores_of_older_versions_read_as_completion_prompts(tmp_path):
    """A scores.csv written before prompt styles existed has no such column: its rows were made
    with completion prompts, and read so (not as a style of their own)."""
    import csv

    from harness.records import ProblemScore
    from harness.score.stage import read_scores, write_scores

    path = tmp_path / "scores.csv"
    write_scores(path, [ProblemScore(Provenance(model="tiny", lang="py"), "HumanEval_0", 2, 1, {1: 0.5})])
    rows = list(csv.DictReader(path.open()))
    with path.open("w", newline="") as f:
        kept = [k for k in rows[0] if k not in ("prompt_style", "chat_template")]
        writer = csv.DictWriter(f, kept, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (score,) = read_scores(path)
    assert score.provenance.prompt_style == "completion" and score.provenance.chat_template == ""
