"""Prompt styles: what the model is given for a MultiPL-E row, as data.

    completion  MultiPL-E's: `prompt.strip()`, continued and cut at the row's stop tokens
    instruct    a chat conversation (`conversation`) rendered with the tokenizer's own chat
                template, generation prompt included (`render`); a sample ends at the
                template's end of turn or end of text, and its code is taken from the reply
                (harness/extract.py)

Surface (in-process generation uses all of it; a chat endpoint needs the first three):

    style = style_for("instruct", tokenizer, model_name)   # Style(name, template_hash); checks
    messages = conversation(problem, lang)                   # [{"role", "content"}, ...]
    text = render(tokenizer, messages)                       # the model's template, generation prompt
    ids = prompt_ids(problem, lang, style, tokenizer)        # what the engine prefills
    ends = end_of_turn_ids(tokenizer)                        # tokens that end a reply

The replies become completions in `harness.extract.extract(reply, problem, lang)`.

The instruction follows MultiPL-E's chat mode (its chat-templates/default.yaml): the same
system message and request, with the prompt in a fenced block; it also names the language
and tags the fence with it (docs/instruct.md lists every difference).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from harness.errors import UserError
from harness.execute.languages import load_language
from harness.records import Problem

COMPLETION = "completion"
INSTRUCT = "instruct"
STYLES = (COMPLETION, INSTRUCT)
SYSTEM = "You are a helpful programming assistant designed to complete code snippets."
REQUEST = "Please generate {name} code to complete the following problem:\n```{tag}\n{prompt}\n```\n"
REPLY_MARK = "\x02flora-eval reply\x03"  # a reply in a rendered conversation, to find what follows it


@dataclass(frozen=True)
class Style:
    """A run's prompt style and, for `instruct`, the hash of the chat template that renders it."""

    name: str = COMPLETION
    template_hash: str = ""

    @property
    def chat(self) -> bool:
        return self.name == INSTRUCT


COMPLETION_STYLE = Style()


def check_style(name: str) -> str:
    if name not in STYLES:
        raise UserError(f"unknown prompt style {name!r}; use one of: {', '.join(STYLES)}")
    return name


def conversation(problem: Problem, lang: str) -> list[dict[str, str]]:
    """The chat messages of one row: MultiPL-E's system message and a request to complete the
    function in the row's language, the prompt (stripped, as MultiPL-E sends it) fenced."""
    language = load_language(lang)
    tag = (language.extract.fences or (language.key,))[0]
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": REQUEST.format(name=language.name, tag=tag,
                                                       prompt=problem.prompt.strip())}]


def template_of(tokenizer) -> str:
    """The tokenizer's chat template as text ("" when it has none)."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return ""
    return template if isinstance(template, str) else json.dumps(template, sort_keys=True)


def template_hash(tokenizer) -> str:
    """"sha256:<16 hex>" of the exact chat template: it changes whenever the template does."""
    text = template_of(tokenizer)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16] if text else ""


def style_for(name: str, tokenizer, model: str) -> Style:
    """The run's style; `instruct` with a model that has no chat template stops here."""
    check_style(name)
    if name == COMPLETION:
        return COMPLETION_STYLE
    if not template_of(tokenizer):
        raise UserError(f"model {model!r} has no chat template, so it cannot be prompted with "
                        "--prompt-style instruct; use --prompt-style completion, or a chat model")
    return Style(INSTRUCT, template_hash(tokenizer))


def render(tokenizer, messages: list[dict[str, str]]) -> str:
    """The conversation as the model's chat template writes it, ending with the generation
    prompt. A template that refuses a system message (Gemma's, Mistral's older ones) gets it
    at the top of the first user message instead."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # jinja2's TemplateError from raise_exception(), and kin
        if messages[0]["role"] != "system":
            raise UserError(f"the chat template refused the conversation ({exc})") from None
    system, first, *rest = messages
    merged = {"role": first["role"], "content": system["content"] + "\n\n" + first["content"]}
    return tokenizer.apply_chat_template([merged, *rest], tokenize=False, add_generation_prompt=True)


def prompt_text(problem: Problem, lang: str, style: Style, tokenizer) -> str:
    """The text the model continues for `problem` under `style`."""
    if not style.chat:
        return problem.prompt.strip()
    return render(tokenizer, conversation(problem, lang))


def prompt_ids(problem: Problem, lang: str, style: Style, tokenizer) -> list[int]:
    """The token ids of `prompt_text`; a rendered template already holds its special tokens
    (a BOS among them), so none are added again."""
    if not style.chat:
        return tokenizer(problem.prompt.strip())["input_ids"]
    return tokenizer(prompt_text(problem, lang, style, tokenizer), add_special_tokens=False)["input_ids"]


def end_of_turn_ids(tokenizer) -> tuple[int, ...]:
    """The token ids that end an assistant turn under the tokenizer's chat template: the
    special token the template writes right after a reply (`<|im_end|>`, `<|eot_id|>`,
    `<end_of_turn>`, ...), and the end of text."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": REPLY_MARK}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template that takes no assistant turn: the end of text only
        return tuple(sorted(ids))
    after = text[text.rfind(REPLY_MARK) + len(REPLY_MARK):] if REPLY_MARK in text else ""
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    special |= {i for i, t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items() if t.special}
    follow = tokenizer(after, add_special_tokens=False)["input_ids"] if after.strip() else []
    if follow and follow[0] in special:
        ids.add(follow[0])
    return tuple(sorted(ids))
