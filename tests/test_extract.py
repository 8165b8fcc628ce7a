"""Code extraction from instruct replies (harness/extract.py): a corpus of replies to a real
MultiPL-E row in every offered language (tests/instruct_corpus.py) gives the program a person
would run, and through the real executors the right answers pass and the wrong ones fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from instruct_corpus import LANGS, OWN_IMPORT, problem, replies

from harness.errors import UserError
from harness.execute.languages import language_files, parse_language
from harness.extract import FENCED_LANG, FENCED_OTHER, NO_CODE, NO_FENCE, blocks, extract, kind_of
from harness.records import Completions

ORDINARY_FAILURES = {"Exception", "AssertionError", "SyntaxError"}


def test_the_corpus_covers_every_offered_language():
    assert set(LANGS) == set(language_files())


@pytest.mark.parametrize("lang", sorted(LANGS))
def test_each_reply_gives_the_program_a_person_would_run(lang):
    """The kind, whether the function was restated, and a completion with no markdown or prose
    that holds the reply's body once (a restated header is not repeated after the prompt's)."""
    row, spec = problem(lang), LANGS[lang]
    for reply in replies(lang):
        got = extract(reply.text, row, lang)
        assert (got.kind, got.restated) == (reply.kind, reply.restated), f"{lang}: {reply.name}"
        assert "```" not in got.completion and "Let me know" not in got.completion, f"{lang}: {reply.name}"
        if reply.kind == NO_CODE:
            assert got.completion == ""
            continue
        if reply.name.startswith("its own import"):
            assert OWN_IMPORT[lang][0].strip() in got.completion, f"{lang}: the import was not carried"
            continue
        body = spec.right if reply.passes else spec.wrong
        longest = max((line.strip() for line in body.splitlines()), key=len)
        assert got.completion.count(longest) == 1, f"{lang}: {reply.name}: {got.completion!r}"
        assert "add(2, 3)" not in got.completion  # the example block and usage stay out


def test_blocks_markdown_rules():
    reply = "a\n~~~ruby\nputs 1\n~~~\n````python\n```\nx = 1\n````\n```\nlast"
    found = blocks(reply)
    assert [(b.tag, b.code, b.closed) for b in found] == [
        ("ruby", "puts 1\n", True),
        ("python", "```\nx = 1\n", True),
        ("", "last", False),
    ]


def test_kinds_prefer_the_rows_language():
    reply = "```bash\npip install x\n```\n```python\ndef f():\n    return 1\n```"
    assert kind_of(reply, "py") == FENCED_LANG
    assert kind_of(reply, "rb") == FENCED_OTHER
    assert kind_of("def f(): pass", "py") == NO_FENCE
    assert kind_of("```python\n\n```", "py") == NO_CODE


def test_a_bad_extract_pattern_is_one_line_naming_the_field():
    data = {
        "key": "xx",
        "name": "X",
        "file": "m.x",
        "corpus_dir": "x",
        "extensions": [".x"],
        "steps": [{"argv": ["x"], "timeout_s": 1}],
        "status": [{"when": {}, "status": "OK"}],
        "canary": {"good": "", "bad": ""},
        "extract": {"header": "def ({name}"},
    }
    with pytest.raises(ValueError, match=r"languages/xx.toml.extract: .*header is not a regular expression"):
        parse_language(data, "languages/xx.toml")
    data["extract"] = {"header": "def f"}
    with pytest.raises(ValueError, match=r"header must hold \{name\}"):
        parse_language(data, "languages/xx.toml")
    data["extract"] = {"fence": ["x"]}
    with pytest.raises(ValueError, match=r"unknown extract keys \['fence'\]"):
        parse_language(data, "languages/xx.toml")


def test_an_unknown_language_is_a_user_error():
    with pytest.raises(UserError):
        extract("x", problem("py"), "klingon")


@pytest.mark.docker
@pytest.mark.slow
def test_the_corpus_through_the_real_executors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every language's corpus as one completions file each, executed in one call (distinct
    programs run once): the right answers are OK, the wrong ones and "no code" fail with an
    ordinary status."""
    from test_execute_support import offered_language

    from harness.execute import execute_paths
    from harness.files import read_results

    monkeypatch.setenv("FLORA_EVAL_CACHE", str(tmp_path / "exec.sqlite"))
    paths, expected = [], {}
    for lang in sorted(LANGS):
        offered_language(lang)
        row, corpus = problem(lang), replies(lang)
        record = Completions(
            name=row.name,
            language=row.language,
            temperature=0.0,
            top_p=1.0,
            max_tokens=0,
            prompt=row.prompt,
            tests=row.tests,
            stop_tokens=row.stop_tokens,
            completions=tuple(extract(r.text, row, lang).completion for r in corpus),
            replies=tuple(r.text for r in corpus),
        )
        path = tmp_path / "in" / f"{lang}-{row.name}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(record.to_json()))
        paths.append(path)
        expected[lang] = corpus
    outs = execute_paths(paths, jobs=2, out_dir=tmp_path / "out")
    wrong = []
    for lang, out in zip(sorted(LANGS), outs, strict=True):
        for reply, result in zip(expected[lang], read_results(out).results, strict=True):
            ok = result.passed if reply.passes else (not result.passed and result.status in ORDINARY_FAILURES)
            if not ok:
                wrong.append(f"{lang}: {reply.name}: {result.status} {result.stderr[-300:]!r}")
    assert not wrong, "\n".join(wrong)
