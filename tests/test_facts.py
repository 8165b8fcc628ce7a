"""One home for each fact: every language's facts are in its TOML file, every method's on its
class, and the names users type (`--lang ruby`, `--adapter ruby-r1`) find them."""

from __future__ import annotations

import pytest

from harness.adapters import FLoRAConfig, IA3Config, init_adapter, save_adapter
from harness.adapters.files import adapter_languages, load_adapter, resolve_adapter
from harness.adapters.methods import BY_NAME, default_lrs, method, method_label, method_names
from harness.api import resolve_langs
from harness.cli import build_parser
from harness.errors import UserError
from harness.execute.languages import all_languages, display_name, load_language
from harness.models import build_tiny


# -- languages ----------------------------------------------------------------------------
@pytest.mark.parametrize("lang", all_languages(), ids=lambda lang: lang.key)
def test_every_language_states_its_facts(lang):
    assert lang.name.strip() == lang.name != ""
    assert lang.corpus_dir and "/" not in lang.corpus_dir
    assert lang.extensions and all(e.startswith(".") for e in lang.extensions)
    assert display_name(lang.key) == lang.name


def test_names_are_unique_across_languages():
    owners: dict[str, str] = {}
    for lang in all_languages():
        for name in lang.names:
            assert owners.setdefault(name.casefold(), lang.key) == lang.key, f"{name} names two languages"


@pytest.mark.parametrize("name, key", [("ruby", "rb"), ("Ruby", "rb"), ("rust", "rs"), ("racket", "rkt"),
                                       ("perl", "pl"), ("dlang", "d"), ("humaneval_to_dlang.py", "d"),
                                       ("javascript", "js"), ("C++", "cpp"), ("python", "py")])
def test_a_language_is_found_by_any_of_its_names(name, key):
    assert load_language(name).key == key


def test_lang_ruby_means_rb_on_the_command_line():
    from harness.cli import evaluation_from

    args = build_parser().parse_args(["--lang", "ruby", "--lang", "rb", "--lang", "Perl"])
    assert resolve_langs(evaluation_from(args).langs, []) == ["rb", "pl"]


def test_an_unknown_language_suggests_the_closest_names():
    with pytest.raises(UserError, match=r"unknown language 'rubby'.*; did you mean ruby\?$") as info:
        load_language("rubby")
    assert "\n" not in str(info.value)


def test_display_names_are_the_tomls():
    assert [display_name(k) for k in ("d", "pl", "rb", "rs", "rkt", "swift")] == \
        ["D", "Perl", "Ruby", "Rust", "Racket", "Swift"]
    assert display_name("klingon") == "klingon"


# -- methods ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", method_names())
def test_every_method_states_its_facts(name):
    bank = method(name)
    assert bank.method == name and method(bank.peft_type) is bank
    assert bank.label and method_label(name) == bank.label == method_label(bank.peft_type)
    assert 0 < bank.default_lr < 1 and default_lrs()[name] == bank.default_lr
    assert isinstance(bank.has_rank, bool)


def test_method_labels_and_facts():
    assert [method_label(m) for m in ("flora", "lora", "ia3", "base", "dora")] == \
        ["FLoRA", "LoRA", "IA3", "base", "dora"]
    assert [BY_NAME[m].has_rank for m in ("flora", "lora", "ia3")] == [True, True, False]
    with pytest.raises(UserError, match=r"unknown adapter method 'dora' \(known: flora, lora, ia3\); did"):
        method("dora")
    with pytest.raises(UserError, match=r"did you mean flora, lora\?$"):
        method("flor")


# -- adapter names and their languages ----------------------------------------------------
@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """An adapters directory with what `train` writes: rb-r1-flora and pl-ia3 (language
    recorded), and a PEFT-like adapter with no language."""
    model, root = build_tiny()[0], tmp_path_factory.mktemp("adapters")
    for name, config, language in (("rb-r1-flora", FLoRAConfig(r=1), "rb"), ("pl-ia3", IA3Config(), "pl"),
                                   ("plain", FLoRAConfig(r=1), None)):
        meta = {"language": language} if language else {}
        save_adapter(init_adapter(model, config, name=name), root / name, metadata=meta)
    return root


def test_a_language_alias_finds_the_trained_adapter(lib):
    assert resolve_adapter("ruby-r1", lib) == ((lib / "rb-r1-flora").resolve(), "rb-r1-flora")
    assert resolve_adapter("ruby-r1-flora", lib)[1] == "rb-r1-flora"
    assert resolve_adapter("perl-ia3", lib)[1] == "pl-ia3"


def test_a_near_miss_lists_the_closest_adapters(lib):
    with pytest.raises(UserError) as info:
        resolve_adapter("rb-r1-flor", lib)
    message = str(info.value)
    assert message.startswith("adapter 'rb-r1-flor' not found") and "\n" not in message
    assert message.endswith("; did you mean rb-r1-flora?")
    with pytest.raises(UserError, match=r"did you mean rb-r1-flora\?$"):
        resolve_adapter("ruby-r1-flor", lib)  # compared in its key spelling
    with pytest.raises(UserError, match=r"did you mean rb-r1-flora\?$"):
        resolve_adapter("ruby-r2", lib)  # and without the method


def test_adapters_say_which_languages_they_were_trained_on(lib):
    def langs(*names):
        return adapter_languages([load_adapter(name, adapters_dir=lib) for name in names])

    assert langs("ruby-r1", "pl-ia3", "rb-r1-flora") == ["rb", "pl"]
    assert langs("plain") == []


def test_without_lang_a_run_evaluates_its_adapters_languages(lib):
    def langs(*names):
        return resolve_langs((), adapter_languages([load_adapter(name, adapters_dir=lib) for name in names]))

    assert langs("ruby-r1") == ["rb"]
    assert langs("pl-ia3", "ruby-r1") == ["pl", "rb"]
    assert langs("plain") == ["py"] and langs() == ["py"]
    assert resolve_langs(("ruby", "rb", "Perl"), ["py"]) == ["rb", "pl"]  # --lang wins, any name
