"""Code from an instruction-tuned model's reply, fitted after the MultiPL-E prompt.

    reply ──► the code: the first fenced block in the row's language, else the first fenced
              block, else the whole reply (an unterminated fence runs to the end)
          ──► the completion: what follows the prompt so that prompt + completion + tests
              is the program the model wrote

A reply restates the function (its signature, or the whole prompt with imports) or gives
only the body. A restated function is cut at its header (the language's `header` pattern,
with the entry point's name): what follows the header, up to the line that ends the
function, is the completion; the closing line stays out when the row's tests supply it.
A body given alone is indented and closed as the language needs. All of this is data in
each language's `[extract]` table (languages/py.toml documents the keys); nothing here
branches on a language.

The kind of each extraction (`FENCED_LANG`, `FENCED_OTHER`, `NO_FENCE`, `NO_CODE`) is a pure
function of the reply, so the report derives it from the stored replies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.execute.languages import ExtractRules, load_language
from harness.records import Problem

FENCED_LANG = "fenced in the language"
FENCED_OTHER = "fenced other"
NO_FENCE = "no fence"
NO_CODE = "no code"
KINDS = (FENCED_LANG, FENCED_OTHER, NO_FENCE, NO_CODE)
NAME = r"[A-Za-z_][\w?!'-]*"  # a MultiPL-E entry point's name (Racket's may hold - and ?)
FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)[^\n]*$", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    tag: str  # the info string's first word, case-folded ("" when untagged)
    code: str
    closed: bool  # False: the reply ended inside it (cut at max tokens)


@dataclass(frozen=True)
class Extraction:
    """What was taken from one reply: the completion (appended to the prompt, as MultiPL-E
    does), the code it came from, the kind, and whether the reply restated the function."""

    completion: str
    code: str
    kind: str
    restated: bool = False


def extract(reply: str, problem: Problem, lang: str) -> Extraction:
    """The completion of `problem` (a row of language `lang`, a key or alias) in `reply`."""
    language = load_language(lang)
    rules = language.extract
    code, kind = find_code(reply, fence_tags(language.key, language.aliases, rules))
    if kind == NO_CODE:
        return Extraction("", "", kind)
    completion, restated = fit(code, problem.prompt, rules)
    return Extraction(completion, code, kind, restated)


def kind_of(reply: str, lang: str) -> str:
    """The extraction kind of a reply (what the report counts), without fitting it."""
    language = load_language(lang)
    return find_code(reply, fence_tags(language.key, language.aliases, language.extract))[1]


def fence_tags(key: str, aliases: tuple[str, ...], rules: ExtractRules) -> frozenset[str]:
    return frozenset(t.casefold() for t in (*rules.fences, key, *aliases))


def blocks(reply: str) -> list[Block]:
    """The fenced blocks of a markdown reply, in order; a fence closes on a line of the same
    character at least as long, with no info string."""
    found: list[Block] = []
    position = 0
    while (opening := FENCE.search(reply, position)) is not None:
        marker, tag = opening.group(1), opening.group(2).casefold()
        start = opening.end() + 1
        closing = re.compile(rf"^[ \t]{{0,3}}{re.escape(marker[0])}{{{len(marker)},}}[ \t]*$", re.MULTILINE)
        end = closing.search(reply, start) if start <= len(reply) else None
        if end is None:
            found.append(Block(tag, reply[start:], False))
            break
        found.append(Block(tag, reply[start:end.start()], True))
        position = end.end()
    return found


def find_code(reply: str, tags: frozenset[str]) -> tuple[str, str]:
    """(code, kind): the first block tagged in the language, else the first block, else the
    whole reply; blank code is NO_CODE."""
    found = blocks(reply)
    ours = [b for b in found if b.tag in tags]
    if ours:
        code, kind = ours[0].code, FENCED_LANG
    elif found:
        code, kind = found[0].code, FENCED_OTHER
    else:
        code, kind = reply, NO_FENCE
    if not code.strip():
        return "", NO_CODE
    return code, kind


def entry_name(prompt: str, rules: ExtractRules) -> str | None:
    """The name of the function the prompt leaves open: its last header."""
    if not rules.header:
        return None
    pattern = re.compile(rules.header.replace("{name}", f"(?P<name>{NAME})"))
    names = [m.group("name") for m in pattern.finditer(prompt)]
    return names[-1] if names else None


def fit(code: str, prompt: str, rules: ExtractRules) -> tuple[str, bool]:
    """(completion, restated): `code` as the text that follows `prompt`."""
    name = entry_name(prompt, rules)
    header = None
    if name is not None:
        header = re.compile(rules.header.replace("{name}", re.escape(name))).search(code)
    if header is None:
        return _body(code, rules), False
    indent = _width(code[code.rfind("\n", 0, header.start()) + 1:])
    rest = code[header.end():]
    if rules.skip and (skipped := re.match(rules.skip, rest)):
        rest = rest[skipped.end():]
    body, closing = _split_at_end(rest, indent, rules, name)
    body = _carry_imports(code[:header.start()], prompt, body, rules)
    completion = body + ("" if rules.tests_close else closing)
    if rules.after:
        completion = completion.rstrip() + "\n" + rules.after.lstrip("\n") + "\n"
    return completion, True


def _carry_imports(before: str, prompt: str, body: str, rules: ExtractRules) -> str:
    """The reply's own imports (lines before the header matching `imports` that the prompt
    lacks) moved to the top of the body, in languages where a function body may hold them."""
    if not rules.imports:
        return body
    pattern = re.compile(rules.imports)
    held = {line.strip() for line in prompt.splitlines()}
    carried = [line.strip() for line in before.splitlines()
               if pattern.match(line.strip()) and line.strip() not in held]
    first, newline, rest = body.partition("\n")
    if not carried or not newline:
        return body
    lead = next((line[:len(line) - len(line.lstrip())] for line in rest.splitlines() if line.strip()), "    ")
    return first + newline + "".join(f"{lead}{line}\n" for line in carried) + rest


def _split_at_end(rest: str, indent: int, rules: ExtractRules, name: str) -> tuple[str, str]:
    """(body, closing line) of the text after a header: the function ends at the first
    non-blank line indented no deeper than the header that does not continue it; that line
    is the closing line when it matches `closing`."""
    closing = re.compile(rules.closing.replace("{name}", re.escape(name))) if rules.closing else None
    continues = re.compile(rules.continues) if rules.continues else None
    lines = rest.splitlines(keepends=True)
    offset = len(lines[0]) if lines else 0
    for line in lines[1:]:
        stripped = line.strip()
        if stripped and _width(line) <= indent:
            if continues is not None and continues.match(stripped):
                offset += len(line)
                continue
            if closing is not None and closing.match(stripped):
                return rest[:offset], line if line.endswith("\n") else line + "\n"
            return rest[:offset], ""
        offset += len(line)
    return rest, ""


def _body(code: str, rules: ExtractRules) -> str:
    """A body given alone: indented when it is not, opened and closed as the prompt needs."""
    lines = code.strip("\n").splitlines()
    first = next((line for line in lines if line.strip()), "")
    if rules.body_indent and _width(first) == 0:
        lines = [rules.body_indent + line if line.strip() else line for line in lines]
    body = "\n".join(lines) + "\n"
    close = "" if rules.tests_close else rules.body_close.lstrip("\n")
    return rules.body_open + body + (close + "\n" if close else "")


def _width(text: str) -> int:
    """The indentation of a line (a tab counts as 4 columns)."""
    prefix = text[:len(text) - len(text.lstrip(" \t"))]
    return len(prefix.expandtabs(4))
