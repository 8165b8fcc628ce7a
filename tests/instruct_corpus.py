"""A corpus of instruct replies to a real MultiPL-E row (HumanEval_53_add) in every offered
language, written the way instruction-tuned models answer: prose around the code, several
blocks, untagged blocks or another language's tag, the signature or the whole prompt restated
(imports included), only the body, a fence cut at max_tokens, no code at all. Each language
gives the function as a person writes it (`function(body)`), what follows the prompt when the
whole prompt is restated (`after_prompt(body)`), and a right and a wrong body with a blank line
inside (MultiPL-E's "\\n\\n" stop tokens would cut there)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.records import Problem

MULTIPLE = Path(__file__).resolve().parent.parent.parent / "shared" / "multipl-e"
PROBLEM = "HumanEval_53_add"


@dataclass(frozen=True)
class Lang:
    tag: str  # the fence tag a model writes
    function: Callable[[str], str]  # the whole function (with what a person puts around it)
    after_prompt: Callable[[str], str]  # what follows the restated prompt
    right: str
    wrong: str
    body_alone: bool = True  # the language has a body that stands alone (Ada's needs `is ... begin`)


def _wrap(head: str, tail: str) -> Callable[[str], str]:
    return lambda body: head + body + tail


LANGS: dict[str, Lang] = {
    "adb": Lang(
        "ada",
        _wrap("   function Add (X : Integer; Y : Integer) return Integer is\n   begin\n", "\n   end Add;\n"),
        _wrap(" is\n   begin\n", "\n   end Add;\n\nend Placeholder;\n"),
        "      return X + Y;",
        "      return X - Y;",
        body_alone=False,
    ),
    "clj": Lang(
        "clojure",
        _wrap('(defn add\n  "Adds x and y."\n  [x y]\n', ")\n"),
        _wrap("\n", ")\n"),
        "  (let [z (+ x y)]\n\n    z)",
        "  (- x y)",
    ),
    "cpp": Lang(
        "cpp",
        _wrap("#include <bits/stdc++.h>\n\nlong add(long x, long y) {\n", "\n}\n"),
        _wrap("", "\n}\n"),
        "    long z = x + y;\n\n    return z;",
        "    return x - y;",
    ),
    "cs": Lang(
        "csharp",
        _wrap(
            "using System;\n\nclass Problem {\n    public static long Add(long x, long y) {\n", "\n    }\n}\n"
        ),
        _wrap("", "\n    }\n}\n"),
        "        long z = x + y;\n\n        return z;",
        "        return x - y;",
    ),
    "d": Lang(
        "d",
        _wrap("long add(long x, long y)\n{\n", "\n}\n"),
        _wrap("{\n", "\n}\n"),
        "    long z = x + y;\n\n    return z;",
        "    return x - y;",
    ),
    "elixir": Lang(
        "elixir",
        _wrap("defmodule HumanEval do\n  def add(x, y) do\n", "\n  end\nend\n"),
        _wrap("\n", "\n  end\nend\n"),
        "    z = x + y\n\n    z",
        "    x - y",
    ),
    "go": Lang(
        "go",
        _wrap("func add(x int, y int) int {\n", "\n}\n"),
        _wrap("", "\n}\n"),
        "    z := x + y\n\n    return z",
        "    return x - y",
    ),
    "hs": Lang(
        "haskell",
        _wrap("add :: Int -> Int -> Int\nadd x y =", "\n"),
        _wrap("", "\n"),
        " z\n  where\n\n    z = x + y",
        " x - y",
    ),
    "java": Lang(
        "java",
        _wrap(
            "import java.util.*;\n\nclass Problem {\n    public static long add(long x, long y) {\n",
            "\n    }\n}\n",
        ),
        _wrap("", "\n    }\n}\n"),
        "        long z = x + y;\n\n        return z;",
        "        return x - y;",
    ),
    "js": Lang(
        "javascript",
        _wrap("function add(x, y) {\n", "\n}\n"),
        _wrap("", "\n}\n"),
        "  const z = x + y;\n\n  return z;",
        "  return x - y;",
    ),
    "lua": Lang(
        "lua",
        _wrap("local function add(x, y)\n", "\nend\n"),
        _wrap("", "\nend\n"),
        "  local z = x + y\n\n  return z",
        "  return x - y",
    ),
    "ml": Lang(
        "ocaml",
        _wrap("let add (x : int) (y : int) : int =\n", "\n"),
        _wrap("\n", "\n"),
        "  let z = x + y in\n\n  z",
        "  x - y",
    ),
    "php": Lang(
        "php",
        _wrap("<?php\nfunction add($x, $y) {\n", "\n}\n"),
        _wrap("", "\n}\n"),
        "    $z = $x + $y;\n\n    return $z;",
        "    return $x - $y;",
    ),
    "pl": Lang(
        "perl",
        _wrap("use strict;\n\nsub add {\n    my ($x, $y) = @_;\n", "\n}\n"),
        _wrap("", "\n}\n"),
        "    my $z = $x + $y;\n\n    return $z;",
        "    return $x - $y;",
    ),
    "py": Lang(
        "python",
        _wrap("from typing import List\n\ndef add(x: int, y: int) -> int:\n", "\n"),
        _wrap("", "\n"),
        "    z = x + y\n\n    return z",
        "    return x - y",
    ),
    "r": Lang(
        "r",
        _wrap("add <- function(x, y) {\n", "\n}\n"),
        _wrap("\n", "\n}\n"),
        "  z <- x + y\n\n  z",
        "  x - y",
    ),
    "rb": Lang(
        "ruby", _wrap("def add(x, y)\n", "\nend\n"), _wrap("", "\nend\n"), "  z = x + y\n\n  z", "  x - y"
    ),
    "rkt": Lang(
        "racket",
        _wrap("#lang racket\n\n(define (add x y)\n", ")\n"),
        _wrap("", ")\n"),
        "  (let ([z (+ x y)])\n\n    z)",
        "  (- x y)",
    ),
    "rs": Lang(
        "rust",
        _wrap("fn add(x: isize, y: isize) -> isize {\n", "\n}\n"),
        _wrap("", "\n}\n"),
        "    let z = x + y;\n\n    z",
        "    x - y",
    ),
    "scala": Lang(
        "scala",
        _wrap("object Problem {\n    def add(x : Long, y : Long) : Long = {\n", "\n    }\n}\n"),
        _wrap("", "\n    }\n}\n"),
        "        val z = x + y\n\n        z",
        "        x - y",
    ),
    "sh": Lang(
        "bash",
        _wrap("#!/bin/bash\n\nadd() {\n", "\n}\n"),
        _wrap("", "\n}\n"),
        '    local z=$(( $1 + $2 ))\n\n    echo "$z"',
        "    echo $(( $1 - $2 ))",
    ),
    "swift": Lang(
        "swift",
        _wrap("func add(x: Int, y: Int) -> Int {\n", "\n}\n"),
        _wrap("", "\n}\n"),
        "    let z = x + y\n\n    return z",
        "    return x - y",
    ),
    "ts": Lang(
        "typescript",
        _wrap("function add(x: number, y: number): number {\n", "\n}\n"),
        _wrap("", "\n}\n"),
        "  const z = x + y;\n\n  return z;",
        "  return x - y;",
    ),
}


# A reply that brings its own import (which the prompt lacks) and needs it, in languages whose
# `[extract] imports` lets the import move into the function's body.
OWN_IMPORT = {
    "py": ("import math\n\n", "    return int(math.fsum([x, y]))"),
    "rs": ("use std::ops::Add;\n\n", "    Add::add(x, y)"),
    "pl": ("use List::Util qw(sum);\n\n", "    return sum($x, $y);"),
    "rb": ("require 'set'\n\n", "  Set[x, y].sum + (x == y ? x : 0)"),
    "cpp": ("using namespace std;\n\n", "    vector<long> v{x, y};\n    return v[0] + v[1];"),
}


def problem(lang: str) -> Problem:
    with (MULTIPLE / "humaneval" / f"humaneval-{lang}.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["name"] == PROBLEM:
                return Problem.from_row(row)
    raise LookupError(f"{PROBLEM} not in humaneval-{lang}")


@dataclass(frozen=True)
class Reply:
    name: str
    text: str
    kind: str  # the extraction kind it must give
    passes: bool  # whether the program it gives must pass the row's tests
    restated: bool


def replies(lang: str) -> list[Reply]:
    """The corpus for one language."""
    from harness.extract import FENCED_LANG, FENCED_OTHER, NO_CODE, NO_FENCE

    spec, row = LANGS[lang], problem(lang)
    other = "ruby" if spec.tag != "ruby" else "python"
    out = [
        Reply(
            "prose around a tagged block restating the function",
            f"Sure! Here is the function:\n\n```{spec.tag}\n{spec.function(spec.right)}```\n\n"
            "It adds `x` and `y`. Let me know if you need anything else.",
            FENCED_LANG,
            True,
            True,
        ),
        Reply(
            "several blocks: a text block, the wrong function, an example",
            "First:\n```text\nnothing to install\n```\n"
            f"Then:\n```{spec.tag}\n{spec.function(spec.wrong)}```\n"
            f"Example:\n```{spec.tag}\nadd(2, 3)\n```\n",
            FENCED_LANG,
            False,
            True,
        ),
        Reply(
            "another language's tag", f"```{other}\n{spec.function(spec.right)}```", FENCED_OTHER, True, True
        ),
        Reply(
            "an untagged block restating the whole prompt",
            f"Here is the completed program:\n```\n{row.prompt}{spec.after_prompt(spec.right)}```\nDone.",
            FENCED_OTHER,
            True,
            True,
        ),
        Reply(
            "an unterminated fence at max_tokens",
            f"Here you go:\n\n```{spec.tag}\n{spec.function(spec.right)}",
            FENCED_LANG,
            True,
            True,
        ),
        Reply("no code", "   \n", NO_CODE, False, False),
    ]
    if lang in OWN_IMPORT:
        imports, body = OWN_IMPORT[lang]
        out.append(
            Reply(
                "its own import before the function",
                f"```{spec.tag}\n{imports}{spec.function(body)}```",
                FENCED_LANG,
                True,
                True,
            )
        )
    if spec.body_alone:
        out.append(
            Reply(
                "only the body, no fence",
                textwrap.dedent(spec.right).strip("\n") + "\n",
                NO_FENCE,
                True,
                False,
            )
        )
    return out
